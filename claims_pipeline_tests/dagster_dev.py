"""``dagster dev`` (webserver, daemon and code server) on loopback in its own process group, and
the GraphQL calls the UI makes, for the UI tests and ``docs/screenshots.py``.

Every wait is bounded and fails with the tail of ``dagster dev``'s output. Shutdown is what
Ctrl-C in a terminal does: SIGINT to the whole process group, then SIGTERM, then SIGKILL for
whatever is left, always, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

import claims_pipeline
from claims_pipeline.demo.seed import seed_demo
from claims_pipeline.emulator import EmulatorConfig, RunningEmulator, running_emulator

PROJECT_ROOT = Path(claims_pipeline.__file__).resolve().parents[1]
PROJECT_DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"
#: Variables of the caller's shell that must not leak into the instance or the code location:
#: the test says exactly which storage, EHR and API it means.
ISOLATED_PREFIXES = ("DAGSTER_", "CLAIMS_", "EHR_")
TERMINAL_BACKFILL_STATUSES = {
    "COMPLETED",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    "FAILED",
    "CANCELED",
}

LAUNCH_BACKFILL = """
mutation LaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      partitionNames
      error { message }
      runs { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""

WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

DAEMONS = """
query Daemons {
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


class DagsterDevError(AssertionError):
    """``dagster dev`` did not start, answer or finish as expected; carries its output's tail."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class DagsterDev:
    """A running ``dagster dev``: UI at ``url``, instance in ``home``, output in ``log_path``."""

    process: subprocess.Popen[bytes]
    url: str
    home: Path
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str) -> DagsterDevError:
        return DagsterDevError(
            f"{message}\n--- last lines of dagster dev ({self.log_path}) ---\n{self.log_tail()}"
        )

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to the webserver's GraphQL endpoint (what the UI calls); its ``data``."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=60.0,
        )
        body = response.json() if response.status_code == 200 else {}
        if response.status_code != 200 or body.get("errors"):
            raise self.fail(
                f"GraphQL answered {response.status_code}: {body.get('errors') or response.text}"
            )
        return body["data"]

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Until the webserver answers, the code location is loaded and the daemons that launch
        backfills and queued runs report healthy."""
        deadline = time.monotonic() + timeout
        stage = "the webserver to answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.fail(f"dagster dev exited with code {self.process.returncode}")
            try:
                if stage == "the webserver to answer":
                    httpx.get(f"{self.url}/server_info", timeout=2.0).raise_for_status()
                    stage = "the code location to load"
                if stage == "the code location to load":
                    entries = self.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
                    for entry in entries:
                        loaded = entry["locationOrLoadError"] or {}
                        if loaded.get("__typename") == "PythonError":
                            raise self.fail(f"code location failed to load: {loaded['message']}")
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        stage = "the daemons to report healthy"
                if stage == "the daemons to report healthy":
                    statuses = self.graphql(DAEMONS)["instance"]["daemonHealth"]
                    healthy = {
                        s["daemonType"] for s in statuses["allDaemonStatuses"] if s["healthy"]
                    }
                    if {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy:
                        return
            except (httpx.TransportError, httpx.HTTPStatusError):
                pass
            time.sleep(0.5)
        raise self.fail(f"timed out after {timeout:.0f} s waiting for {stage}")

    def launch_backfill(
        self,
        asset_keys: Sequence[str],
        partition_names: Sequence[str],
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Launch an asset backfill as the UI's "Materialize" dialog does; its id."""
        params = {
            "assetSelection": [{"path": [key]} for key in asset_keys],
            "partitionNames": list(partition_names),
            "fromFailure": False,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})
        launched = result["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise self.fail(f"the backfill was not launched: {launched}")
        return launched["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        found = self.graphql(BACKFILL, {"backfillId": backfill_id})["partitionBackfillOrError"]
        if found["__typename"] != "PartitionBackfill":
            raise self.fail(f"backfill {backfill_id}: {found}")
        return found

    def wait_for_backfill(self, backfill_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll the backfill until it reaches a terminal status; the backfill as last seen."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise self.fail(f"dagster dev exited with code {self.process.returncode}")
            backfill = self.backfill(backfill_id)
            if backfill["status"] in TERMINAL_BACKFILL_STATUSES:
                return backfill
            if time.monotonic() > deadline:
                raise self.fail(
                    f"backfill {backfill_id} still {backfill['status']} after {timeout:.0f} s; "
                    f"runs: {[(r['runId'], r['status']) for r in backfill['runs']]}"
                )
            time.sleep(1.0)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT to the process group (Ctrl-C), then SIGTERM, then SIGKILL what is left."""
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        for sent in (signal.SIGINT, signal.SIGTERM):
            _signal_group(group, sent)
            if _wait_for_group(self.process, group, timeout if sent == signal.SIGINT else 10):
                return
        kill_group(self.process)


def _signal_group(group: int, sent: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sent)


def _group_alive(group: int) -> bool:
    """Whether any non-zombie process is left in ``group`` (zombies cannot be signalled away,
    and a container's init may never reap them)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _wait_for_group(process: subprocess.Popen[bytes], group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so that it does not count as alive
        if process.returncode is not None and not _group_alive(group):
            return True
        time.sleep(0.2)
    return False


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group and reap the leader."""
    _signal_group(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _restore_default_signals() -> None:
    # A process started in the background by a non-interactive shell ignores SIGINT, and
    # children inherit that: restore the defaults so that Ctrl-C (our SIGINT) reaches Python.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def prepare_home(home: Path, dagster_yaml: Path = PROJECT_DAGSTER_YAML) -> Path:
    """``home`` with the project's dagster.yaml in it (as an operator installs it)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(dagster_yaml, home / "dagster.yaml")
    return home


@contextmanager
def running_dagster_dev(
    home: Path,
    environment: Mapping[str, str],
    *,
    module: str = "claims_pipeline.definitions",
    location_name: str = "claims_pipeline",
    startup_timeout: float = 120.0,
) -> Iterator[DagsterDev]:
    """``dagster dev`` serving ``module`` as code location ``location_name`` (the name in
    pyproject.toml) on a free loopback port with ``DAGSTER_HOME=home`` (holding the project's
    dagster.yaml unless it has one), ready to use, stopped on exit.

    The children see the caller's environment without its ``DAGSTER_*``, ``CLAIMS_*`` and
    ``EHR_*`` variables, plus ``environment``.
    """
    prepare_home(home)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    env |= dict(environment) | {"DAGSTER_HOME": str(home)}
    log_path = home / "dagster_dev.log"
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_module:\n      module_name: {module}\n"
        f"      location_name: {location_name}\n"
    )
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "--workspace",
        str(workspace),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("ab") as log:
        # The command is this interpreter and fixed options; cwd is the instance's home so that
        # nothing is written into the caller's working directory.
        process = subprocess.Popen(  # noqa: S603
            command,
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_restore_default_signals,  # noqa: PLW1509 - runs before exec only
        )
    dev = DagsterDev(process, f"http://127.0.0.1:{port}", home, log_path)
    try:
        dev.wait_until_ready(startup_timeout)
        yield dev
    finally:
        try:
            dev.stop()
        finally:
            kill_group(process)  # whatever happened above, nothing of the group survives


@contextmanager
def seeded_environment(
    root: Path,
    days: Sequence[date],
    *,
    api_key: str,
    tenant_id: int,
    encounters_per_day: int = 40,
) -> Iterator[tuple[dict[str, str], RunningEmulator]]:
    """The environment the code location reads, pointing at a reference-schema SQLite EHR under
    ``root`` seeded for ``days`` (consecutive) and at a running emulator; and the emulator."""
    ehr_url = f"sqlite:///{root / 'ehr.sqlite'}"
    seed_demo(
        ehr_url,
        days=len(days),
        encounters_per_day=encounters_per_day,
        today=max(days) + timedelta(days=1),
    )
    config = EmulatorConfig(db_path=root / "emulator.sqlite", api_key=api_key, tenant_id=tenant_id)
    with running_emulator(config) as emulator:
        environment = {
            "EHR_DATABASE_URL": ehr_url,
            "CLAIMS_API_URL": emulator.url,
            "CLAIMS_API_KEY": api_key,
            "CLAIMS_TENANT_ID": str(tenant_id),
            "CLAIMS_DATA_DIR": str(root / "data"),
        }
        yield environment, emulator
