"""Delivery through every fault the emulator can inject, and a run killed mid-delivery:
the API ends up holding every valid claim exactly once, with its latest content."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value

from claims_pipeline_tests.defs.conftest import YESTERDAY, running_pipeline


def stored_claims(pipeline, days):
    claims = {}
    for day in days:
        path = pipeline.data_dir / "claims" / f"{day.isoformat()}.parquet"
        for row in pq.read_table(path).to_pylist():
            claims[row["claim_submitter_identifier"]] = json.loads(row["payload"])
    return claims


def delivered(pipeline, days, outcome):
    keys = set()
    for day in days:
        path = pipeline.data_dir / "claims_import" / f"{day.isoformat()}.parquet"
        keys |= {
            r["claim_submitter_identifier"]
            for r in pq.read_table(path).to_pylist()
            if r["outcome"] == outcome
        }
    return keys


def assert_api_holds_exactly(pipeline, claims):
    on_api = pipeline.emulator.claims()
    keys = [c["claim_submitter_identifier"] for c in on_api]
    assert len(keys) == len(set(keys)) == len(claims)
    assert {c["claim_submitter_identifier"]: c["content"] for c in on_api} == claims


def test_ten_days_through_429_500_dropped_and_slow_responses(tmp_path, monkeypatch):
    with running_pipeline(tmp_path, monkeypatch, days=10, encounters_per_day=25) as pipeline:
        monkeypatch.setenv("CLAIMS_BATCH_SIZE", "10")
        pipeline.emulator.set_faults(
            seed=20261128,
            status_429=0.10,
            status_500=0.10,
            drop_after_commit=0.05,
            slow=0.02,
            slow_seconds=0.5,
            retry_after_seconds=1,
        )
        first = YESTERDAY - timedelta(days=9)
        result = pipeline.materialize(first, YESTERDAY)
        assert result.success
        days = [first + timedelta(days=i) for i in range(10)]
        claims = stored_claims(pipeline, days)
        assert_api_holds_exactly(pipeline, claims)
        stats = pipeline.emulator.stats()
        assert sum(stats["faults_fired"].values()) > 0  # the faults really happened
        assert stats["claims_received"] <= 1.3 * len(claims)
        figures = [pipeline.latest("claims_import", day) for day in days]
        assert sum(f["sent"] for f in figures) == len(claims)


@pytest.mark.slow  # a real process killed mid-delivery, then two more runs: ~2 min
def test_a_run_killed_mid_delivery_and_rerun_sends_each_claim_once(tmp_path, monkeypatch):
    with running_pipeline(tmp_path, monkeypatch, days=3, encounters_per_day=40) as pipeline:
        first = YESTERDAY - timedelta(days=2)
        days = [first + timedelta(days=i) for i in range(3)]
        batch_size, in_flight = 5, 4
        monkeypatch.setenv("CLAIMS_BATCH_SIZE", str(batch_size))
        monkeypatch.setenv("CLAIMS_MAX_IN_FLIGHT", str(in_flight))
        pipeline.emulator.set_faults(slow=1.0, slow_seconds=0.3)
        home = tmp_path / "dagster_home"
        home.mkdir()
        command = [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "claims_pipeline.definitions",
            "--select",
            "*",
            "--partition-range",
            f"{first.isoformat()}...{YESTERDAY.isoformat()}",
        ]
        process = subprocess.Popen(
            command,
            env=os.environ | {"DAGSTER_HOME": str(home)},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while pipeline.emulator.stats()["claims_stored"] < 30:
                assert process.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "delivery never started"
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        time.sleep(1.0)  # requests in flight at the kill finish on the server side
        stored_before = {c["claim_submitter_identifier"] for c in pipeline.emulator.claims()}

        pipeline.emulator.set_faults()
        assert pipeline.materialize(first, YESTERDAY).success
        claims = stored_claims(pipeline, days)
        assert len(stored_before) < len(claims), "the kill came after delivery had finished"
        assert_api_holds_exactly(pipeline, claims)
        resent = delivered(pipeline, days, "sent") & stored_before
        assert len(resent) <= in_flight * batch_size

        requests = pipeline.emulator.stats()["requests_total"]
        assert pipeline.materialize(first, YESTERDAY).success  # and once more: nothing to send
        assert pipeline.emulator.stats()["requests_total"] == requests


def test_changing_one_charge_line_resends_exactly_that_claim(pipeline):
    assert pipeline.materialize(YESTERDAY).success
    before = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}
    key = sorted(before)[0]
    engine = sa.create_engine(os.environ["EHR_DATABASE_URL"])
    with engine.begin() as conn:
        charge = conn.execute(
            sa.text("SELECT MIN(id) FROM charges WHERE encounter_id = :encounter"),
            {"encounter": int(key.removeprefix("REF-"))},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE charges SET line_amount = line_amount + 10 WHERE id = :id"),
            {"id": charge},
        )
    engine.dispose()
    assert pipeline.materialize(YESTERDAY).success
    assert pipeline.latest("claims_import", YESTERDAY)["sent"] == 1
    after = {c["claim_submitter_identifier"]: c for c in pipeline.emulator.claims()}
    assert after[key]["id"] == before[key]["id"]
    assert after[key]["content"] != before[key]["content"]
    assert {k: v["content"] for k, v in after.items() if k != key} == {
        k: v["content"] for k, v in before.items() if k != key
    }


def test_a_wrong_key_fails_within_one_request_and_never_reaches_the_event_log(
    pipeline, monkeypatch
):
    wrong_key = "wrong-key-7d2e91c4aa"
    monkeypatch.setenv("CLAIMS_API_KEY", wrong_key)
    result = pipeline.materialize(YESTERDAY)
    assert not result.success
    assert pipeline.emulator.stats()["requests_total"] == 1
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "CLAIMS_API_KEY" in failure.step_failure_data.error.message
    logged = [
        serialize_value(entry)
        for run in pipeline.instance.get_runs()
        for entry in pipeline.instance.all_logs(run.run_id)
    ]
    assert logged and not any(wrong_key in text for text in logged)
    assert all(
        wrong_key not in str(run.run_config) + str(run.tags) for run in pipeline.instance.get_runs()
    )
