"""The alert sensors, evaluated through Dagster's own sensor testing API against runs of the
real assets (seeded EHR, live emulator), sending to local receivers."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from claims_pipeline.alerts.destinations import ALERT_SETTINGS
from claims_pipeline.defs.alerts.sensors import (
    claims_check_failure_alert,
    claims_run_failure_alert,
    unsettled_day_alert,
)
from claims_pipeline.defs.resources import ClaimsStorage
from claims_pipeline.practices import Practice
from claims_pipeline.sources import reference
from claims_pipeline_tests.alerts.receivers import HttpReceiver, http_receiver, smtp_receiver
from claims_pipeline_tests.defs.conftest import API_KEY, YESTERDAY, Pipeline, running_pipeline
from claims_pipeline_tests.leak_scan import needles_from_ehr

WRONG_KEY = "wrong-key-5d1c7e2b90aa"
#: The sensor of the practice the environment configures (plain asset keys).
claims_unsettled_day_alert = unsettled_day_alert(Practice(None, "UTC", YESTERDAY, 7))
UI = "http://dagster.test:3000"


@pytest.fixture(autouse=True)
def no_alert_settings(monkeypatch):
    for setting in ALERT_SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)


@pytest.fixture
def webhook(monkeypatch):
    with http_receiver() as receiver:
        monkeypatch.setenv("CLAIMS_ALERT_WEBHOOK_URL", f"{receiver.url}/hook")
        monkeypatch.setenv("CLAIMS_UI_BASE_URL", UI)
        yield receiver


def bodies(receiver: HttpReceiver, path: str = "/hook") -> list[dict]:
    return [request.json() for request in receiver.requests if request.path == path]


@dataclass
class WithEhr(Pipeline):
    ehr_url: str = ""

    def with_instance(self, instance: dg.DagsterInstance) -> WithEhr:
        return replace(self, instance=instance)


def finalized_keys(pipeline: WithEhr, day, count: int) -> list[str]:
    """Claim keys of ``count`` billable encounters of ``day`` without a planted defect."""
    e = reference.encounters.c
    engine = sa.create_engine(pipeline.ehr_url)
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(e.id)
            .where(e.status == reference.BILLABLE_STATUS, e.service_date == day)
            .order_by(e.id)
        ).scalars()
        defects = set(pipeline.seeded.defects)
        keys = [f"{reference.CLAIM_ID_PREFIX}{i}" for i in ids if str(i) not in defects]
    engine.dispose()
    return keys[:count]


def run_failure_context(pipeline: Pipeline, result: dg.ExecuteInProcessResult):
    return dg.build_run_status_sensor_context(
        sensor_name=claims_run_failure_alert.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=pipeline.instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()


def sensor_context(pipeline: Pipeline, cursor: str | None):
    return dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources={"claims_storage": ClaimsStorage(data_dir=str(pipeline.data_dir))},
    )


def evaluate(sensor: dg.SensorDefinition, pipeline: Pipeline, cursor: str | None):
    """One tick; (its skip message, the cursor it leaves)."""
    context = sensor_context(pipeline, cursor)
    result = sensor(context)
    message = result.skip_message if isinstance(result, dg.SkipReason) else None
    return message, context.cursor


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The pipeline on an instance with Dagster's default storage, SQLite files with one shard
    per run (as ``dagster dev`` and a fresh $DAGSTER_HOME have): what a sensor may query across
    runs there is narrower than on the ephemeral in-memory instance."""
    (tmp_path / "dagster_home").mkdir()
    with (
        running_pipeline(tmp_path, monkeypatch, days=3, encounters_per_day=30) as running,
        dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance,
    ):
        yield WithEhr(
            **{f.name: getattr(running, f.name) for f in fields(Pipeline)},
            ehr_url=f"sqlite:///{tmp_path / 'ehr.sqlite'}",
        ).with_instance(instance)


def test_a_failed_run_is_reported_with_its_days_step_and_link(pipeline, webhook, monkeypatch):
    first = YESTERDAY - timedelta(days=1)
    monkeypatch.setenv("CLAIMS_API_KEY", WRONG_KEY)
    result = pipeline.materialize(first, YESTERDAY)
    assert not result.success

    claims_run_failure_alert(run_failure_context(pipeline, result))

    (body,) = bodies(webhook)
    run_id = result.dagster_run.run_id
    assert body["event"] == "run_failed"
    assert body["day"] == f"{first.isoformat()}...{YESTERDAY.isoformat()}"
    assert body["run_url"] == f"{UI}/runs/{run_id}"
    assert body["details"]["failed steps"] == "claims_import"
    assert body["details"]["error"].startswith("Failure: The claims-import API refused")
    assert "CLAIMS_API_KEY" in body["details"]["error"]  # the error names the setting...
    assert WRONG_KEY not in json.dumps(body)  # ...never its value


def test_without_a_destination_a_failed_run_is_only_noted(pipeline, monkeypatch):
    monkeypatch.setenv("CLAIMS_API_KEY", WRONG_KEY)
    result = pipeline.materialize(YESTERDAY)
    assert not result.success
    skipped = claims_run_failure_alert(run_failure_context(pipeline, result))
    assert "alerts are off" in skipped.skip_message


