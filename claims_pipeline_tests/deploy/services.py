"""The moving parts of a scaled-out deployment, started for a test on this machine: a local S3
endpoint (moto's standalone server), Celery workers each in its own directory, a Dagster
instance on PostgreSQL, and the backfill command an operator types.

Each piece is a context manager that stops what it started (the whole process group) on exit,
and every wait has a timeout, so a stuck worker fails the test instead of hanging CI. Written
for one practice configured by environment variables; a setup with several practices passes a
different ``env`` (e.g. with CLAIMS_PRACTICES_DIR) to the same functions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pyarrow.fs as pafs

import claims_pipeline
from claims_pipeline.emulator import RunningEmulator

#: The checkout whose claims_pipeline the child processes import (this worktree, not another).
PROJECT_ROOT = Path(claims_pipeline.__file__).resolve().parent.parent
#: The instance settings the docs ship for PostgreSQL (docs/examples/dagster-postgres.yaml).
POSTGRES_INSTANCE_YAML = PROJECT_ROOT / "docs" / "examples" / "dagster-postgres.yaml"
#: RabbitMQ on this machine (HELPERS / .ci/run); CELERY_BROKER_URL overrides.
DEFAULT_BROKER_URL = "pyamqp://guest:guest@127.0.0.1:5672//"

#: Dummy credentials for the local S3 endpoint (moto accepts any).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "scaleout-test",
    "AWS_SECRET_ACCESS_KEY": "scaleout-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def wait_until(ready: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")


@dataclass
class S3Endpoint:
    url: str
    bucket: str

    def env(self) -> dict[str, str]:
        """What pyarrow (and any AWS SDK) needs to use this endpoint instead of AWS."""
        return {"AWS_ENDPOINT_URL": self.url, **S3_CREDENTIALS}

    def filesystem(self) -> pafs.S3FileSystem:
        host = self.url.removeprefix("http://")
        return pafs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            allow_bucket_creation=True,
        )

    def objects(self, prefix: str = "") -> list[str]:
        """Keys of every object under ``bucket/prefix``."""
        selector = pafs.FileSelector(
            f"{self.bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True
        )
        return sorted(
            info.path.removeprefix(f"{self.bucket}/")
            for info in self.filesystem().get_file_info(selector)
            if info.type == pafs.FileType.File
        )


@contextmanager
def moto_s3(directory: Path, bucket: str = "claims-scaleout") -> Iterator[S3Endpoint]:
    """moto's standalone S3 server on a free loopback port, with one empty bucket."""
    port = free_port()
    log = directory / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(answers, 30, "moto S3 server", log)
        endpoint = S3Endpoint(url, bucket)
        endpoint.filesystem().create_dir(bucket)
        yield endpoint
    finally:
        stop_process_group(process)


def postgres_instance_home(directory: Path) -> Path:
    """A DAGSTER_HOME with the shipped PostgreSQL instance settings (DAGSTER_PG_URL) and no
    compute-log files: steps on workers must not write to a disk another step would read."""
    directory.mkdir(parents=True, exist_ok=True)
    text = POSTGRES_INSTANCE_YAML.read_text()
    text += (
        "\n# Scale-out test: no step writes local files (compute logs go nowhere).\n"
        "compute_logs:\n"
        "  module: dagster._core.storage.noop_compute_log_manager\n"
        "  class: NoOpComputeLogManager\n"
    )
    (directory / "dagster.yaml").write_text(text)
    return directory


@dataclass
class CeleryWorker:
    name: str
    directory: Path
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def celery_workers(
    root: Path, count: int, env: Mapping[str, str], queue: str, startup_timeout: float = 90
) -> Iterator[list[CeleryWorker]]:
    """``count`` Celery workers of dagster-celery's app listening on ``queue``, each a single
    process (``--pool solo``: the step runs in the process we started, whose pid we know) with
    its own empty working directory and its own DAGSTER_HOME copy of the instance settings."""
    workers: list[CeleryWorker] = []
    try:
        for index in range(count):
            directory = root / f"worker{index}"
            work = directory / "cwd"
            home = postgres_instance_home(directory / "dagster_home")
            work.mkdir(parents=True)
            name = f"scaleout{index}-{queue}@localhost"
            log = directory / "worker.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "dagster_celery.app",
                        "worker",
                        "-Q",
                        queue,
                        "-n",
                        name,
                        "--pool",
                        "solo",
                        "--loglevel",
                        "INFO",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],  # fmt: skip
                    cwd=work,
                    env={**env, "DAGSTER_HOME": str(home)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            workers.append(CeleryWorker(name, work, home, process, log))
        for worker in workers:
            wait_until(
                lambda w=worker: w.process.poll() is not None or " ready." in w.log.read_text(),
                startup_timeout,
                f"Celery worker {worker.name}",
                worker.log,
            )
            if worker.process.poll() is not None:
                raise RuntimeError(f"Celery worker exited:\n{worker.log.read_text()[-3000:]}")
        yield workers
    finally:
        for worker in workers:
            stop_process_group(worker.process)
        delete_queue(env.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL), queue)


def unique_queue() -> str:
    """A queue name of its own, so concurrent test runs on one broker never take each other's
    steps (the vhost is shared: guest cannot create vhosts)."""
    return f"claims-scaleout-{uuid.uuid4().hex[:10]}"


def delete_queue(broker_url: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(queue)


def broker_reachable(broker_url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@dataclass
class BackfillResult:
    returncode: int
    seconds: float
    output: str


def run_backfill(
    env: Mapping[str, str],
    first: date,
    last: date,
    cwd: Path,
    run_config: dict[str, Any] | None = None,
    timeout: float = 300,
    select: str = "*",
) -> BackfillResult:
    """What an operator types (README, "Running against a real EHR and API"): one run that
    materializes the ``select``ed assets (every asset; ``group:<practice>`` for a practice)
    over ``first``..``last``, with the executor ``env`` selects."""
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "claims_pipeline.definitions", "--select", select,
        "--partition-range", f"{first.isoformat()}...{last.isoformat()}",
    ]  # fmt: skip
    if run_config:
        command += ["--config-json", json.dumps(run_config)]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(process)
        output, _ = process.communicate()
    finally:
        stop_process_group(process)
    return BackfillResult(
        process.returncode, time.monotonic() - started, output.decode(errors="replace")
    )


def claims_by_tenant(*emulators: RunningEmulator) -> dict[int, dict[tuple[str, str], Any]]:
    """What the import API holds, per tenant: (provider NPI, claim_submitter_identifier) ->
    (content hash, content as posted). Ids, versions and times are the server's, left out."""
    held: dict[int, dict[tuple[str, str], Any]] = {}
    for emulator in emulators:
        for tenant_id in emulator.config.tenant_keys():
            tenant = held.setdefault(tenant_id, {})
            for claim in emulator.claims(tenant_id):
                key = (claim["provider_npi"], claim["claim_submitter_identifier"])
                tenant[key] = (claim["content_hash"], json.dumps(claim["content"], sort_keys=True))
    return held


def files_under(directory: Path) -> list[str]:
    """Every file below ``directory`` (relative paths), for "nothing was written here"."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def child_environment(**values: str) -> dict[str, str]:
    """This process's environment without any claims/Dagster/Celery/AWS settings of its own,
    plus ``values``; child processes import this checkout's claims_pipeline."""
    prefixes = ("CLAIMS_", "EHR_", "DAGSTER_", "CELERY_", "AWS_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return {**base, **values}


def copy_instance_yaml(source: Path, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, home / "dagster.yaml")
    return home
