"""End to end: the real assets, a seeded SQLite EHR and the emulator over HTTP on loopback."""

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import dagster as dg
import pyarrow.parquet as pq
from sqlalchemy import select

from claims_pipeline.delivery.ledger import DeliveryLedger, claim_ledger
from claims_pipeline.demo.seed import DEFECT_REASONS
from claims_pipeline_tests.defs.conftest import API_KEY, YESTERDAY


def stored(pipeline, asset, day):
    return pq.read_table(pipeline.data_dir / asset / f"{day.isoformat()}.parquet").to_pylist()


def test_one_partition_posts_valid_claims(pipeline):
    result = pipeline.materialize(YESTERDAY)
    assert result.success

    encounters = {row["encounter_id"] for row in stored(pipeline, "ehr_encounters", YESTERDAY)}
    rejected = stored(pipeline, "claim_rejections", YESTERDAY)
    claims = stored(pipeline, "claims", YESTERDAY)
    assert claims and len(claims) + len(rejected) == len(encounters)
    on_api = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}
    assert set(on_api) == {c["claim_submitter_identifier"] for c in claims}
    for claim in claims:  # the API holds exactly the stored payload
        assert on_api[claim["claim_submitter_identifier"]]["content"] == json.loads(
            claim["payload"]
        )

    figures = pipeline.latest("claims_import", YESTERDAY)
    assert figures["sent"] == len(claims) and figures["unchanged"] == 0
    assert figures["rejected_by_validation"] == len(rejected)
    assert figures["encounters"] == len(encounters)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "rejection_rate_within_limit": True,
        "claim_keys_unique": True,
        "encounters_conserved": True,
        "valid_claims_acknowledged": True,
        "no_provider_changes_held": True,
        "no_withdrawn_claims": True,
        "filing_deadlines_ahead": True,
    }


def test_exactly_the_planted_defects_are_rejected_for_their_reason(pipeline):
    first = YESTERDAY - timedelta(days=2)
    assert pipeline.materialize(first, YESTERDAY).success
    days = [first + timedelta(days=i) for i in range(3)]
    rejected = {
        row["encounter_id"]: row
        for day in days
        for row in stored(pipeline, "claim_rejections", day)
    }
    assert pipeline.seeded.defects  # the demo data plants some
    assert set(rejected) == set(pipeline.seeded.defects)  # and no clean encounter is rejected
    for encounter_id, defect in pipeline.seeded.defects.items():
        assert rejected[encounter_id]["reason_codes"].split(",") == [DEFECT_REASONS[defect]]
        assert rejected[encounter_id]["code_set"].startswith("ICD-10-CM")


def test_the_second_run_sends_nothing(pipeline):
    assert pipeline.materialize(YESTERDAY).success
    requests = pipeline.emulator.stats()["requests_total"]
    assert pipeline.materialize(YESTERDAY).success
    assert pipeline.emulator.stats()["requests_total"] == requests
    figures = pipeline.latest("claims_import", YESTERDAY)
    assert figures["sent"] == 0 and figures["unchanged"] > 0


def test_a_ranged_run_records_each_day_with_its_own_figures(pipeline):
    first = YESTERDAY - timedelta(days=2)
    assert pipeline.materialize(first, YESTERDAY).success
    days = [first + timedelta(days=i) for i in range(3)]
    per_day = [pipeline.latest("claims_import", day) for day in days]
    claims_per_day = [len(stored(pipeline, "claims", day)) for day in days]
    assert [f["sent"] for f in per_day] == claims_per_day
    assert len(pipeline.emulator.claims()) == sum(claims_per_day)
    assert all(
        f["encounters"] == pipeline.latest("claims", d)["encounters"] for f, d in zip(per_day, days)
    )


def test_a_missing_api_key_fails_the_run_naming_the_variable(pipeline, monkeypatch):
    monkeypatch.delenv("CLAIMS_API_KEY")
    try:
        result = pipeline.materialize(YESTERDAY)
        failed = not result.success
        message = " ".join(
            str(e.event_specific_data.error.message)
            for e in result.all_events
            if e.is_failure and getattr(e.event_specific_data, "error", None)
        )
    except dg.DagsterError as error:  # raised while resolving config at launch
        failed, message = True, str(error)
    assert failed and "CLAIMS_API_KEY" in message
    assert pipeline.emulator.stats()["requests_total"] == 0


