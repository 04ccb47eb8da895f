"""A partition-range backfill launched the way the UI launches it: ``dagster dev`` (webserver +
daemon) on loopback with the project's dagster.yaml in a temporary DAGSTER_HOME, the backfill
posted to the webserver's GraphQL API, a seeded SQLite EHR and the emulator over HTTP.

Runs once with the instance on SQLite (the default) and once on PostgreSQL (DAGSTER_PG_URL, a
fresh database per module). Each takes about a minute: the backfill daemon looks at
backfills every 30 s, and a backfill needs two looks (launch the run, see it finished).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)

from claims_pipeline.emulator import RunningEmulator
from claims_pipeline_tests.dagster_dev import (
    PROJECT_DAGSTER_YAML,
    DagsterDev,
    prepare_home,
    running_dagster_dev,
    seeded_environment,
)
from claims_pipeline_tests.databases import dialect_param, fresh_database

# `dagster dev` with its daemon, on SQLite and on PostgreSQL: over a minute.
pytestmark = pytest.mark.slow

POSTGRES_DAGSTER_YAML = PROJECT_DAGSTER_YAML.parent / "docs" / "examples" / "dagster-postgres.yaml"

API_KEY = "ui-backfill-key-5d1e7a"
TENANT_ID = 57
ASSETS = ["ehr_encounters", "claims", "claim_rejections", "claims_import"]
# Days well before today in any timezone, so every one is a partition already.
LAST_DAY = date.today() - timedelta(days=3)
DAYS = [LAST_DAY - timedelta(days=offset) for offset in (2, 1, 0)]

LATEST_MATERIALIZATION = """
query Latest($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        runId
        partition
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""

RUN_EVENTS = """
query RunEvents($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MaterializationEvent {
          assetKey { path }
          partition
          metadataEntries { label ... on IntMetadataEntry { intValue } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

INSTANCE_INFO = "query { instance { info } }"


@dataclass
class Backfilled:
    storage: str
    dev: DagsterDev
    emulator: RunningEmulator
    backfill: dict[str, Any]
    postgres: sa.URL | None


def figures(metadata_entries: list[dict[str, Any]]) -> dict[str, int]:
    return {e["label"]: e["intValue"] for e in metadata_entries if "intValue" in e}


def service_day(claim: dict[str, Any]) -> str:
    return claim["content"]["charge_lines"][0]["service_date_from"]


@pytest.fixture(scope="module")
def dagster_postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.URL]:
    """A fresh database for Dagster's storage (dropped afterwards), as a psycopg2 URL."""
    with fresh_database("postgresql", tmp_path_factory.mktemp("pg")) as url:
        yield url.set(drivername="postgresql+psycopg2")  # dagster-postgres drives psycopg2


@pytest.fixture(scope="module", params=[dialect_param("sqlite"), dialect_param("postgresql")])
def backfilled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backfilled]:
    """A 3-day backfill of every asset, launched through GraphQL and waited for."""
    storage = request.param
    postgres = request.getfixturevalue("dagster_postgres_url") if storage == "postgresql" else None
    root = tmp_path_factory.mktemp(f"ui-{storage}")
    with seeded_environment(root, DAYS, api_key=API_KEY, tenant_id=TENANT_ID) as (env, emulator):
        if postgres is not None:
            env["DAGSTER_PG_URL"] = postgres.render_as_string(hide_password=False)
            prepare_home(root / "dagster_home", POSTGRES_DAGSTER_YAML)
        with running_dagster_dev(root / "dagster_home", env) as dev:
            backfill_id = dev.launch_backfill(
                ASSETS, [day.isoformat() for day in DAYS], tags={"claims_pipeline/trigger": "ui"}
            )
            backfill = dev.wait_for_backfill(backfill_id, timeout=180)
            yield Backfilled(storage, dev, emulator, backfill, postgres)


def test_the_backfill_succeeds_in_one_run_over_the_whole_range(backfilled):
    backfill, dev = backfilled.backfill, backfilled.dev
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, (
        f"{backfill['status']}: {backfill['error']}\n{dev.log_tail()}"
    )
    assert backfill["error"] is None
    (run,) = backfill["runs"]  # BackfillPolicy.single_run(): one run for the three days
    assert run["status"] == "SUCCESS"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags[BACKFILL_ID_TAG] == backfill["id"]
    assert tags[ASSET_PARTITION_RANGE_START_TAG] == DAYS[0].isoformat()
    assert tags[ASSET_PARTITION_RANGE_END_TAG] == DAYS[-1].isoformat()


