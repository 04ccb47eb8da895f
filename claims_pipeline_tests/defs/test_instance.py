"""The project's dagster.yaml (SQLite under DAGSTER_HOME) and the PostgreSQL variant in
docs/examples/dagster-postgres.yaml: stock Dagster configuration, tested on a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from claims_pipeline_tests.dagster_dev import PROJECT_DAGSTER_YAML, prepare_home
from claims_pipeline_tests.databases import SERVICES, fresh_database

POSTGRES_DAGSTER_YAML = PROJECT_DAGSTER_YAML.parent / "docs" / "examples" / "dagster-postgres.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return prepare_home(tmp_path / "home")


@pytest.fixture(scope="module")
def postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.URL]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    with fresh_database("postgresql", tmp_path_factory.mktemp("pg")) as url:
        yield url


@dg.asset
def probe() -> int:
    return 1


def storage_classes(instance: dg.DagsterInstance) -> tuple[str, str, str]:
    return (
        type(instance.run_storage).__name__,
        type(instance.event_log_storage).__name__,
        type(instance.schedule_storage).__name__,
    )


def test_without_postgres_settings_storage_is_sqlite_under_dagster_home(home):
    with dg.DagsterInstance.get() as instance:
        assert storage_classes(instance) == (
            "SqliteRunStorage",
            "SqliteEventLogStorage",
            "SqliteScheduleStorage",
        )
        assert dg.materialize([probe], instance=instance).success
    assert (home / "history" / "runs.db").exists()
    assert (home / "schedules" / "schedules.db").exists()


def test_the_operating_settings(home):
    with dg.DagsterInstance.get() as instance:
        assert not instance.telemetry_enabled
        assert not instance.nux_enabled
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1  # pool claims_api: one step
        assert {"key": "dagster/backfill", "limit": 2} in (
            concurrency.run_queue_config.tag_concurrency_limits
        )
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"


def test_the_postgres_variant_differs_only_in_storage():
    project = yaml.safe_load(PROJECT_DAGSTER_YAML.read_text())
    variant = yaml.safe_load(POSTGRES_DAGSTER_YAML.read_text())
    assert "storage" not in project
    assert variant.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert variant == project


@SERVICES
def test_with_the_postgres_variant_runs_events_and_schedules_live_in_postgres(
    home, postgres_database, monkeypatch
):
    shutil.copyfile(POSTGRES_DAGSTER_YAML, home / "dagster.yaml")
    url = postgres_database.set(drivername="postgresql+psycopg2")
    monkeypatch.setenv("DAGSTER_PG_URL", url.render_as_string(hide_password=False))
    with dg.DagsterInstance.get() as instance:
        assert storage_classes(instance) == (
            "PostgresRunStorage",
            "PostgresEventLogStorage",
            "PostgresScheduleStorage",
        )
        # What dagster-webserver does to its storage: with psycopg 3 the next query fails
        # ("the connection is closed").
        for storage in (
            instance.run_storage,
            instance.event_log_storage,
            instance.schedule_storage,
        ):
            storage.optimize_for_webserver(
                statement_timeout=5000, pool_recycle=3600, max_overflow=5
            )
        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("probe")) is not None
        assert instance.all_instigator_state() == []
    assert not (home / "history" / "runs.db").exists()

    engine = sa.create_engine(postgres_database, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            stored = conn.execute(
                sa.text("SELECT count(*) FROM runs WHERE run_id = :id"), {"id": result.run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert {"runs", "event_logs", "jobs", "job_ticks", "instigators"} <= tables
    assert stored == 1
