"""Job ``claims_sync`` and schedule ``nightly_claims_sync``: every night, yesterday plus the
look-back window (late charges and corrections), in one run, and one more run per stretch of
older days whose EHR rows changed since they were synced (edits of any age)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.defs.resources import ClaimsApi, ClaimsStorage, EhrDatabase, QualityGates
from claims_pipeline.names import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    CLAIMS,
    ENCOUNTERS,
    IMPORT,
    NIGHTLY_SCHEDULE,
    REJECTIONS,
    SYNC_JOB,
)
from claims_pipeline.phi import describe_error
from claims_pipeline.sources.changes import changed_days, contiguous_ranges

#: Run monitoring (dagster.yaml) fails a claims_sync run still going after this long, so a hung
#: run cannot hold the claims_api slot all day; a nightly run takes minutes.
MAX_RUNTIME_SECONDS = 6 * 60 * 60


def claims_sync_job() -> dg.UnresolvedAssetJobDefinition:
    """Job ``claims_sync``: the four assets of a range of dates of service, one run."""
    return dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.assets(ENCOUNTERS, CLAIMS, REJECTIONS, IMPORT),
        description="Extract, validate and deliver the claims of a range of dates of service.",
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
) -> dg.ScheduleDefinition:
    """``nightly_claims_sync`` for a timezone, look-back window and first partition: at 02:00 in
    ``timezone``, one run of ``claims_sync`` over yesterday (in ``timezone``) and the
    ``lookback_days`` before it. The run key is the last day covered, so a tick evaluated
    twice (e.g. after a daemon restart) still launches one run."""
    zone = ZoneInfo(timezone)

    @dg.schedule(
        name=NIGHTLY_SCHEDULE,
        cron_schedule="0 2 * * *",
        job=job or claims_sync_job(),
        execution_timezone=timezone,
        description=(
            f"02:00 ({timezone}) every night: yesterday plus {lookback_days} earlier days "
            "(CLAIMS_LOOKBACK_DAYS), one run."
        ),
    )
    def nightly_claims_sync(
        context: dg.ScheduleEvaluationContext,
        ehr: EhrDatabase,
        claims_api: ClaimsApi,
        claims_storage: ClaimsStorage,
        quality_gates: QualityGates,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        # The daemon passes the tick in execution_timezone; a caller may pass any instant.
        instant = context.scheduled_execution_time or datetime.now(zone)
        run_day = instant.astimezone(zone).date()
        if run_day - timedelta(days=1) < first_partition:
            return dg.SkipReason(
                f"No partition before {first_partition} (CLAIMS_PARTITIONS_START)."
            )
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
                f"nightly_claims_sync: finding edits before {first} failed "
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
                f"nightly_claims_sync: {len(edited)} earlier day(s) changed in the EHR since "
                "they were synced or hold claims to retry: "
                f"{', '.join(d.isoformat() for d in edited[:20])}"
            )
        return requests

    return nightly_claims_sync


def nightly_schedule(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """``nightly_claims_sync`` from CLAIMS_TIMEZONE, CLAIMS_LOOKBACK_DAYS and
    CLAIMS_PARTITIONS_START, read when definitions load."""
    return build_nightly_schedule(
        settings.require(settings.CLAIMS_TIMEZONE),
        settings.get_int(settings.CLAIMS_LOOKBACK_DAYS),
        date.fromisoformat(settings.require(settings.CLAIMS_PARTITIONS_START)),
        job,
    )