def test_a_failed_blocking_check_is_reported_once_and_passing_ones_not(
    pipeline, webhook, monkeypatch
):
    message, cursor = evaluate(claims_check_failure_alert, pipeline, None)
    assert message.startswith("Started")
    monkeypatch.setenv("CLAIMS_MAX_REJECTION_RATE", "0")  # the planted defects exceed it
    first = YESTERDAY - timedelta(days=2)
    result = pipeline.materialize(first, YESTERDAY)
    assert not result.success

    message, cursor = evaluate(claims_check_failure_alert, pipeline, cursor)

    (body,) = bodies(webhook)
    assert message == "Alerted on 1 failed check evaluation(s)."
    assert body["event"] == "asset_check_failed"
    assert body["details"]["check"] == "rejection_rate_within_limit"
    assert "blocking check" in body["title"]
    assert body["day"] == f"{first.isoformat()}...{YESTERDAY.isoformat()}"
    assert body["run_url"] == f"{UI}/runs/{result.dagster_run.run_id}"
    assert float(body["details"]["rejection_rate"]) > 0
    assert body["details"]["max_rejection_rate"] == "0.0"
    # the next tick has nothing new
    assert evaluate(claims_check_failure_alert, pipeline, cursor)[0] == (
        "No run has ended since the last tick."
    )
    assert len(bodies(webhook)) == 1


def test_a_failed_non_blocking_check_is_reported_too(pipeline, webhook):
    @dg.asset(
        name="encounter_counts",
        partitions_def=dg.DailyPartitionsDefinition("2026-01-01"),
        check_specs=[dg.AssetCheckSpec("counts_match", asset="encounter_counts")],
    )
    def encounter_counts():
        yield dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name="counts_match",
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"missing": 3},
                )
            ]
        )

    _, cursor = evaluate(claims_check_failure_alert, pipeline, None)
    assert dg.materialize(
        [encounter_counts], instance=pipeline.instance, partition_key="2026-11-30"
    ).success
    evaluate(claims_check_failure_alert, pipeline, cursor)

    (body,) = bodies(webhook)
    assert body["title"] == (
        "[claims_pipeline] encounter_counts: check counts_match failed (2026-11-30)"
    )
    assert body["details"]["severity"] == "WARN"
    assert body["counts"] == {"missing": 3}


def test_a_day_with_claims_refused_by_the_service_is_reported_with_their_keys(pipeline, webhook):
    first = YESTERDAY - timedelta(days=2)
    refused = finalized_keys(pipeline, first + timedelta(days=1), 2)
    _, cursor = evaluate(claims_unsettled_day_alert, pipeline, None)
    pipeline.emulator.set_faults(reject_claims=refused)
    result = pipeline.materialize(first, YESTERDAY)
    assert result.success

    message, cursor = evaluate(claims_unsettled_day_alert, pipeline, cursor)

    # one alert, for the one day: the range's totals (logged on each day) are not counted again
    (body,) = bodies(webhook)
    assert message == "Alerted on 1 day(s) with unsettled claims."
    assert body["event"] == "claims_need_attention"
    assert body["day"] == (first + timedelta(days=1)).isoformat()
    assert body["counts"] == {"rejected_by_api": 2}
    assert body["claim_keys"] == {"rejected": sorted(refused)}
    assert body["run_url"] == f"{UI}/runs/{result.dagster_run.run_id}"
    assert evaluate(claims_unsettled_day_alert, pipeline, cursor)[0] == (
        "No new claims_import result."
    )


def test_held_and_withdrawn_counts_are_read_and_a_missing_entry_is_zero(pipeline, webhook):
    _, cursor = evaluate(claims_unsettled_day_alert, pipeline, None)
    for day, metadata in {
        "2026-11-28": {"sent": 10, "rejected_by_api": 0},
        "2026-11-29": {"sent": 9, "held": 2, "withdrawn": 1},
    }.items():
        pipeline.instance.report_runless_asset_event(
            dg.AssetMaterialization("claims_import", partition=day, metadata=metadata)
        )

    message, _ = evaluate(claims_unsettled_day_alert, pipeline, cursor)

    (body,) = bodies(webhook)
    assert message == "Alerted on 1 day(s) with unsettled claims."
    assert body["day"] == "2026-11-29"
    assert body["counts"] == {"held": 2, "withdrawn": 1}
    assert body["claim_keys"] == {}  # no stored results for that day: counts only


def test_when_no_destination_is_reached_the_event_is_tried_again(pipeline, monkeypatch):
    _, cursor = evaluate(claims_unsettled_day_alert, pipeline, None)
    pipeline.instance.report_runless_asset_event(
        dg.AssetMaterialization("claims_import", partition="2026-11-29", metadata={"pending": 4})
    )
    with http_receiver(status=503) as down:
        monkeypatch.setenv("CLAIMS_ALERT_WEBHOOK_URL", f"{down.url}/hook")
        message, kept = evaluate(claims_unsettled_day_alert, pipeline, cursor)
        assert len(down.requests) == 1
    assert "retrying" in message
    assert kept == cursor
    with http_receiver() as up:
        monkeypatch.setenv("CLAIMS_ALERT_WEBHOOK_URL", f"{up.url}/hook")
        message, moved = evaluate(claims_unsettled_day_alert, pipeline, kept)
        (body,) = bodies(up)
    assert body["counts"] == {"pending": 4}
    assert moved != cursor


