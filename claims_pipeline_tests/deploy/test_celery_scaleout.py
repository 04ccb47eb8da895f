"""Scale-out, proven (docs/deploying.md, "Scale-out on Celery"): a 30-day backfill whose steps
run on two Celery workers, each in its own working directory, with Dagster's storage, the EHR
and the delivery ledger on PostgreSQL and the Parquet files on an S3 endpoint, delivers exactly
the claims a single-process run of the same data delivers.

Needs PostgreSQL (CLAIMS_TEST_POSTGRES_URL) and RabbitMQ on 127.0.0.1:5672 (CELERY_BROKER_URL
to use another); skipped with the reason when either is missing, a failure with
CLAIMS_REQUIRE_SERVICES=1. Prints the wall time and worker count (copied into the docs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from claims_pipeline.demo.seed import seed_demo
from claims_pipeline.emulator import EmulatorConfig, running_emulator
from claims_pipeline_tests.databases import REQUIRE_SERVICES, SERVICES, fresh_database
from claims_pipeline_tests.deploy.services import (
    DEFAULT_BROKER_URL,
    PROJECT_ROOT,
    BackfillResult,
    broker_reachable,
    celery_workers,
    child_environment,
    claims_by_tenant,
    copy_instance_yaml,
    files_under,
    moto_s3,
    postgres_instance_home,
    run_backfill,
    unique_queue,
)

pytestmark = [pytest.mark.slow, SERVICES]

DAYS = 30
ENCOUNTERS_PER_DAY = 20
WORKERS = 2
API_KEY = "scaleout-key-5d1c7e20b8"
TENANT_ID = 57


def require_broker() -> str:
    url = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    if not broker_reachable(url):
        reason = "RabbitMQ (CELERY_BROKER_URL or 127.0.0.1:5672) is not reachable"
        if os.environ.get(REQUIRE_SERVICES) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_SERVICES}=1", pytrace=False)
        pytest.skip(reason)
    return url


def psycopg2(url) -> str:
    """Dagster's own storage wants the psycopg2 driver (docs/deploying.md)."""
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def plain(url) -> str:
    return url.render_as_string(hide_password=False)


