"""Daily partitions by date of service, in the configured timezone."""

from __future__ import annotations

from datetime import date

import dagster as dg

from claims_pipeline import settings


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """From CLAIMS_PARTITIONS_START and CLAIMS_TIMEZONE, read when definitions load."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.require(settings.CLAIMS_PARTITIONS_START),
        timezone=settings.require(settings.CLAIMS_TIMEZONE),
    )


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The dates of service this run covers (one for a partition, many for a ranged run)."""
    return [date.fromisoformat(key) for key in context.partition_keys]
