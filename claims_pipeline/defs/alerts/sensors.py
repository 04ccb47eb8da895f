"""Alert sensors: a failed run, a failed asset check, a day with claims left unsettled.

Each reads what Dagster recorded, builds an alert from figures only (``claims_pipeline.alerts``)
and sends it to the destinations the environment names (``CLAIMS_ALERT_*``); with none set, they
only advance their cursors. They start running, so setting a destination is all it takes.

When every destination fails, the two event-log sensors stop before that event and try it
again on the next tick; when some succeed, the failures are logged on the tick and the cursor
moves on, so no destination gets an alert twice. The run-failure sensor reports a failure to
deliver on the failed run's event log (Dagster's behaviour for run-status sensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from claims_pipeline import alerts, settings
from claims_pipeline.defs.resources import ClaimsStorage
from claims_pipeline.errors import ClaimsPipelineError
from claims_pipeline.names import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    IMPORT,
    PARTITION_NAME_TAG,
)
from claims_pipeline.storage import PartitionStore

SENSOR_INTERVAL_SECONDS = 30
EVENTS_PER_TICK = 500
RETRY = "no destination was reached: retrying from there on the next tick."
NO_DESTINATION = "No alert destination is configured (CLAIMS_ALERT_*): alerts are off."


def _run_days(run: dg.DagsterRun | None) -> tuple[str | None, str | None]:
    """(first, last) date of service a run covered, from its partition tags."""
    if run is None:
        return None, None
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG], tags[PARTITION_NAME_TAG]
    return tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)


def _secrets() -> list[str]:
    """Values that must never reach a message even if an error quotes them."""
    candidates = [settings.CLAIMS_API_KEY, *alerts.destinations.ALERT_SETTINGS]
    return [value for s in candidates if s.secret and (value := settings.get(s))]


def _send(context: Any, alert: alerts.Alert, destinations: Sequence[alerts.Destination]) -> None:
    """Send; log the destinations that failed; raise when none was reached."""
    for failure in alerts.send_alert(alert, destinations):
        context.log.error(f"Alert not delivered: {failure}")


def _deliver(context: Any, alert: alerts.Alert, destinations: Sequence[alerts.Destination]) -> bool:
    """Send; False (logged) when no destination was reached, so the caller retries later."""
    try:
        _send(context, alert, destinations)
    except alerts.AlertDeliveryError as error:
        context.log.error(str(error))
        return False
    return True


@dg.run_failure_sensor(
    name="claims_run_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (CLAIMS_ALERT_*) when a run of this code location fails: claims_sync, "
    "a backfill or the purge. Job, days, failed steps, the scrubbed error and a link to the run.",
)
def claims_run_failure_alert(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    destinations = alerts.destinations_from_environment()
    if not destinations:
        return dg.SkipReason(NO_DESTINATION)
    run = context.dagster_run
    failed_steps: list[str] = []
    error: str | None = None
    for step_failure in context.get_step_failure_events():
        failed_steps.append(step_failure.step_key or "?")
        info = getattr(step_failure.event_specific_data, "error", None)
        if error is None and info is not None:
            error = f"{info.cls_name or 'Error'}: {info.message.strip()}"
    if error is None:
        error = context.failure_event.message
    first, last = _run_days(run)
    alert = alerts.run_failed_alert(
        job_name=run.job_name,
        run_id=run.run_id,
        first_day=first,
        last_day=last,
        failed_steps=failed_steps,
        error=error,
        ui_base_url=alerts.ui_base_url(),
        secrets=_secrets(),
    )
    _send(context, alert, destinations)
    return None


def _latest_check_storage_id(instance: dg.DagsterInstance) -> int:
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        limit=1,
        ascending=False,
    )
    return records[0].storage_id if records else 0


def _numeric_metadata(metadata: Mapping[str, Any]) -> dict[str, int | float]:
    values = {name: getattr(value, "value", value) for name, value in metadata.items()}
    return {
        name: value
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


@dg.sensor(
    name="claims_check_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (CLAIMS_ALERT_*) for every asset check evaluation that did not pass, "
    "blocking or not: asset, check, day, the check's figures and a link to the run.",
)
def claims_check_failure_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    instance = context.instance
    if context.cursor is None:  # first tick: alert from now on, not about history
        context.update_cursor(str(_latest_check_storage_id(instance)))
        return dg.SkipReason("Started: alerting on check evaluations from now on.")
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=int(context.cursor),
        ),
        limit=EVENTS_PER_TICK,
        ascending=True,
    )
    if not records:
        return dg.SkipReason("No new check evaluation.")
    destinations = alerts.destinations_from_environment()
    failed = 0
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed and destinations:
            run_id = record.event_log_entry.run_id
            day = evaluation.partition
            if day is None:
                first, last = _run_days(instance.get_run_by_id(run_id))
                day = first if first == last else f"{first}...{last}" if first else None
            alert = alerts.check_failed_alert(
                asset=evaluation.asset_key.to_user_string(),
                check_name=evaluation.check_name,
                severity=evaluation.severity.value,
                blocking=bool(evaluation.blocking),
                day=day,
                run_id=run_id,
                figures=_numeric_metadata(evaluation.metadata),
                description=evaluation.description,
                ui_base_url=alerts.ui_base_url(),
            )
            if not _deliver(context, alert, destinations):
                return dg.SkipReason(f"Alerted on {failed} failed check evaluation(s); {RETRY}")
        failed += not evaluation.passed
        context.update_cursor(str(record.storage_id))
    if not destinations:
        return dg.SkipReason(f"{failed} failed check evaluation(s). {NO_DESTINATION}")
    return dg.SkipReason(f"Alerted on {failed} failed check evaluation(s).")


def _latest_import_storage_id(instance: dg.DagsterInstance) -> int:
    records = instance.fetch_materializations(dg.AssetKey(IMPORT), limit=1).records
    return records[0].storage_id if records else 0


def _is_range_total(metadata: Mapping[str, Any]) -> bool:
    """Whether a claims_import materialization carries a ranged run's totals (logged on every
    partition of the range) rather than one day's own figures."""
    covered = getattr(metadata.get("partitions"), "value", metadata.get("partitions"))
    return isinstance(covered, str) and "..." in covered


