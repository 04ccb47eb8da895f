"""Job ``claims_sync`` and schedule ``nightly_claims_sync``: every night, yesterday plus the
look-back window (late charges and corrections), in one run."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from claims_pipeline import settings
from claims_pipeline.defs.claims import CLAIMS, REJECTIONS
from claims_pipeline.defs.claims_import import ASSET as IMPORT
from claims_pipeline.defs.encounters import ASSET as ENCOUNTERS
from claims_pipeline.defs.partitions import daily_partitions

#: Run monitoring (dagster.yaml) fails a claims_sync run still going after this long, so a hung
#: run cannot hold the claims_api slot all day; a nightly run takes minutes.
MAX_RUNTIME_SECONDS = 6 * 60 * 60

claims_sync = dg.define_asset_job(
    "claims_sync",
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


def build_nightly_schedule(
    timezone: str, lookback_days: int, first_partition: date
) -> dg.ScheduleDefinition:
    """``nightly_claims_sync`` for a timezone, look-back window and first partition: at 02:00 in
    ``timezone``, one run of ``claims_sync`` over yesterday (in ``timezone``) and the
    ``lookback_days`` before it. The run key is the last day covered, so a tick evaluated
    twice (e.g. after a daemon restart) still launches one run."""
    zone = ZoneInfo(timezone)

    @dg.schedule(
        name="nightly_claims_sync",
        cron_schedule="0 2 * * *",
        job=claims_sync,
        execution_timezone=timezone,
        description=(
            f"02:00 ({timezone}) every night: yesterday plus {lookback_days} earlier days "
            "(CLAIMS_LOOKBACK_DAYS), one run."
        ),
    )
    def nightly_claims_sync(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        # The daemon passes the tick in execution_timezone; a caller may pass any instant.
        instant = context.scheduled_execution_time or datetime.now(zone)
        run_day = instant.astimezone(zone).date()
        if run_day - timedelta(days=1) < first_partition:
            return dg.SkipReason(
                f"No partition before {first_partition} (CLAIMS_PARTITIONS_START)."
            )
        first, last = nightly_window(run_day, lookback_days, first_partition)
        return dg.RunRequest(run_key=f"nightly-{last.isoformat()}", tags=range_tags(first, last))

    return nightly_claims_sync


nightly_claims_sync = build_nightly_schedule(
    settings.require(settings.CLAIMS_TIMEZONE),
    settings.get_int(settings.CLAIMS_LOOKBACK_DAYS),
    daily_partitions.start.date(),
)
