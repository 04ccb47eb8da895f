"""A claim's life through the real assets: a seeded reference EHR edited after delivery, the
emulator over HTTP, the ledger, the checks a person sees, the CLI that releases a held claim,
and the nightly schedule that finds an edit 200 days back."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from claims_pipeline.delivery.ledger import ClaimState, DeliveryLedger
from claims_pipeline_tests.defs.conftest import TENANT_ID, YESTERDAY, running_pipeline


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    with running_pipeline(tmp_path, monkeypatch, days=2, encounters_per_day=12) as running:
        yield running


def ehr(pipeline) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{pipeline.data_dir.parent / 'ehr.sqlite'}")


def delivered_encounter(pipeline, day=YESTERDAY) -> tuple[int, str, str]:
    """(encounter id, claim key, NPI) of a claim the service holds for ``day``."""
    on_api = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}
    with ehr(pipeline).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id FROM encounters WHERE service_date = :d ORDER BY id"),
            {"d": day},
        ).scalars()
        for encounter_id in rows:
            key = f"REF-{encounter_id}"
            if key in on_api:
                return encounter_id, key, on_api[key]["provider_npi"]
    raise AssertionError("no delivered claim on that day")


def execute(pipeline, statement: str, **params) -> None:
    engine = ehr(pipeline)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def evaluate(schedule, tick):
    """The schedule's run requests at ``tick``, with the resources of the environment."""
    from claims_pipeline.defs.resources import build_resources

    with dg.build_schedule_context(
        scheduled_execution_time=tick, resources=build_resources()
    ) as context:
        return schedule(context)


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def ledger(pipeline) -> DeliveryLedger:
    return DeliveryLedger(f"sqlite:///{pipeline.data_dir / 'ledger.sqlite'}")