def unsettled_claim_keys(store: PartitionStore, day: str) -> dict[str, list[str]]:
    """Claim keys of one day's stored delivery results whose outcome needs attention."""
    wanted = set(alerts.ATTENTION_OUTCOMES.values())
    found: dict[str, list[str]] = {}
    for batch in store.read_batches(IMPORT, day, columns=["claim_submitter_identifier", "outcome"]):
        keys, outcomes = (column.to_pylist() for column in batch.columns)
        for key, outcome in zip(keys, outcomes, strict=True):
            if outcome in wanted:
                found.setdefault(outcome, []).append(key)
    return found


@dg.sensor(
    name="claims_unsettled_day_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (CLAIMS_ALERT_*) when a day's claims_import ends with claims refused by "
    "the service, pending, held or withdrawn: counts, claim keys, day and a link to the run.",
)
def claims_unsettled_day_alert(
    context: dg.SensorEvaluationContext, claims_storage: ClaimsStorage
) -> dg.SkipReason:
    instance = context.instance
    if context.cursor is None:  # first tick: alert from now on, not about history
        context.update_cursor(str(_latest_import_storage_id(instance)))
        return dg.SkipReason("Started: alerting on claims_import results from now on.")
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(IMPORT), after_storage_id=int(context.cursor)),
        limit=EVENTS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return dg.SkipReason("No new claims_import result.")
    destinations = alerts.destinations_from_environment()
    unsettled = 0
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        day = materialization.partition if materialization else None
        counts: dict[str, int] = {}
        if day is not None and not _is_range_total(materialization.metadata):
            values = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            counts = alerts.messages.claims_need_attention(values)
        if counts and destinations:
            alert = alerts.claims_need_attention_alert(
                day=day,
                run_id=record.event_log_entry.run_id,
                counts=counts,
                claim_keys=_claim_keys_or_none(context, claims_storage, day),
                ui_base_url=alerts.ui_base_url(),
            )
            if not _deliver(context, alert, destinations):
                return dg.SkipReason(f"Alerted on {unsettled} day(s); {RETRY}")
        unsettled += bool(counts)
        context.update_cursor(str(record.storage_id))
    if not destinations:
        return dg.SkipReason(f"{unsettled} day(s) with unsettled claims. {NO_DESTINATION}")
    return dg.SkipReason(f"Alerted on {unsettled} day(s) with unsettled claims.")


def _claim_keys_or_none(
    context: dg.SensorEvaluationContext, claims_storage: ClaimsStorage, day: str
) -> dict[str, list[str]]:
    try:
        return unsettled_claim_keys(claims_storage.store(), day)
    except (ClaimsPipelineError, OSError) as error:
        context.log.warning(f"Claim keys of {day} unavailable: {type(error).__name__}")
        return {}


alert_sensors = [claims_run_failure_alert, claims_check_failure_alert, claims_unsettled_day_alert]
