"""Alert sensors: a failed run, a failed asset check, a day with claims left unsettled.

Each reads what Dagster recorded, builds an alert from figures only (``claims_pipeline.alerts``)
and sends it to the destinations the environment names (``CLAIMS_ALERT_*``); with none set, they
only advance their cursors. They start running, so setting a destination is all it takes.

When every destination fails, the two event-log sensors stop before that event (the check
sensor: before that run) and try again on the next tick; when some succeed, the failures are
logged on the tick and the cursor moves on. The run-failure sensor reports a failure to
deliver on the failed run's event log (Dagster's behaviour for run-status sensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from claims_pipeline import alerts, settings
from claims_pipeline.components.claims_practice import served_practices
from claims_pipeline.defs.resources import ClaimsStorage, practice_resource, required_keys
from claims_pipeline.errors import ClaimsPipelineError
from claims_pipeline.names import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    IMPORT,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)
from claims_pipeline.practices import Practice
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


def _practice_of_run(run: dg.DagsterRun, served: list[Practice]) -> Practice | None:
    """The practice a run worked for: by its job, else by the keys of the assets it ran."""
    for practice in served:
        if run.job_name == practice.job_name:
            return practice
    prefixes = {key.path[0] for key in run.asset_selection or () if len(key.path) > 1}
    return next((practice for practice in served if practice.name in prefixes), None)


def _destinations(practice: Practice | None) -> list[alerts.Destination]:
    """Where alerts about ``practice`` go (its override, else the deployment's)."""
    return alerts.destinations_from_environment(practice.alerts_env_prefix if practice else None)


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


def _error_text(class_name: str | None, message: str) -> str:
    """``Failure: what went wrong``: Dagster's message repeats the class, fully qualified."""
    message = message.strip()
    head, separator, rest = message.partition(": ")
    if separator and class_name and head.split(".")[-1] == class_name:
        message = rest
    return f"{class_name or 'Error'}: {message}"


@dg.run_failure_sensor(
    name="claims_run_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (CLAIMS_ALERT_*) when a run of this code location fails: claims_sync, "
    "a backfill or the purge. Job, days, failed steps, the scrubbed error and a link to the run.",
)
def claims_run_failure_alert(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    run = context.dagster_run
    destinations = _destinations(_practice_of_run(run, served_practices()))
    if not destinations:
        return dg.SkipReason(NO_DESTINATION)
    failed_steps: list[str] = []
    error: str | None = None
    for step_failure in context.get_step_failure_events():
        failed_steps.append(step_failure.step_key or "?")
        info = getattr(step_failure.event_specific_data, "error", None)
        if error is None and info is not None:
            error = _error_text(info.cls_name, info.message)
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
        will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
    )
    _send(context, alert, destinations)
    return None


RUN_ENDINGS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)


def _latest_run_ending(instance: dg.DagsterInstance) -> int:
    latest = 0
    for ending in RUN_ENDINGS:
        records = instance.fetch_run_status_changes(ending, limit=1).records
        latest = max([latest, *(record.storage_id for record in records)])
    return latest


def _runs_ended_after(instance: dg.DagsterInstance, after: int) -> list[tuple[int, str]]:
    """(storage id, run id) of the runs that ended after storage id ``after``, oldest first.
    Run endings are indexed across runs on every storage (SQLite's per-run shards too), unlike
    check evaluations, which is why this sensor goes from runs to their evaluations."""
    ended: list[tuple[int, str]] = []
    horizon: int | None = None
    for ending in RUN_ENDINGS:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(ending, after_storage_id=after),  # type: ignore[arg-type]
            limit=EVENTS_PER_TICK,
            ascending=True,
        ).records
        ended += [(record.storage_id, record.event_log_entry.run_id) for record in records]
        if len(records) == EVENTS_PER_TICK:  # more to come: stop where this kind stopped
            last = records[-1].storage_id
            horizon = last if horizon is None else min(horizon, last)
    return sorted(e for e in ended if horizon is None or e[0] <= horizon)