def test_without_a_destination_the_cursor_moves_on_silently(pipeline):
    _, cursor = evaluate(claims_unsettled_day_alert, pipeline, None)
    pipeline.instance.report_runless_asset_event(
        dg.AssetMaterialization("claims_import", partition="2026-11-29", metadata={"pending": 4})
    )
    message, moved = evaluate(claims_unsettled_day_alert, pipeline, cursor)
    assert message.startswith("1 day(s) with unsettled claims. No alert destination")
    assert int(moved) > int(cursor)


def test_no_payload_of_any_destination_holds_phi_or_a_key(pipeline, monkeypatch):
    """Every kind of alert, to every destination, scanned for every patient's name, date of
    birth, member id and address in the EHR, and for the right and the wrong API key."""
    first = YESTERDAY - timedelta(days=2)
    refused = finalized_keys(pipeline, first, 3)
    with http_receiver() as receiver, smtp_receiver() as mail:
        for name, value in {
            "CLAIMS_ALERT_WEBHOOK_URL": f"{receiver.url}/hook",
            "CLAIMS_ALERT_SLACK_WEBHOOK_URL": f"{receiver.url}/slack-hook",
            "CLAIMS_ALERT_SLACK_TOKEN": "xoxb-test",
            "CLAIMS_ALERT_SLACK_CHANNEL": "#billing",
            "CLAIMS_ALERT_SLACK_API_URL": f"{receiver.url}/slack-api/",
            "CLAIMS_ALERT_TEAMS_WEBHOOK_URL": f"{receiver.url}/teams",
            "CLAIMS_ALERT_SMTP_HOST": mail.host,
            "CLAIMS_ALERT_SMTP_PORT": str(mail.port),
            "CLAIMS_ALERT_SMTP_SECURITY": "none",
            "CLAIMS_ALERT_SMTP_FROM": "dagster@clinic.example",
            "CLAIMS_ALERT_SMTP_TO": "billing@clinic.example",
            "CLAIMS_UI_BASE_URL": UI,
        }.items():
            monkeypatch.setenv(name, value)
        _, check_cursor = evaluate(claims_check_failure_alert, pipeline, None)
        _, day_cursor = evaluate(claims_unsettled_day_alert, pipeline, None)

        pipeline.emulator.set_faults(reject_claims=refused)
        assert pipeline.materialize(first, YESTERDAY).success
        pipeline.emulator.set_faults()
        monkeypatch.setenv("CLAIMS_API_KEY", WRONG_KEY)
        failed = pipeline.materialize(first, first, run_config=force_resend())
        monkeypatch.setenv("CLAIMS_API_KEY", API_KEY)
        monkeypatch.setenv("CLAIMS_MAX_REJECTION_RATE", "0")
        blocked = pipeline.materialize(first, YESTERDAY)
        assert not failed.success and not blocked.success

        claims_run_failure_alert(run_failure_context(pipeline, failed))
        claims_run_failure_alert(run_failure_context(pipeline, blocked))
        evaluate(claims_check_failure_alert, pipeline, check_cursor)
        evaluate(claims_unsettled_day_alert, pipeline, day_cursor)

        # 2 failed runs + 1 failed check + 1 day: 4 alerts, to 4 HTTP destinations and e-mail
        requests = receiver.wait_for(16, timeout=10)
        messages = list(mail.messages)
    assert len(messages) == 4
    kinds = {body["event"] for body in bodies(receiver)}
    assert kinds == {"run_failed", "asset_check_failed", "claims_need_attention"}
    assert any(
        set(refused) & set(body["claim_keys"].get("rejected", [])) for body in bodies(receiver)
    )

    needles = needles_from_ehr(
        pipeline.ehr_url,
        secrets=[API_KEY, WRONG_KEY],
        allowed_dates=[first + timedelta(days=n) for n in range(3)],
    )
    haystacks = [(f"POST {r.path}", r.body.decode()) for r in requests]
    haystacks += [(f"e-mail {m['Subject']}", m.as_string()) for m in messages]
    assert needles.scan(haystacks) == []
    # the scan finds what it looks for: a payload carrying a key would have been caught
    assert needles.scan([("control", f"x {WRONG_KEY} y")])


def force_resend() -> dict:
    return {"ops": {"claims_import": {"config": {"force_resend": True}}}}


def test_the_alert_sensors_are_registered_and_start_running():
    from claims_pipeline.definitions import defs

    names = {sensor.name: sensor for sensor in defs().sensors or []}
    assert set(names) == {
        "claims_run_failure_alert",
        "claims_check_failure_alert",
        "claims_unsettled_day_alert",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in names.values())
