"""Daily partitions by date of service, in the practice's time zone."""

from __future__ import annotations

from datetime import date

import dagster as dg

from claims_pipeline.practices import Practice


def daily_partitions(practice: Practice) -> dg.DailyPartitionsDefinition:
    """From the practice's first date of service, in its time zone."""
    return dg.DailyPartitionsDefinition(
        start_date=practice.first_date.isoformat(), timezone=practice.timezone
    )


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The dates of service this run covers (one for a partition, many for a ranged run)."""
    return [date.fromisoformat(key) for key in context.partition_keys]
