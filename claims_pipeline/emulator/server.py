"""Running the emulator: in this process (:func:`serve`) or in a child process for tests and
demos (:func:`running_emulator`), where it can be stopped, killed and restarted on its database.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import claims_pipeline
from claims_pipeline import settings
from claims_pipeline.emulator.app import API_KEY_HEADER, create_app
from claims_pipeline.emulator.config import EmulatorConfig
from claims_pipeline.emulator.faults import fault_arguments
from claims_pipeline.errors import ClaimsPipelineError

DEFAULT_PORT = 8400
#: The child reads another tenant's key from this variable + the tenant id.
_TENANT_KEY_VARIABLE = "CLAIMS_EMULATOR_KEY_"


class EmulatorError(ClaimsPipelineError):
    """The emulator process did not start, answer or stop as expected."""


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the emulator on ``host:port`` until Ctrl-C or SIGTERM; blocks.

    Port 0 picks a free port; the URL is logged at startup. Request bodies and the API key are
    never logged (the access log shows method, path with ``tenant_id``, and status).
    """
    run_server(config, host, port)


def run_server(
    config: EmulatorConfig,
    host: str,
    port: int,
    *,
    port_file: Path | None = None,
    exit_with_parent: bool = False,
    access_log: bool = True,
) -> None:
    """:func:`serve`, plus what a supervising parent needs.

    ``port_file`` receives the bound port once the socket listens. ``exit_with_parent`` shuts
    the server down when standard input reaches end of file, which happens when the parent
    closes the pipe or dies, however it dies.
    """
    listener = _listen(host, port)
    bound_port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=bound_port,
            access_log=access_log,
            timeout_graceful_shutdown=5,
        )
    )
    # uvicorn announces its address only for sockets it opened itself; Config has set up its
    # loggers by now.
    logging.getLogger("uvicorn.error").info(
        "Claims-import emulator for tenant %d on %s (database %s)",
        config.tenant_id,
        _base_url(host, bound_port),
        config.db_path,
    )
    if port_file is not None:
        _write_atomically(port_file, str(bound_port))
    if exit_with_parent:
        threading.Thread(target=_exit_at_stdin_eof, args=(server,), daemon=True).start()
    server.run(sockets=[listener])


class RunningEmulator:
    """An emulator in a child process, answering on ``url`` with ``api_key`` for ``tenant_id``.

    Its state lives in ``db_path``, so :meth:`restart` (and :meth:`start` after :meth:`kill`)
    comes back with every committed claim, on the same port. Runtime fault settings
    (:meth:`set_faults`) belong to the process: a restart begins with ``config.faults``.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        runtime_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.log_path = runtime_dir / "emulator.log"
        self._port_file = runtime_dir / "port"
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:53817`` (the port is known once started)."""
        return _base_url(self.host, self.port)

    @property
    def api_key(self) -> str:
        return self.config.api_key.get_secret_value()

    @property
    def tenant_id(self) -> int:
        return self.config.tenant_id

    @property
    def db_path(self) -> Path:
        return self.config.db_path

    @property
    def pid(self) -> int | None:
        """Process id of the current child, None before the first start."""
        return None if self._process is None else self._process.pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child process and return once it answers; raises EmulatorError if not."""
        if self.is_running:
            raise EmulatorError("the emulator is already running")
        self._port_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "claims_pipeline.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            "--tenant-id",
            str(self.tenant_id),
            "--port-file",
            str(self._port_file),
            "--exit-with-parent",
            *fault_arguments(self.config.faults),
        ]
        for tenant in self.config.other_tenants:
            command += ["--other-tenant", f"{tenant}={_TENANT_KEY_VARIABLE}{tenant}"]
        if self.config.seed is not None:
            command += ["--seed", str(self.config.seed)]
        with self.log_path.open("ab") as log:
            # The command is this interpreter and options built above, never outside text.
            self._process = subprocess.Popen(  # noqa: S603
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._child_environment(),
            )
        self._wait_until_ready()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the child down gracefully (killed if it takes longer than ``timeout``)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            # End of stdin is the child's signal to shut down (see run_server).
            self._close_stdin()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_stdin()

    def kill(self) -> None:
        """SIGKILL the child, as a crash would: no shutdown, only committed work survives."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._close_stdin()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and database."""
        self.stop()
        self.start()

    def claims(self, tenant_id: int | None = None) -> list[dict[str, Any]]:
        """Every stored claim of the tenant (default: the first), by id (see
        ``GET /_emulator/claims``), asked with that tenant's own key."""
        tenant = self.tenant_id if tenant_id is None else tenant_id
        response = self._request(
            "GET",
            "/_emulator/claims",
            params={"tenant_id": tenant},
            key=self.config.tenant_keys()[tenant].get_secret_value(),
        )
        claims: list[dict[str, Any]] = response.json()["claims"]
        return claims

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /_emulator/stats``."""
        stats: dict[str, Any] = self._request("GET", "/_emulator/stats").json()
        return stats

    def set_faults(self, seed: int | None = None, **faults: Any) -> dict[str, Any]:
        """Replace the fault configuration (fields of FaultConfig; none given = no faults).

        The random sequence restarts from ``seed``, or from ``config.seed`` without one.
        Returns the configuration now in force.
        """
        body = {**faults, **({} if seed is None else {"seed": seed})}
        config: dict[str, Any] = self._request("PUT", "/_emulator/faults", json=body).json()
        return config

    def _request(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = httpx.request(
            method,
            self.url + path,
            headers={API_KEY_HEADER: key or self.api_key},
            timeout=30.0,
            **kwargs,
        )
        if response.status_code != 200:
            raise EmulatorError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response

    def _child_environment(self) -> dict[str, str]:
        # The key travels in the environment, not on the command line that `ps` shows.
        environment = {**os.environ, settings.CLAIMS_API_KEY.name: self.api_key}
        for tenant, key in self.config.other_tenants.items():
            environment[f"{_TENANT_KEY_VARIABLE}{tenant}"] = key.get_secret_value()
        # The child imports the same claims_pipeline as this process, installed or not.
        source_root = str(Path(claims_pipeline.__file__).resolve().parent.parent)
        python_path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = (
            source_root if not python_path else os.pathsep.join([source_root, python_path])
        )
        return environment

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise EmulatorError(f"the emulator exited with code {code}:\n{self._log_tail()}")
            if self._port_file.exists():
                self.port = int(self._port_file.read_text())
                try:
                    if httpx.get(self.url + "/_emulator/health", timeout=1.0).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise EmulatorError(
            f"the emulator did not answer within {self._startup_timeout} s:\n{self._log_tail()}"
        )

    def _close_stdin(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningEmulator]:
    """An emulator subprocess serving ``config`` for the ``with`` block, stopped on exit.

    Port 0 picks a free port (kept across restarts). The child also exits by itself if this
    process dies, since it watches its standard input.
    """
    with tempfile.TemporaryDirectory(prefix="claims-emulator-") as runtime_dir:
        emulator = RunningEmulator(config, Path(runtime_dir), host=host, port=port)
        try:
            emulator.start()
            yield emulator
        finally:
            emulator.stop()


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # A restart must get the same port back while the old connections sit in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.listen(128)
    return listener


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _exit_at_stdin_eof(server: uvicorn.Server) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    server.should_exit = True