def test_a_celery_backfill_on_object_storage_delivers_what_one_process_delivers(tmp_path: Path):
    broker_url = require_broker()
    last = date.today() - timedelta(days=1)
    first = last - timedelta(days=DAYS - 1)

    with (
        fresh_database("postgresql", tmp_path) as ehr_url,
        fresh_database("postgresql", tmp_path) as dagster_url,
        fresh_database("postgresql", tmp_path) as ledger_url,
        moto_s3(tmp_path) as s3,
        running_emulator(emulator_config(tmp_path / "celery_api.sqlite")) as celery_api,
        running_emulator(emulator_config(tmp_path / "single_api.sqlite")) as single_api,
    ):
        seeded = seed_demo(plain(ehr_url), days=DAYS, encounters_per_day=ENCOUNTERS_PER_DAY)
        practice = {
            "EHR_DATABASE_URL": plain(ehr_url),
            "EHR_SCHEMA": "reference",
            "CLAIMS_API_KEY": API_KEY,
            "CLAIMS_TENANT_ID": str(TENANT_ID),
        }

        # The reference: one process, a local data directory, the default SQLite ledger.
        single_home = copy_instance_yaml(PROJECT_ROOT / "dagster.yaml", tmp_path / "single_home")
        single = run_backfill(
            child_environment(
                **practice,
                CLAIMS_API_URL=single_api.url,
                CLAIMS_EXECUTOR="in_process",
                CLAIMS_DATA_DIR=str(tmp_path / "single_data"),
                DAGSTER_HOME=str(single_home),
            ),
            first,
            last,
            cwd=tmp_path,
        )
        assert single.returncode == 0, single.output[-5000:]

        # Scaled out: steps on Celery workers, nothing on a shared local disk.
        scaled_env = child_environment(
            **practice,
            **s3.env(),
            CLAIMS_API_URL=celery_api.url,
            CLAIMS_EXECUTOR="celery",
            CLAIMS_DATA_DIR=f"s3://{s3.bucket}/claims",
            CLAIMS_LEDGER_URL=plain(ledger_url),
            DAGSTER_PG_URL=psycopg2(dagster_url),
            CELERY_BROKER_URL=broker_url,
        )
        queue = unique_queue()
        launcher = tmp_path / "launcher"
        launcher_home = postgres_instance_home(launcher / "dagster_home")
        (launcher / "cwd").mkdir()
        with celery_workers(tmp_path / "workers", WORKERS, scaled_env, queue) as workers:
            scaled = run_backfill(
                {**scaled_env, "DAGSTER_HOME": str(launcher_home)},
                first,
                last,
                cwd=launcher / "cwd",
                run_config=celery_queue_config(queue),
            )
            worker_logs = {w.name: w.log.read_text(errors="replace") for w in workers}
        assert scaled.returncode == 0, scaled.output[-5000:] + "\n".join(
            log[-3000:] for log in worker_logs.values()
        )

        worker_names = {w.pid: w.name for w in workers}
        with os_environ(DAGSTER_PG_URL=psycopg2(dagster_url)):
            # read through an instance of its own: the launcher's home must stay untouched
            ran_on = step_processes(postgres_instance_home(tmp_path / "reader"), worker_names)
        single_steps = step_processes(single_home, {})
        report(single, scaled, ran_on, seeded.encounters)

        # The same steps as in one process, each run by one of the worker processes (none by
        # the launching process).
        assert set(ran_on) == set(single_steps), ran_on
        assert all(name is not None for name in ran_on.values()), ran_on

        # The API holds the same claims, with the same content, as after the one-process run.
        scaled_claims = claims_by_tenant(celery_api)
        assert scaled_claims == claims_by_tenant(single_api)
        # every billable encounter but those with a planted defect
        assert len(scaled_claims[TENANT_ID]) == seeded.billable_encounters - len(seeded.defects)

        # The bucket holds the Parquet files the one-process run wrote locally (same paths, one
        # per asset and day), and no local disk was used.
        in_bucket = parquet_files(s3.objects("claims"), "claims/")
        assert in_bucket == parquet_files(files_under(tmp_path / "single_data"), "")
        days = {f"{day.isoformat()}.parquet" for day in date_range(first, last)}
        assert {path.rsplit("/", 1)[-1] for path in in_bucket} == days
        assert len(in_bucket) >= 3 * DAYS  # encounters, claims, rejections at least
        for worker in workers:
            assert files_under(worker.directory) == [], worker.name
            assert files_under(worker.home) == ["dagster.yaml"], worker.name
        assert files_under(launcher / "cwd") == []
        assert files_under(launcher_home) == ["dagster.yaml"]


def emulator_config(path: Path) -> EmulatorConfig:
    return EmulatorConfig(db_path=path, api_key=API_KEY, tenant_id=TENANT_ID)


def parquet_files(paths: list[str], prefix: str) -> set[str]:
    return {p.removeprefix(prefix) for p in paths if p.endswith(".parquet")}


def date_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def celery_queue_config(queue: str) -> dict[str, Any]:
    """Run config that sends the steps to ``queue`` (no secret: the broker is in the env)."""
    return {"execution": {"config": {"config_source": {"task_default_queue": queue}}}}


@contextmanager
def os_environ(**values: str) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def step_processes(home: Path, worker_names: dict[int, str]) -> dict[str, str | None]:
    """For the one run on the instance in ``home``: each step's key -> the name of the worker
    whose process started it (None for any other process). Asserts the run succeeded."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        return {
            entry.step_key: worker_names.get(entry.dagster_event.pid)
            for entry in starts
            if entry.step_key and entry.dagster_event
        }


def report(single: BackfillResult, scaled: BackfillResult, ran_on: dict, encounters: int) -> None:
    workers_used = len(set(ran_on.values()))
    print(
        f"\nscale-out: {DAYS} days, {encounters} encounters; single process "
        f"{single.seconds:.1f} s; Celery, {WORKERS} workers ({workers_used} ran steps): "
        f"{scaled.seconds:.1f} s; steps: {ran_on}"
    )
