"""Scale-out, proven (docs/deploying.md, "Scale-out on Celery"): three practices (reference,
OpenEMR and sql-adapter EHRs, three time zones, three tenants) each backfill 30 days at once,
their steps on two Celery workers, each worker in its own working directory, with Dagster's
storage, the EHRs and the delivery ledger on PostgreSQL and the Parquet files on an S3 endpoint;
the import API ends with exactly the claims of a single-process run of the same data, each
tenant its own.

Needs PostgreSQL (CLAIMS_TEST_POSTGRES_URL) and RabbitMQ on 127.0.0.1:5672 (CELERY_BROKER_URL
to use another); skipped with the reason when either is missing, a failure with
CLAIMS_REQUIRE_SERVICES=1. Prints the wall time and worker count (copied into the docs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from claims_pipeline.demo.bulk import generate
from claims_pipeline.demo.practices import QUERY_FILE
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
ENCOUNTERS_PER_DAY = 8
WORKERS = 2
#: name -> (tenant, EHR schema, time zone)
PRACTICES = {
    "alpha": (501, "reference", "America/Chicago"),
    "beta": (502, "openemr", "Pacific/Auckland"),
    "gamma": (503, "sql", "Pacific/Honolulu"),
}
KEYS = {tenant: f"scaleout-key-{tenant}-5d1c7e20" for tenant, _, _ in PRACTICES.values()}


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


def write_practices(directory: Path, first_date: date) -> None:
    for name, (tenant, schema, zone) in PRACTICES.items():
        attributes = {
            "name": name,
            "tenant_id": tenant,
            "api_key_env": f"{name.upper()}_CLAIMS_API_KEY",
            "ehr_url_env": f"{name.upper()}_EHR_DATABASE_URL",
            "ehr_schema": schema,
            "timezone": zone,
            "first_date": first_date.isoformat(),
        }
        if schema == "sql":
            attributes["query_file"] = str(QUERY_FILE)
        (directory / name).mkdir(parents=True)
        (directory / name / "defs.yaml").write_text(
            yaml.safe_dump(
                {"type": "claims_pipeline.components.ClaimsPractice", "attributes": attributes}
            )
        )


def seed(name: str, url: str) -> None:
    """The practice's EHR: OpenEMR tables, or the reference schema (read by the reference or
    the sql adapter), over the days of the run and a few more."""
    if PRACTICES[name][1] == "openemr":
        generate(url, DAYS * ENCOUNTERS_PER_DAY * 3, schema="openemr", days=DAYS + 3)
    else:
        seed_demo(url, days=DAYS + 3, encounters_per_day=ENCOUNTERS_PER_DAY, seed=len(name))


def backfill_all(env: dict[str, str], first: date, last: date, cwd: Path, **kwargs: Any):
    """One backfill per practice (`--select group:<name>`), all three at once."""
    with ThreadPoolExecutor(len(PRACTICES)) as pool:
        futures = {
            name: pool.submit(
                run_backfill, env, first, last, cwd=cwd, select=f"group:{name}", **kwargs
            )
            for name in PRACTICES
        }
    return {name: future.result() for name, future in futures.items()}


def test_three_practices_backfilled_on_celery_and_object_storage_match_one_process(
    tmp_path: Path,
):
    broker_url = require_broker()
    # complete days in every practice's time zone
    last = date.today() - timedelta(days=2)
    first = last - timedelta(days=DAYS - 1)
    practices_dir = tmp_path / "practices"
    write_practices(practices_dir, first - timedelta(days=1))

    with ExitStack() as stack:
        ehr_urls = {
            name: plain(stack.enter_context(fresh_database("postgresql", tmp_path)))
            for name in PRACTICES
        }
        dagster_url = stack.enter_context(fresh_database("postgresql", tmp_path))
        ledger_url = stack.enter_context(fresh_database("postgresql", tmp_path))
        s3 = stack.enter_context(moto_s3(tmp_path))
        celery_api = stack.enter_context(running_emulator(emulator_config(tmp_path / "c.sqlite")))
        single_api = stack.enter_context(running_emulator(emulator_config(tmp_path / "s.sqlite")))
        for name, url in ehr_urls.items():
            seed(name, url)
        practices = {"CLAIMS_PRACTICES_DIR": str(practices_dir)}
        for name, (tenant, _, _) in PRACTICES.items():
            practices[f"{name.upper()}_EHR_DATABASE_URL"] = ehr_urls[name]
            practices[f"{name.upper()}_CLAIMS_API_KEY"] = KEYS[tenant]

        # The reference: one process per practice, local data directories, SQLite ledgers.
        single_home = copy_instance_yaml(PROJECT_ROOT / "dagster.yaml", tmp_path / "single_home")
        with dg.DagsterInstance.from_config(str(single_home)):
            pass  # its SQLite storage created once, before three processes open it at once
        single = backfill_all(
            child_environment(
                **practices,
                CLAIMS_API_URL=single_api.url,
                CLAIMS_EXECUTOR="in_process",
                CLAIMS_DATA_DIR=str(tmp_path / "single_data"),
                DAGSTER_HOME=str(single_home),
            ),
            first,
            last,
            cwd=tmp_path,
        )
        for name, result in single.items():
            assert result.returncode == 0, name + result.output[-5000:]

        # Scaled out: steps on Celery workers, nothing on a shared local disk.
        scaled_env = child_environment(
            **practices,
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
        with (
            os_environ(DAGSTER_PG_URL=psycopg2(dagster_url)),
            dg.DagsterInstance.from_config(str(launcher_home)),
        ):
            pass  # its PostgreSQL schema created once, before three launchers open it at once
        with celery_workers(tmp_path / "workers", WORKERS, scaled_env, queue) as workers:
            scaled = backfill_all(
                {**scaled_env, "DAGSTER_HOME": str(launcher_home)},
                first,
                last,
                cwd=launcher / "cwd",
                run_config=celery_queue_config(queue),
            )
            worker_logs = {w.name: w.log.read_text(errors="replace") for w in workers}
        for name, result in scaled.items():
            assert result.returncode == 0, (
                name
                + result.output[-5000:]
                + "\n".join(log[-3000:] for log in worker_logs.values())
            )

        worker_names = {w.pid: w.name for w in workers}
        with os_environ(DAGSTER_PG_URL=psycopg2(dagster_url)):
            # read through an instance of its own: the launcher's home must stay untouched
            ran_on = step_processes(postgres_instance_home(tmp_path / "reader"), worker_names)
        single_steps = step_processes(single_home, {})
        report(single, scaled, ran_on)

        # The same steps as in one process, each run by one of the worker processes (none by
        # the launching process), and both workers used.
        assert set(ran_on) == set(single_steps), ran_on
        assert all(name is not None for name in ran_on.values()), ran_on
        assert len(set(ran_on.values())) == WORKERS, ran_on

        # The API holds the same claims, with the same content, as after the one-process runs,
        # each tenant its own practice's (keys of one practice's adapter only).
        scaled_claims = claims_by_tenant(celery_api)
        assert scaled_claims == claims_by_tenant(single_api)
        assert set(scaled_claims) == set(KEYS)
        for tenant, claims in scaled_claims.items():
            assert len(claims) > DAYS, tenant
        prefixes = {
            tenant: {key[1].rstrip("0123456789") for key in claims}
            for tenant, claims in scaled_claims.items()
        }
        assert prefixes[PRACTICES["alpha"][0]].isdisjoint(prefixes[PRACTICES["beta"][0]])

        # The bucket holds the Parquet files the one-process runs wrote locally (same paths,
        # each practice under its own prefix), and no local disk was used.
        in_bucket = parquet_files(s3.objects("claims"), "claims/")
        assert in_bucket == parquet_files(files_under(tmp_path / "single_data"), "")
        for name in PRACTICES:
            own = {p for p in in_bucket if p.startswith(f"practices/{name}/claims/")}
            assert {p.rsplit("/", 1)[-1] for p in own} == {
                f"{day.isoformat()}.parquet" for day in date_range(first, last)
            }
        for worker in workers:
            assert files_under(worker.directory) == [], worker.name
            assert files_under(worker.home) == ["dagster.yaml"], worker.name
        assert files_under(launcher / "cwd") == []
        assert files_under(launcher_home) == ["dagster.yaml"]


def emulator_config(path: Path) -> EmulatorConfig:
    """One emulator serving the three tenants, each with its own key."""
    (first, *others) = KEYS
    return EmulatorConfig(
        db_path=path,
        api_key=KEYS[first],
        tenant_id=first,
        other_tenants={tenant: KEYS[tenant] for tenant in others},
    )


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
    """For the runs on the instance in ``home``: each step's key -> the name of the worker
    whose process started it (None for any other process). Asserts every run succeeded."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == len(PRACTICES)
        started: dict[str, str | None] = {}
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS
            starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            for entry in starts:
                if entry.step_key and entry.dagster_event:
                    started[entry.step_key] = worker_names.get(entry.dagster_event.pid)
        return started


def report(
    single: dict[str, BackfillResult], scaled: dict[str, BackfillResult], ran_on: dict
) -> None:
    """Wall time of the three concurrent backfills (the slowest), for docs/deploying.md."""
    steps_per_worker = {name: list(ran_on.values()).count(name) for name in set(ran_on.values())}
    print(
        f"\nscale-out: {len(PRACTICES)} practices x {DAYS} days at once; single process "
        f"{max(r.seconds for r in single.values()):.1f} s; Celery, {WORKERS} workers "
        f"{max(r.seconds for r in scaled.values()):.1f} s; steps per worker: {steps_per_worker}"
    )