def test_a_provider_change_is_held_named_by_a_failing_check_and_released_by_the_cli(pipeline):
    assert pipeline.materialize(YESTERDAY).success
    encounter_id, key, old_npi = delivered_encounter(pipeline)
    with ehr(pipeline).connect() as conn:
        other_provider, new_npi = conn.execute(
            sa.text("SELECT id, npi FROM providers WHERE npi != :npi AND length(npi) = 10"),
            {"npi": old_npi},
        ).first()
    execute(
        pipeline,
        "UPDATE encounters SET provider_id = :p WHERE id = :e",
        p=other_provider,
        e=encounter_id,
    )
    requests = pipeline.emulator.stats()["requests_total"]

    result = pipeline.materialize(YESTERDAY)
    held = checks(result)["no_provider_changes_held"]
    assert not held.passed and held.severity == dg.AssetCheckSeverity.ERROR
    table = held.metadata["claims"].value
    assert key in table and old_npi in table and new_npi in table
    assert pipeline.emulator.stats()["requests_total"] == requests  # nothing sent
    assert pipeline.latest("claims_import", YESTERDAY)["held"] == 1
    assert {
        (c["provider_npi"], c["claim_submitter_identifier"]) for c in pipeline.emulator.claims()
    } >= {(old_npi, key)}
    assert (new_npi, key) not in {
        (c["provider_npi"], c["claim_submitter_identifier"]) for c in pipeline.emulator.claims()
    }

    listed = subprocess.run(
        [sys.executable, "-m", "claims_pipeline.cli", "claim", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert key in listed.stdout and "held" in listed.stdout
    subprocess.run(
        [sys.executable, "-m", "claims_pipeline.cli", "claim", "release", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = pipeline.materialize(YESTERDAY)
    assert checks(result)["no_provider_changes_held"].passed
    assert (new_npi, key) in {
        (c["provider_npi"], c["claim_submitter_identifier"]) for c in pipeline.emulator.claims()
    }
    entry = ledger(pipeline).lookup(TENANT_ID, [key])[key]
    assert (entry.state, entry.provider_npi) == (ClaimState.DELIVERED, new_npi)


@pytest.mark.parametrize("change", ["void", "delete", "move_out", "not_billable"])
def test_a_claim_the_ehr_withdraws_fails_the_check_in_the_run_that_sees_it(pipeline, change):
    assert pipeline.materialize(YESTERDAY).success
    encounter_id, key, _ = delivered_encounter(pipeline)
    if change == "void":
        execute(pipeline, "UPDATE encounters SET status = 'voided' WHERE id = :e", e=encounter_id)
    elif change == "delete":
        for table in ("charges", "diagnoses"):
            execute(pipeline, f"DELETE FROM {table} WHERE encounter_id = :e", e=encounter_id)
        execute(pipeline, "DELETE FROM encounters WHERE id = :e", e=encounter_id)
    elif change == "move_out":
        moved = YESTERDAY - timedelta(days=1)
        execute(
            pipeline,
            "UPDATE encounters SET service_date = :d WHERE id = :e",
            d=moved,
            e=encounter_id,
        )
        execute(
            pipeline,
            "UPDATE charges SET service_date_from = :d, service_date_to = :d "
            "WHERE encounter_id = :e",
            d=moved,
            e=encounter_id,
        )
    else:
        execute(pipeline, "UPDATE charges SET units = 0 WHERE encounter_id = :e", e=encounter_id)

    result = pipeline.materialize(YESTERDAY)
    assert result.success
    withdrawn = checks(result)["no_withdrawn_claims"]
    assert not withdrawn.passed and withdrawn.severity == dg.AssetCheckSeverity.WARN
    assert withdrawn.metadata["withdrawn"].value == 1
    assert key in withdrawn.metadata["claims"].value
    assert pipeline.latest("claims_import", YESTERDAY)["withdrawn"] == 1
    assert ledger(pipeline).lookup(TENANT_ID, [key])[key].state is ClaimState.WITHDRAWN

    if change == "move_out":  # syncing the new day re-sends it under the same claim
        claim_id = ledger(pipeline).lookup(TENANT_ID, [key])[key].claim_id
        assert pipeline.materialize(YESTERDAY - timedelta(days=1)).success
        entry = ledger(pipeline).lookup(TENANT_ID, [key])[key]
        assert (entry.state, entry.claim_id) == (ClaimState.DELIVERED, claim_id)
        assert entry.service_date == YESTERDAY - timedelta(days=1)
        on_api = [c for c in pipeline.emulator.claims() if c["claim_submitter_identifier"] == key]
        assert len(on_api) == 1
        line = on_api[0]["content"]["charge_lines"][0]
        assert line["service_date_from"] == (YESTERDAY - timedelta(days=1)).isoformat()


def test_a_wrong_path_fails_the_run_in_at_most_three_requests(pipeline, monkeypatch):
    monkeypatch.setenv("CLAIMS_API_URL", pipeline.emulator.url + "/api/v9")
    result = pipeline.materialize(YESTERDAY)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "CLAIMS_API_URL" in failure.event_specific_data.error.message
    assert pipeline.emulator.stats()["requests_total"] == 0  # 404s never reach the import
    requests = sum(
        1
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.asset_key == dg.AssetKey("claims_import")
    )
    assert requests == 0
    assert ledger(pipeline).count(TENANT_ID) == 0


@pytest.fixture
def long_history(tmp_path, monkeypatch):
    with running_pipeline(tmp_path, monkeypatch, days=210, encounters_per_day=2) as running:
        monkeypatch.setenv("CLAIMS_PARTITIONS_START", "2020-01-01")
        yield running


def test_an_edit_200_days_back_is_resynced_by_the_next_nightly_run(long_history):
    from claims_pipeline.defs.claims_sync.schedules import build_nightly_schedule

    pipeline = long_history
    old_day = YESTERDAY - timedelta(days=200)
    assert pipeline.materialize(old_day - timedelta(days=2), old_day + timedelta(days=2)).success
    encounter_id, key, _ = delivered_encounter(pipeline, old_day)
    execute(
        pipeline,
        "UPDATE charges SET line_amount = line_amount + 7 WHERE encounter_id = :e "
        "AND line_number = 1",
        e=encounter_id,
    )

    schedule = build_nightly_schedule("UTC", 7, old_day - timedelta(days=5))
    tick = datetime.combine(YESTERDAY + timedelta(days=1), time(2), UTC)
    requests = evaluate(schedule, tick)
    assert len(requests) == 2
    edits = requests[1]
    assert (
        edits.tags["dagster/asset_partition_range_start"],
        edits.tags["dagster/asset_partition_range_end"],
    ) == (old_day.isoformat(),) * 2

    before = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}[key]
    assert pipeline.materialize(old_day).success  # the run the schedule asked for
    after = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}[key]
    total = lambda claim: sum(line["monetary_amount"] for line in claim["content"]["charge_lines"])  # noqa: E731
    assert round(total(after) - total(before), 2) == 7
    assert pipeline.latest("claims_import", old_day)["updated"] == 1
    again = evaluate(schedule, tick)
    assert len(again) == 1  # synced: nothing older to do


def test_two_overlapping_runs_on_two_instances_end_equal_to_the_ehr(pipeline):
    """A nightly run and a backfill of the same day on two Dagster instances, the EHR edited
    between their extractions: the service and the ledger end with the later content."""
    import threading
    import time as clock

    import pyarrow.parquet as pq

    assert pipeline.materialize(YESTERDAY).success
    encounter_id, key, _ = delivered_encounter(pipeline)
    pipeline.emulator.set_faults(slow=1.0, slow_seconds=0.3)
    results = {}
    threads = []

    def run(name):
        with dg.DagsterInstance.ephemeral() as instance:
            results[name] = pipeline.materialize(YESTERDAY, instance=instance).success

    for fee in (11, 23):
        execute(
            pipeline,
            "UPDATE charges SET line_amount = line_amount + :f "
            "WHERE encounter_id = :e AND line_number = 1",
            f=fee,
            e=encounter_id,
        )
        threads.append(threading.Thread(target=run, args=(fee,)))
        threads[-1].start()
        clock.sleep(0.5)
    for thread in threads:
        thread.join(120)
    assert results == {11: True, 23: True}
    stored = pq.read_table(
        pipeline.data_dir / "claims" / f"{YESTERDAY.isoformat()}.parquet"
    ).to_pylist()
    latest = {row["claim_submitter_identifier"]: row for row in stored}
    on_api = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}
    assert set(on_api) == set(latest)
    for claim_key, row in latest.items():
        assert on_api[claim_key]["content"] == json.loads(row["payload"])
    entries = ledger(pipeline).lookup(TENANT_ID, list(latest))
    assert {k: e.content_hash for k, e in entries.items()} == {
        k: row["content_hash"] for k, row in latest.items()
    }
    with ehr(pipeline).connect() as conn:
        fee = conn.execute(
            sa.text("SELECT line_amount FROM charges WHERE encounter_id = :e AND line_number = 1"),
            {"e": encounter_id},
        ).scalar_one()
    line = on_api[key]["content"]["charge_lines"][0]
    assert round(float(line["monetary_amount"]), 2) == round(float(fee), 2)


@pytest.fixture
def ten_days(tmp_path, monkeypatch):
    with running_pipeline(tmp_path, monkeypatch, days=10, encounters_per_day=4) as running:
        yield running


def test_a_refused_claim_is_retried_after_its_day_leaves_the_window(ten_days, monkeypatch):
    from claims_pipeline.defs.claims_sync.schedules import build_nightly_schedule

    pipeline = ten_days
    old_day = YESTERDAY - timedelta(days=9)
    with ehr(pipeline).connect() as conn:
        keys = [
            f"REF-{i}"
            for i in conn.execute(
                sa.text("SELECT id FROM encounters WHERE service_date = :d"), {"d": old_day}
            ).scalars()
        ]
    pipeline.emulator.set_faults(reject_claims=keys)
    assert pipeline.materialize(old_day).success
    refused = pipeline.latest("claims_import", old_day)["rejected_by_api"]
    assert refused > 0
    unsent = ledger(pipeline).unsent(TENANT_ID)
    assert len(unsent) == refused and {u.service_date for u in unsent} == {old_day}
    key = unsent[0].claim_submitter_identifier

    schedule = build_nightly_schedule("UTC", 7, old_day - timedelta(days=30))
    tick = datetime.combine(YESTERDAY + timedelta(days=1), time(2), UTC)

    def requested():
        return evaluate(schedule, tick)

    monkeypatch.setenv("CLAIMS_MAX_DELIVERY_ATTEMPTS", "1")
    assert len(requested()) == 1  # the limit reached: it waits for a person
    monkeypatch.setenv("CLAIMS_MAX_DELIVERY_ATTEMPTS", "10")
    requests = requested()
    assert [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests[1:]
    ] == [(old_day.isoformat(), old_day.isoformat())]

    pipeline.emulator.set_faults()  # the service accepts them now
    assert pipeline.materialize(old_day).success
    assert ledger(pipeline).unsent(TENANT_ID) == []
    assert pipeline.latest("claims_import", old_day)["sent"] == refused
    story = subprocess.run(
        [sys.executable, "-m", "claims_pipeline.cli", "claim", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "delivered" in story and "rejected" in story
    assert len(requested()) == 1  # nothing left to retry
