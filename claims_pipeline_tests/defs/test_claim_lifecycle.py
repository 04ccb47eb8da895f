"""A claim's life through the real assets: a seeded reference EHR edited after delivery, the
emulator over HTTP, the ledger, the checks a person sees, the CLI that releases a held claim,
and the nightly schedule that finds an edit 200 days back."""

from __future__ import annotations

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
    from claims_pipeline.defs.resources import build_resources
    from claims_pipeline.defs.schedules import build_nightly_schedule

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
    requests = schedule(
        dg.build_schedule_context(scheduled_execution_time=tick, resources=build_resources())
    )
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
    again = schedule(
        dg.build_schedule_context(scheduled_execution_time=tick, resources=build_resources())
    )
    assert len(again) == 1  # synced: nothing older to do
