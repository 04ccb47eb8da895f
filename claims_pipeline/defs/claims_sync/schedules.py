"""Job ``claims_sync`` and schedule ``nightly_claims_sync``: every night, yesterday plus the
look-back window (late charges and corrections), in one run, and one more run per stretch of
older days whose EHR rows changed since they were synced (edits of any age)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from claims_pipeline.defs.resources import (
    ClaimsApi,
    ClaimsStorage,
    EhrDatabase,
    QualityGates,
    practice_resource,
    required_keys,
)
from claims_pipeline.names import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    CLAIMS,
    ENCOUNTERS,
    IMPORT,
    NIGHTLY_SCHEDULE,
    REJECTIONS,
)
from claims_pipeline.phi import describe_error
from claims_pipeline.practices import Practice, environment_practice
from claims_pipeline.sources.changes import changed_days, contiguous_ranges

#: Run monitoring (dagster.yaml) fails a claims_sync run still going after this long, so a hung
#: run cannot hold the claims_api slot all day; a nightly run takes minutes.
MAX_RUNTIME_SECONDS = 6 * 60 * 60


def claims_sync_job(practice: Practice | None = None) -> dg.UnresolvedAssetJobDefinition:
    """Job ``claims_sync`` (``claims_sync_<practice>``): the practice's four assets of a range
    of dates of service, one run."""
    practice = practice or environment_practice()
    return dg.define_asset_job(
        practice.job_name,
        selection=dg.AssetSelection.assets(
            *(practice.key_path(name) for name in (ENCOUNTERS, CLAIMS, REJECTIONS, IMPORT))
        ),
        description="Extract, validate and deliver the claims of a range of dates of service"
        + ("." if practice.name is None else f" of practice {practice.name}."),
        tags={"dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    )


def nightly_window(run_day: date, lookback_days: int, first_day: date) -> tuple[date, date]:
    """(first, last) dates of service a run on ``run_day`` covers: yesterday and the
    ``lookback_days`` before it, never before the first partition."""
    last = run_day - timedelta(days=1)
    return max(first_day, last - timedelta(days=lookback_days)), last


def range_tags(first: date, last: date) -> dict[str, str]:
    """Run tags that make one run cover a range of daily partitions."""
    return {
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
    }


def edited_days(
    ehr: EhrDatabase, claims_api: ClaimsApi, claims_storage: ClaimsStorage, before: date
) -> list[date]:
    """Days before ``before`` synced earlier whose EHR rows have changed since."""
    with claims_storage.open_ledger() as ledger:
        synced = ledger.synced_fingerprints(claims_api.tenant_id, before)
    if not synced:
        return []
    engine = ehr.engine()
    try:
        with engine.connect() as conn:
            return changed_days(conn, ehr.source().name, synced, before)
    finally:
        engine.dispose()


def retry_days(
    claims_api: ClaimsApi, claims_storage: ClaimsStorage, gates: QualityGates, before: date
) -> list[date]:
    """Days before ``before`` holding claims the service refused or never acknowledged that
    have not used up CLAIMS_MAX_DELIVERY_ATTEMPTS."""
    with claims_storage.open_ledger() as ledger:
        unsent = ledger.unsent(claims_api.tenant_id)
    return sorted(
        {
            u.service_date
            for u in unsent
            if u.service_date
            and u.service_date < before
            and u.attempts < gates.max_delivery_attempts
        }
    )


def build_nightly_schedule(
    timezone: str,
    lookback_days: int,
    first_partition: date,
    job: dg.UnresolvedAssetJobDefinition | None = None,
    practice: Practice | None = None,
) -> dg.ScheduleDefinition:
    """``nightly_claims_sync`` (``nightly_claims_sync_<practice>``) for a timezone, look-back
    window and first partition: at 02:00 in ``timezone``, one run of the practice's job over
    yesterday (in ``timezone``) and the ``lookback_days`` before it. The run key is the last
    day covered, so a tick evaluated twice (e.g. after a daemon restart) still launches one
    run."""
    zone = ZoneInfo(timezone)
    practice = practice or Practice(None, timezone, first_partition, lookback_days)

    @dg.schedule(
        name=practice.named(NIGHTLY_SCHEDULE),
        cron_schedule="0 2 * * *",
        job=job or claims_sync_job(practice),
        execution_timezone=timezone,
        description=(
            f"02:00 ({timezone}) every night: yesterday plus {lookback_days} earlier days "
            "(look-back), one run."
        ),
        required_resource_keys=required_keys(
            practice, EhrDatabase, ClaimsApi, ClaimsStorage, QualityGates
        ),
    )
    def nightly_claims_sync(
        context: dg.ScheduleEvaluationContext,
        **_resources: Any,  # Dagster passes the required resources by name when invoked
    ) -> list[dg.RunRequest] | dg.SkipReason:
        ehr = practice_resource(context, practice, EhrDatabase)
        claims_api = practice_resource(context, practice, ClaimsApi)
        claims_storage = practice_resource(context, practice, ClaimsStorage)
        quality_gates = practice_resource(context, practice, QualityGates)
        # The daemon passes the tick in execution_timezone; a caller may pass any instant.
        instant = context.scheduled_execution_time or datetime.now(zone)
        run_day = instant.astimezone(zone).date()
        if run_day - timedelta(days=1) < first_partition:
            return dg.SkipReason(f"No partition before {first_partition} (first date).")
        first, last = nightly_window(run_day, lookback_days, first_partition)
        requests = [
            dg.RunRequest(run_key=f"nightly-{last.isoformat()}", tags=range_tags(first, last))
        ]
        try:
            edited = edited_days(ehr, claims_api, claims_storage, before=first)
            edited = sorted(
                set(edited) | set(retry_days(claims_api, claims_storage, quality_gates, first))
            )
        except Exception as error:  # the nightly window still runs; the log says why
            context.log.warning(
                f"{practice.named(NIGHTLY_SCHEDULE)}: finding edits before {first} failed "
                f"({describe_error(error)}); only the look-back window runs tonight."
            )
            edited = []
        for start, end in contiguous_ranges(edited):
            requests.append(
                dg.RunRequest(
                    run_key=f"edits-{last.isoformat()}-{start.isoformat()}",
                    tags=range_tags(start, end) | {"claims_pipeline/trigger": "edits_or_retries"},
                )
            )
        if edited:
            context.log.info(
                f"{practice.named(NIGHTLY_SCHEDULE)}: {len(edited)} earlier day(s) changed in "
                "the EHR since they were synced or hold claims to retry: "
                f"{', '.join(d.isoformat() for d in edited[:20])}"
            )
        return requests

    return nightly_claims_sync


def nightly_schedule(
    job: dg.UnresolvedAssetJobDefinition, practice: Practice | None = None
) -> dg.ScheduleDefinition:
    """The practice's nightly schedule; by default the environment's practice
    (CLAIMS_TIMEZONE, CLAIMS_LOOKBACK_DAYS, CLAIMS_PARTITIONS_START, read when definitions
    load)."""
    practice = practice or environment_practice()
    return build_nightly_schedule(
        practice.timezone, practice.lookback_days, practice.first_date, job, practice
    )