def _numeric_metadata(metadata: Mapping[str, Any]) -> dict[str, int | float]:
    values = {name: getattr(value, "value", value) for name, value in metadata.items()}
    return {
        name: value
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _check_alert(
    instance: dg.DagsterInstance, run_id: str, evaluation: dg.AssetCheckEvaluation
) -> alerts.Alert:
    day = evaluation.partition
    if day is None:
        first, last = _run_days(instance.get_run_by_id(run_id))
        day = first if first == last else f"{first}...{last}" if first else None
    return alerts.check_failed_alert(
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


@dg.sensor(
    name="claims_check_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (CLAIMS_ALERT_*) for every asset check evaluation that did not pass, "
    "blocking or not, once its run has ended: asset, check, day, the check's figures and a "
    "link to the run.",
)
def claims_check_failure_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    instance = context.instance
    if context.cursor is None:  # first tick: alert from now on, not about history
        context.update_cursor(str(_latest_run_ending(instance)))
        return dg.SkipReason("Started: alerting on check evaluations from now on.")
    ended = _runs_ended_after(instance, int(context.cursor))
    if not ended:
        return dg.SkipReason("No run has ended since the last tick.")
    # Each practice's destinations (None: the environment's practice), read once per tick; a
    # key of no practice served alerts where the deployment does.
    deployment = _destinations(None)
    destinations_of = {p.name: _destinations(p) for p in served_practices()}
    failed = 0
    for storage_id, run_id in ended:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            evaluation = event.event_specific_data if event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
                continue
            failed += 1
            path = evaluation.asset_key.path
            destinations = destinations_of.get(path[0] if len(path) > 1 else None, deployment)
            if destinations and not _deliver(
                context, _check_alert(instance, run_id, evaluation), destinations
            ):
                return dg.SkipReason(f"Stopped at run {run_id[:8]}: {RETRY}")
        context.update_cursor(str(storage_id))
    if not deployment and not any(destinations_of.values()):
        return dg.SkipReason(f"{failed} failed check evaluation(s). {NO_DESTINATION}")
    return dg.SkipReason(f"Alerted on {failed} failed check evaluation(s).")


def _latest_import_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    records = instance.fetch_materializations(key, limit=1).records
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


def unsettled_day_alert(practice: Practice) -> dg.SensorDefinition:
    """``claims_unsettled_day_alert`` (``..._<practice>``): a practice's days whose delivery
    left claims refused, pending, held or withdrawn."""
    key = dg.AssetKey(practice.key_path(IMPORT))

    @dg.sensor(
        name=practice.named("claims_unsettled_day_alert"),
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts (CLAIMS_ALERT_*) when a day's claims_import ends with claims refused "
        "by the service, pending, held or withdrawn: counts, claim keys, day and a link to the "
        "run.",
        required_resource_keys=required_keys(practice, ClaimsStorage),
    )
    def claims_unsettled_day_alert(
        context: dg.SensorEvaluationContext,
        **_resources: Any,  # Dagster passes the required resources by name when invoked
    ) -> dg.SkipReason:
        storage = practice_resource(context, practice, ClaimsStorage)
        return _unsettled_days(context, key, storage, practice)

    return claims_unsettled_day_alert


def _unsettled_days(
    context: dg.SensorEvaluationContext,
    key: dg.AssetKey,
    claims_storage: ClaimsStorage,
    practice: Practice,
) -> dg.SkipReason:
    instance = context.instance
    if context.cursor is None:  # first tick: alert from now on, not about history
        context.update_cursor(str(_latest_import_storage_id(instance, key)))
        return dg.SkipReason("Started: alerting on claims_import results from now on.")
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=int(context.cursor)),
        limit=EVENTS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return dg.SkipReason("No new claims_import result.")
    destinations = _destinations(practice)
    unsettled = 0
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        day = materialization.partition if materialization else None
        counts: dict[str, int] = {}
        if (
            materialization is not None
            and day is not None
            and not _is_range_total(materialization.metadata)
        ):
            values = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            counts = alerts.messages.claims_need_attention(values)
        if counts and destinations and day is not None:
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
