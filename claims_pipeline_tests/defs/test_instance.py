"""The project's dagster.yaml and :mod:`claims_pipeline.defs.instance`: SQLite by default,
PostgreSQL (psycopg2) when DAGSTER_PG_* says so, tested on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from claims_pipeline.defs import instance as instance_storage
from claims_pipeline.errors import ConfigurationError
from claims_pipeline_tests.dagster_dev import prepare_home
from claims_pipeline_tests.databases import fresh_database

PG_VARIABLES = [
    instance_storage.PG_URL,
    instance_storage.PG_HOST,
    instance_storage.PG_PORT,
    instance_storage.PG_USERNAME,
    instance_storage.PG_PASSWORD,
    instance_storage.PG_DB,
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml, with no DAGSTER_PG_* set."""
    for name in PG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
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


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_a_plain_postgres_url_is_given_to_dagster_with_psycopg2(scheme):
    environ = {instance_storage.PG_URL: f"{scheme}://dagster:pw@db.internal:5432/dagster"}
    assert instance_storage.postgres_url(environ) == (
        "postgresql+psycopg2://dagster:pw@db.internal:5432/dagster"
    )


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql+asyncpg", "mysql"])
def test_another_driver_is_refused_naming_the_variable_not_the_password(scheme):
    environ = {instance_storage.PG_URL: f"{scheme}://dagster:s3cret-pw@db:5432/dagster"}
    with pytest.raises(ConfigurationError, match=instance_storage.PG_URL) as raised:
        instance_storage.postgres_url(environ)
    assert "s3cret-pw" not in str(raised.value)
    assert "postgresql+psycopg2" in str(raised.value)


def test_the_url_is_built_from_host_user_password_and_database():
    environ = {
        instance_storage.PG_HOST: "db.internal",
        instance_storage.PG_USERNAME: "dagster",
        instance_storage.PG_PASSWORD: "p@ss/word",
        instance_storage.PG_DB: "dagster",
    }
    url = instance_storage.postgres_url(environ)
    parsed = sa.make_url(url)
    assert parsed.drivername == "postgresql+psycopg2"
    assert (parsed.username, parsed.password) == ("dagster", "p@ss/word")
    assert (parsed.host, parsed.port, parsed.database) == ("db.internal", 5432, "dagster")
    assert instance_storage.postgres_url(environ | {instance_storage.PG_PORT: "6543"}).endswith(
        "@db.internal:6543/dagster"
    )


def test_no_postgres_settings_means_none():
    assert instance_storage.postgres_url({}) is None
    assert instance_storage.postgres_url({instance_storage.PG_URL: "  "}) is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DAGSTER_PG_HOST": "db"}, "DAGSTER_PG_USERNAME and DAGSTER_PG_DB"),
        ({"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USERNAME": "u"}, "DAGSTER_PG_DB"),
        (
            {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USERNAME": "u", "DAGSTER_PG_DB": "d"}
            | {"DAGSTER_PG_PORT": "fivefour"},
            "DAGSTER_PG_PORT",
        ),
    ],
)
def test_incomplete_settings_name_what_is_missing(environ, named):
    with pytest.raises(ConfigurationError, match=named):
        instance_storage.postgres_url(environ)


def test_with_dagster_pg_url_runs_events_and_schedules_live_in_postgres(
    home, postgres_database, monkeypatch
):
    # A bare postgresql:// URL, as a cloud console shows it: SQLAlchemy 2.1 alone would pick
    # psycopg 3 for it.
    bare = postgres_database.set(drivername="postgresql").render_as_string(hide_password=False)
    monkeypatch.setenv(instance_storage.PG_URL, bare)
    with dg.DagsterInstance.get() as instance:
        assert storage_classes(instance) == (
            "PostgresRunStorage",
            "PostgresEventLogStorage",
            "PostgresScheduleStorage",
        )
        assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")
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


def test_sqlite_without_dagster_home_lands_in_the_demo_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert instance_storage.sqlite_base_dir(None) == str(tmp_path / ".dagster_home")
    assert instance_storage.sqlite_base_dir("/srv/dagster") == "/srv/dagster"