def test_each_day_shows_its_own_delivery_figures_matching_the_emulator(backfilled):
    dev = backfilled.dev
    on_api = Counter(service_day(claim) for claim in backfilled.emulator.claims())
    (run,) = backfilled.backfill["runs"]
    sent = {}
    for day in DAYS:
        data = dev.graphql(
            LATEST_MATERIALIZATION, {"path": ["claims_import"], "partition": str(day)}
        )
        (latest,) = data["assetOrError"]["assetMaterializations"]
        assert latest["runId"] == run["runId"] and latest["partition"] == day.isoformat()
        day_figures = figures(latest["metadataEntries"])
        sent[day.isoformat()] = day_figures["sent"]
        assert day_figures["unchanged"] == 0 and day_figures["pending"] == 0
    assert sent == dict(on_api), "per-day 'sent' differs from the claims the API holds"
    assert len(set(sent.values())) == len(DAYS), f"the days should differ: {sent}"
    assert sum(sent.values()) == backfilled.emulator.stats()["claims_stored"]


def test_the_event_log_holds_a_materialization_per_asset_and_day(backfilled):
    dev = backfilled.dev
    (run,) = backfilled.backfill["runs"]
    events, cursor = [], None
    while True:
        page = dev.graphql(RUN_EVENTS, {"runId": run["runId"], "cursor": cursor})["logsForRun"]
        assert page["__typename"] == "EventConnection", page
        events += [e for e in page["events"] if e["__typename"] == "MaterializationEvent"]
        cursor = page["cursor"]
        if not page["hasMore"]:
            break
    partitions_by_asset = {
        asset: {e["partition"] for e in events if e["assetKey"]["path"] == [asset]}
        for asset in ASSETS
    }
    assert partitions_by_asset == dict.fromkeys(ASSETS, {day.isoformat() for day in DAYS})

    # The last claims_import event of each day carries that day's own figures.
    on_api = Counter(service_day(claim) for claim in backfilled.emulator.claims())
    last_per_day = {
        e["partition"]: figures(e["metadataEntries"])
        for e in events
        if e["assetKey"]["path"] == ["claims_import"]
    }
    assert {day: f["sent"] for day, f in last_per_day.items()} == dict(on_api)


def test_the_instance_stores_where_the_environment_says(backfilled):
    dev = backfilled.dev
    info = dev.graphql(INSTANCE_INFO)["instance"]["info"]
    runs_db = dev.home / "history" / "runs.db"
    (run,) = backfilled.backfill["runs"]
    if backfilled.storage == "sqlite":
        assert "SqliteRunStorage" in info and "SqliteEventLogStorage" in info
        assert runs_db.exists()
        return
    assert "PostgresRunStorage" in info and "PostgresEventLogStorage" in info
    assert "PostgresScheduleStorage" in info
    assert not runs_db.exists()
    engine = sa.create_engine(backfilled.postgres, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            stored_run = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_id = :run_id"), {"run_id": run["runId"]}
            ).scalar_one()
            materialized = conn.execute(
                sa.text(
                    "SELECT count(DISTINCT partition) FROM event_logs "
                    "WHERE run_id = :run_id AND dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "AND asset_key = :key"
                ),
                {"run_id": run["runId"], "key": '["claims_import"]'},
            ).scalar_one()
            backfills = conn.execute(sa.text("SELECT count(*) FROM bulk_actions")).scalar_one()
    finally:
        engine.dispose()
    assert stored_run == "SUCCESS"
    assert materialized == len(DAYS)
    assert backfills == 1


def test_the_api_key_is_nowhere_in_the_instance(backfilled):
    """Run config, event log and captured logs: the key reaches the steps only by environment."""
    key = API_KEY.encode()
    leaked = [
        path.relative_to(backfilled.dev.home)
        for path in backfilled.dev.home.rglob("*")
        if path.is_file() and key in path.read_bytes()
    ]
    assert leaked == []
    if backfilled.postgres is None:
        return
    engine = sa.create_engine(backfilled.postgres, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            hits = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM event_logs WHERE event LIKE :pattern)"
                    " + (SELECT count(*) FROM runs WHERE run_body LIKE :pattern)"
                ),
                {"pattern": f"%{API_KEY}%"},
            ).scalar_one()
    finally:
        engine.dispose()
    assert hits == 0
