"""Job ``claims_purge`` and schedule ``nightly_claims_purge``: ``claims-pipeline purge`` inside
Dagster, so that retention does not depend on someone remembering it. The schedule starts
stopped: an operator turns it on after choosing the retention period."""

# No `from __future__ import annotations`: Dagster reads PurgeConfig from the annotation.

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.defs.resources import ClaimsStorage
from claims_pipeline.purge import PURGED_ASSETS, describe, parse_age, purge
from claims_pipeline.settings import Setting

CLAIMS_RETENTION = Setting(
    "CLAIMS_RETENTION", "how long stored PHI is kept before the purge deletes it (90d, 12w)", "90d"
)


class PurgeConfig(dg.Config):
    """Run options of the purge; the retention defaults to CLAIMS_RETENTION."""

    older_than: str | None = None  # e.g. 90d or 12w
    dry_run: bool = False  # list what would be deleted, delete nothing


@dg.op(
    name="purge_stored_phi",
    description="Delete stored PHI (extracts, payloads, rejections, dry-run payloads) older "
    "than the retention period; keep the ledger and claims_import results.",
)
def purge_stored_phi(
    context: dg.OpExecutionContext, config: PurgeConfig, claims_storage: ClaimsStorage
) -> dg.Output[int]:
    try:
        older_than = parse_age(config.older_than or settings.require(CLAIMS_RETENTION))
    except ValueError as error:
        raise dg.Failure(
            f"CLAIMS_RETENTION (or older_than): {error}.", allow_retries=False
        ) from None
    lookback = settings.get_int(settings.CLAIMS_LOOKBACK_DAYS)
    if older_than.days <= lookback:
        raise dg.Failure(
            f"CLAIMS_RETENTION ({older_than.days} days) must be longer than CLAIMS_LOOKBACK_DAYS "
            f"({lookback}): the nightly run would extract again what the purge deletes.",
            allow_retries=False,
        )
    today = settings.today()
    report = purge(claims_storage.data_dir, older_than, today, dry_run=config.dry_run)
    context.log.info(describe(report, older_than))
    metadata: dict[str, dg.RawMetadataValue] = {
        "cutoff": report.cutoff.isoformat(),
        "dry_run": report.dry_run,
        "retention_days": older_than.days,
    }
    for category, names in report.deleted.items():
        metadata[f"{category.replace(' ', '_')}_files"] = len(names)
        if names and category in PURGED_ASSETS:
            metadata[f"{category}_dates"] = f"{names[0]}...{names[-1]}"
    return dg.Output(report.total, metadata=metadata)


@dg.job(
    name="claims_purge",
    description="claims-pipeline purge as a job: delete stored PHI older than CLAIMS_RETENTION.",
)
def claims_purge() -> None:
    purge_stored_phi()


def nightly_claims_purge() -> dg.ScheduleDefinition:
    """At 04:30 in CLAIMS_TIMEZONE (read when definitions load); stopped until turned on."""
    return dg.ScheduleDefinition(
        name="nightly_claims_purge",
        job=claims_purge,
        cron_schedule="30 4 * * *",
        execution_timezone=settings.require(settings.CLAIMS_TIMEZONE),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="04:30 every night: delete stored PHI older than CLAIMS_RETENTION. Off until "
        "an operator turns it on.",
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[claims_purge], schedules=[nightly_claims_purge()])
