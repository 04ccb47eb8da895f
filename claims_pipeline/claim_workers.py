"""Worker processes that build claims beside the claims step's own process
(``python -m claims_pipeline.claim_workers``), so that the step uses more than one core.

A worker builds one day, or one part of a day, at a time (:class:`~claims_pipeline.claim_days.
DayPart`): a whole day straight into its files, as the step would; a part into two scratch
files beside the day's (named like an interrupted write, so the purge job removes any that a
killed step leaves), which the step then writes into the day's files in order and deletes.
The step and its workers speak JSON lines: the request names the store, the rows and the
rules' settings; the answer carries figures, payer and provider totals, claim identities and
digests, never a patient's data. A worker's stderr is discarded (a traceback could quote a
row); an error comes back as its type and a message without values.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import suppress
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np

from claims_pipeline import errors
from claims_pipeline.claim_days import (
    BillingMix,
    DayPart,
    PartClaims,
    build_day,
    build_part,
    parts_overlap,
)
from claims_pipeline.names import CLAIMS, ENCOUNTERS, REJECTIONS
from claims_pipeline.phi import describe_error
from claims_pipeline.rules import AmountLimits
from claims_pipeline.storage import CLAIM_SCHEMA, REJECTION_SCHEMA, PartitionStore
from claims_pipeline.subprocesses import exit_with_parent, start_module

_MODULE = "claims_pipeline.claim_workers"


def build_in_workers(
    store: PartitionStore,
    plan: list[DayPart],
    today: date,
    limits: AmountLimits,
    processes: int,
) -> Iterator[tuple[str, list[PartClaims]]]:
    """Each day of ``plan`` (parts of a day consecutive, days in order) with what its parts
    found, built by ``processes`` workers while the days before are finished here. A day whose
    parts share a claim key or an encounter is built again here, in order."""
    scratch = {
        part: (
            store.scratch_path(CLAIMS, f"{part.day}.{part.start}"),
            store.scratch_path(REJECTIONS, f"{part.day}.{part.start}"),
        )
        for part in plan
        if not part.whole
    }
    requests = [_request(store, part, today, limits, scratch.get(part)) for part in plan]
    try:
        with _Workers(min(processes, len(plan))) as workers:
            day_parts: list[tuple[DayPart, PartClaims]] = []
            for part, answer in zip(plan, workers.ask_each(requests), strict=True):
                day_parts.append((part, _load(answer)))
                if part.stop is not None:  # the day goes on in the next part
                    continue
                yield part.day, _finish_day(store, day_parts, scratch, today, limits)
                day_parts = []
    finally:
        for paths in scratch.values():
            for path in paths:
                store.delete_scratch(path)


def _finish_day(
    store: PartitionStore,
    day_parts: list[tuple[DayPart, PartClaims]],
    scratch: dict[DayPart, tuple[str, str]],
    today: date,
    limits: AmountLimits,
) -> list[PartClaims]:
    built = [found for _, found in day_parts]
    if len(day_parts) == 1 and day_parts[0][0].whole:
        return built  # the worker wrote the day's files
    day = day_parts[0][0].day
    if parts_overlap(built):
        return [build_day(store, day, today, limits)]
    facts = store.facts(ENCOUNTERS, day)
    with (
        store.writer(CLAIMS, day, CLAIM_SCHEMA, facts) as claims_file,
        store.writer(REJECTIONS, day, REJECTION_SCHEMA, facts) as rejections_file,
    ):
        for part, _ in day_parts:
            claims_path, rejections_path = scratch[part]
            for batch in store.read_scratch(claims_path):
                claims_file.write_batch(batch)
            for batch in store.read_scratch(rejections_path):
                rejections_file.write_batch(batch)
    for part, _ in day_parts:
        for path in scratch[part]:
            store.delete_scratch(path)
    return built


class _Workers:
    """``processes`` worker processes, each served by a thread of its own that hands it the
    next request waiting, one at a time, and lets it exit as soon as none is left (a worker
    holds a few hundred MiB); answers come back in the order of the requests."""

    def __init__(self, processes: int):
        self.processes = processes
        self.started: list[subprocess.Popen[str]] = []
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    def __enter__(self) -> _Workers:
        try:
            for _ in range(self.processes):
                self.started.append(start_module(_MODULE))
        except BaseException:
            self.__exit__()
            raise
        return self

    def ask_each(self, requests: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        waiting: queue.SimpleQueue[tuple[dict[str, Any], Future[dict[str, Any]]]]
        waiting = queue.SimpleQueue()
        answers: list[Future[dict[str, Any]]] = []
        for request in requests:
            answers.append(Future())
            waiting.put((request, answers[-1]))
        for process in self.started:
            thread = threading.Thread(
                target=self._serve, args=(process, waiting), name="claims-worker", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        for answer in answers:
            yield answer.result()

    def _serve(
        self,
        process: subprocess.Popen[str],
        waiting: queue.SimpleQueue[tuple[dict[str, Any], Future[dict[str, Any]]]],
    ) -> None:
        assert process.stdin is not None and process.stdout is not None
        try:
            while not self.stopping.is_set():
                try:
                    request, answer = waiting.get_nowait()
                except queue.Empty:
                    break
                try:
                    answer.set_result(_ask(process, request))
                except BaseException as error:
                    answer.set_exception(error)
        finally:
            with suppress(OSError):  # no more work: the worker exits and frees its memory
                process.stdin.close()
            process.wait()

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for process in self.started:
            if process.poll() is None and exc and exc[0] is not None:
                process.kill()  # unblocks a thread waiting on its answer
        for thread in self.threads:
            thread.join()
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def _ask(process: subprocess.Popen[str], request: dict[str, Any]) -> dict[str, Any]:
    """One request to a worker, and its answer (an error in it raised here)."""
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
    except (OSError, ValueError):  # the process is gone: its pipes are broken or closed
        line = ""
    if not line:
        raise errors.ClaimsPipelineError(
            f"A claims worker process ended (exit code {process.poll()}) while building "
            f"the claims of {request['day']}."
        )
    answer: dict[str, Any] = json.loads(line)
    if "error" in answer:
        kind = getattr(errors, str(answer.get("kind")), None)
        if isinstance(kind, type) and issubclass(kind, errors.ClaimsPipelineError):
            raise kind(answer["error"])
        raise errors.ClaimsPipelineError(
            f"Building the claims of {request['day']} failed: {answer['error']}"
        )
    return answer


def _request(
    store: PartitionStore,
    part: DayPart,
    today: date,
    limits: AmountLimits,
    scratch: tuple[str, str] | None,
) -> dict[str, Any]:
    return {
        "store": store.location,
        "day": part.day,
        "start": part.start,
        "stop": part.stop,
        "today": today.isoformat(),
        "max_line": str(limits.max_line),
        "max_claim": str(limits.max_claim),
        "scratch": scratch,
    }


def _build(request: dict[str, Any]) -> PartClaims:
    """What a worker does for one request."""
    store = PartitionStore(request["store"])
    part = DayPart(request["day"], request["start"], request["stop"])
    today = date.fromisoformat(request["today"])
    limits = AmountLimits(Decimal(request["max_line"]), Decimal(request["max_claim"]))
    if request["scratch"] is None:
        return build_day(store, part.day, today, limits)
    claims_path, rejections_path = request["scratch"]
    with (
        store.scratch_writer(claims_path, CLAIM_SCHEMA) as claims_file,
        store.scratch_writer(rejections_path, REJECTION_SCHEMA) as rejections_file,
    ):
        return build_part(store, part, today, limits, claims_file, rejections_file)


def _dump(built: PartClaims) -> dict[str, Any]:
    figures = built.figures
    return {
        "claims": figures.claims,
        "rejected": figures.rejected,
        "billed": str(figures.billed),
        "reasons": list(figures.reasons.items()),
        "payers": list(figures.payers.items()),
        "preview": figures.preview,
        "by_payer": _dump_mixes(built.by_payer),
        "by_provider": _dump_mixes(built.by_provider),
        "identities": base64.b64encode(built.identities.tobytes()).decode(),
        "met": None if built.met is None else base64.b64encode(built.met.tobytes()).decode(),
    }


def _load(answer: dict[str, Any]) -> PartClaims:
    built = PartClaims()
    figures = built.figures
    figures.claims, figures.rejected = answer["claims"], answer["rejected"]
    figures.billed = Decimal(answer["billed"])
    figures.reasons = Counter(dict(answer["reasons"]))
    figures.payers = Counter(dict(answer["payers"]))
    figures.preview = answer["preview"]
    for name in ("by_payer", "by_provider"):
        mixes = getattr(built, name)
        for key, claims, billed, rejected, held_back in answer[name]:
            mix = mixes[key]
            mix.claims, mix.billed = claims, Decimal(billed)
            mix.rejected, mix.held_back = rejected, Decimal(held_back)
    built.identities.frombytes(base64.b64decode(answer["identities"]))
    if answer["met"] is not None:
        built.met = np.frombuffer(base64.b64decode(answer["met"]), dtype=np.uint64)
    return built


def _dump_mixes(mixes: dict[str, BillingMix]) -> list[list[Any]]:
    return [
        [key, mix.claims, str(mix.billed), mix.rejected, str(mix.held_back)]
        for key, mix in mixes.items()
    ]


def _serve() -> None:
    """A worker: one JSON request per line on stdin, one JSON answer per line on stdout."""
    exit_with_parent()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = _dump(_build(request))
        except errors.ClaimsPipelineError as error:  # messages free of values by design
            answer = {"error": str(error), "kind": type(error).__name__}
        except Exception as error:
            answer = {"error": describe_error(error)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _serve()