def test_the_rejection_gate_blocks_posting(pipeline, monkeypatch):
    monkeypatch.setenv("CLAIMS_MAX_REJECTION_RATE", "0.0")
    result = pipeline.materialize(YESTERDAY - timedelta(days=2), YESTERDAY)
    rate = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "rejection_rate_within_limit"
    )
    assert not rate.passed
    assert pipeline.emulator.stats()["requests_total"] == 0
    assert not (pipeline.data_dir / "claims_import").exists()


def test_dry_run_sends_nothing_and_writes_the_payloads(pipeline):
    result = pipeline.materialize(
        YESTERDAY, run_config={"ops": {"claims_import": {"config": {"dry_run": True}}}}
    )
    assert result.success
    assert pipeline.emulator.stats()["requests_total"] == 0
    files = list((pipeline.data_dir / "claims_import_dry_run").glob("*.jsonl"))
    bodies = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert sum(len(b["claims"]) for b in bodies) == len(stored(pipeline, "claims", YESTERDAY))
    assert API_KEY not in files[0].read_text()
    assert result.asset_materializations_for_node("claims_import") == []


def test_a_dry_run_after_a_delivery_changes_nothing_it_reports(pipeline):
    assert pipeline.materialize(YESTERDAY).success
    before = pipeline.latest("claims_import", YESTERDAY)
    results_file = pipeline.data_dir / "claims_import" / f"{YESTERDAY.isoformat()}.parquet"
    results_bytes = results_file.read_bytes()
    ledger = DeliveryLedger(f"sqlite:///{pipeline.data_dir / 'ledger.sqlite'}")
    with ledger.engine.connect() as conn:
        ledger_rows = sorted(conn.execute(select(claim_ledger)).all())

    def materializations():
        return pipeline.instance.fetch_materializations(
            dg.AssetKey("claims_import"), limit=1000
        ).records

    count = materializations()
    result = pipeline.materialize(
        YESTERDAY,
        run_config={"ops": {"claims_import": {"config": {"dry_run": True, "force_resend": True}}}},
    )
    assert result.success
    assert pipeline.latest("claims_import", YESTERDAY) == before
    assert results_file.read_bytes() == results_bytes
    with ledger.engine.connect() as conn:
        assert sorted(conn.execute(select(claim_ledger)).all()) == ledger_rows
    assert len(materializations()) == len(count)
    ledger.dispose()


def test_definitions_validate():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "claims_pipeline.definitions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Validation successful" in completed.stdout + completed.stderr


def test_rejections_and_metadata_show_payer_provider_and_dollars(pipeline):
    first = YESTERDAY - timedelta(days=2)
    assert pipeline.materialize(first, YESTERDAY).success
    rejected = [
        row
        for day in (first + timedelta(days=i) for i in range(3))
        for row in stored(pipeline, "claim_rejections", day)
    ]
    assert rejected
    lines = {}
    for day in (first + timedelta(days=i) for i in range(3)):
        for line in stored(pipeline, "ehr_encounters", day):
            lines.setdefault(line["encounter_id"], []).append(line)
    for row in rejected:
        own = lines[row["encounter_id"]]
        assert row["payer_name"] == own[0]["payer_name"]
        assert row["provider_npi"] == own[0]["provider_npi"]
        if all(line["line_amount"] is not None for line in own):
            assert Decimal(row["billed_amount"]) == sum(
                Decimal(line["line_amount"]) for line in own
            )
    result = pipeline.instance.fetch_materializations(
        dg.AssetKey("claim_rejections"), limit=10
    ).records
    tables = [r.event_log_entry.asset_materialization.metadata for r in result]
    by_payer = next(m["by_payer"].value for m in tables if "by_payer" in m)
    assert "held_back_usd" in by_payer and "rejection_rate" in by_payer
    payers = {row["payer_name"] for row in rejected if row["payer_name"]}
    assert all(payer in by_payer for payer in payers)
