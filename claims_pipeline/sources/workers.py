"""Worker processes that turn the rows an adapter reads into Arrow batches beside the extract
step's own process (``python -m claims_pipeline.sources.workers``), so that the rows of one
cursor are converted on more than one core while the step goes on reading.

The step reads every row from its one connection (one snapshot, in order: what the day
fingerprints rely on), cuts them into blocks of whole encounters and hands each block, as the
driver's plain values, to the next free worker; the worker converts it leniently
(:meth:`~claims_pipeline.sources.base.LenientRows.block`) and builds the adapter's batch; the
step writes the batches in the order of the blocks. Rows and batches cross a pipe between the
step and its own child, pickled (over :mod:`multiprocessing.connection`), never a file. A worker's
stderr is discarded (a traceback could quote a row) and its stdout carries only answers; an
error comes back as its type and a message without values (:func:`describe_error`).
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import queue
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection as Pipe
from typing import Any

import pyarrow as pa

from claims_pipeline.errors import SourceError
from claims_pipeline.phi import describe_error
from claims_pipeline.sources.base import BuildBatch, LenientRows, convert_block
from claims_pipeline.subprocesses import exit_with_parent, start_module

_MODULE = "claims_pipeline.sources.workers"


class BlockWorkers:
    """``processes`` worker processes, each fed by a thread of its own with the next block
    waiting; :meth:`batches` gives the batches back in the order of the blocks."""

    start = staticmethod(start_module)

    def __init__(
        self, processes: int, lenient: LenientRows, keys: Sequence[str], build: BuildBatch
    ):
        self.processes = processes
        self.setup = (lenient, list(keys), build)
        self.waiting: queue.SimpleQueue[tuple[list[tuple[Any, ...]], Future[Any]] | None]
        self.waiting = queue.SimpleQueue()
        self.started: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> BlockWorkers:
        try:
            for _ in range(self.processes):
                process = self.start(_MODULE, text=False)
                self.started.append(process)
                thread = threading.Thread(
                    target=self._serve, args=(process,), name="extract-worker", daemon=True
                )
                thread.start()
                self.threads.append(thread)
        except BaseException:
            self.__exit__()
            raise
        return self

    def batches(self, blocks: Iterable[list[tuple[Any, ...]]]) -> Iterator[pa.RecordBatch]:
        """The batch of each block, in order. At most two blocks a worker are read ahead of
        the batch the caller is writing (every worker busy, one more waiting for each)."""
        pending: deque[Future[pa.RecordBatch]] = deque()
        for rows in blocks:
            pending.append(Future())
            self.waiting.put((rows, pending[-1]))
            while pending and (len(pending) > 2 * self.processes or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _serve(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        requests = Pipe(os.dup(process.stdin.fileno()), readable=False)
        answers = Pipe(os.dup(process.stdout.fileno()), writable=False)
        gone = False
        try:
            try:
                requests.send(self.setup)
            except OSError:
                gone = True
            while (item := self.waiting.get()) is not None:
                rows, future = item
                try:
                    if gone:
                        raise EOFError
                    requests.send_bytes(_pack(rows))
                    kind, value = answers.recv()
                except (EOFError, OSError):  # the process is gone: so is every block after
                    gone = True
                    future.set_exception(
                        SourceError(
                            f"An extract worker process ended (exit code {process.poll()}) "
                            "while converting the EHR rows."
                        )
                    )
                    continue
                if kind == "batch":
                    future.set_result(value)
                else:
                    future.set_exception(_error(value))
        finally:
            requests.close()
            answers.close()

    def __exit__(self, *exc: object) -> None:
        for _ in self.threads:
            self.waiting.put(None)
        if exc and exc[0] is not None:
            for process in self.started:
                process.kill()  # unblocks a thread waiting on its answer
        for thread in self.threads:
            thread.join()
        for process in self.started:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()  # no more blocks: the worker exits and frees its memory
            process.wait()


def _pack(rows: list[tuple[Any, ...]]) -> memoryview:
    """A block pickled without the pickler's memo (flat rows of driver values, nothing that
    refers to itself): the step's pickling of OpenEMR rows took a sixth of the CPU that
    ``Connection.send`` took, in fewer bytes."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(rows)
    return buffer.getbuffer()


def _error(answer: tuple[str, str]) -> Exception:
    """A worker's error as the builtin exception it was (so that the step reports it as it
    would have reported its own), else a RuntimeError."""
    kind, message = answer
    error_type = getattr(builtins, kind, None)
    if isinstance(error_type, type) and issubclass(error_type, Exception):
        return error_type(message)
    return RuntimeError(f"{kind}: {message}")


def _serve() -> None:
    """A worker: the setup, then blocks of rows on stdin; a batch or an error for each on
    stdout, until stdin closes."""
    exit_with_parent()
    requests = Pipe(os.dup(0), writable=False)
    answers = Pipe(os.dup(1), readable=False)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a stray print must not reach the answers
    lenient, keys, build = requests.recv()
    while True:
        try:
            rows = requests.recv()
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("batch", convert_block(lenient, keys, build, rows))
        except Exception as error:  # noqa: BLE001 - every error goes back to the step
            answer = ("error", (type(error).__name__, describe_error(error).partition(": ")[2]))
        del rows
        answers.send(answer)


if __name__ == "__main__":
    _serve()
