"""Job ``claims_purge`` and schedule ``nightly_claims_purge``: ``claims-pipeline purge`` inside
Dagster, so that retention does not depend on someone remembering it. The schedule starts
stopped: an operator turns it on after choosing the retention period."""

# No `from __future__ import annotations`: Dagster reads PurgeConfig from the annotation.

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.components.claims_practice import served_practices
from claims_pipeline.defs.resources import ClaimsStorage, practice_resource, required_keys_of
from claims_pipeline.practices import Practice
from claims_pipeline.purge import PURGED_ASSETS, describe, parse_age, purge
from claims_pipeline.settings import Setting

CLAIMS_RETENTION = Setting(
    "CLAIMS_RETENTION", "how long stored PHI is kept before the purge deletes it (90d, 12w)", "90d"
)


class PurgeConfig(dg.Config):
    """Run options of the purge; the retention defaults to CLAIMS_RETENTION."""

    older_than: str | None = None  # e.g. 90d or 12w
    dry_run: bool = False  # list what would be deleted, delete nothing
    practice: str | None = None  # purge this practice alone (default: every practice)


def purge_job(served: list[Practice]) -> dg.JobDefinition:
    """Job ``claims_purge`` over the data directory of every practice served."""
    by_name = {practice.name: practice for practice in served}

    @dg.op(
        name="purge_stored_phi",
        description="Delete stored PHI (extracts, payloads, rejections, dry-run payloads) older "
        "than the retention period, in each practice's data directory; keep the ledger and "
        "claims_import results.",
        required_resource_keys=required_keys_of(served, ClaimsStorage),
    )
    def purge_stored_phi(context: dg.OpExecutionContext, config: PurgeConfig) -> dg.Output[int]:
        try:
            older_than = parse_age(config.older_than or settings.require(CLAIMS_RETENTION))
        except ValueError as error:
            raise dg.Failure(
                f"CLAIMS_RETENTION (or older_than): {error}.", allow_retries=False
            ) from None
        if config.practice is not None and config.practice not in by_name:
            raise dg.Failure(
                f"practice {config.practice!r} is not served here: "
                f"{', '.join(str(name) for name in by_name)}.",
                allow_retries=False,
            )
        chosen = [by_name[config.practice]] if config.practice else served
        total = 0
        metadata: dict[str, dg.RawMetadataValue] = {"dry_run": config.dry_run}
        for practice in chosen:
            if older_than.days <= practice.lookback_days:
                raise dg.Failure(
                    f"CLAIMS_RETENTION ({older_than.days} days) must be longer than the look-back "
                    f"of {practice.label} ({practice.lookback_days} days): the nightly run would "
                    "extract again what the purge deletes.",
                    allow_retries=False,
                )
            storage = practice_resource(context, practice, ClaimsStorage)
            report = purge(storage.data_dir, older_than, practice.today(), dry_run=config.dry_run)
            context.log.info(
                describe(report, older_than)
                + ("" if practice.name is None else f" (practice {practice.name})")
            )
            prefix = "" if practice.name is None else f"{practice.name}/"
            metadata[f"{prefix}cutoff"] = report.cutoff.isoformat()
            metadata["retention_days"] = older_than.days
            for category, names in report.deleted.items():
                metadata[f"{prefix}{category.replace(' ', '_')}_files"] = len(names)
                if names and category in PURGED_ASSETS:
                    metadata[f"{prefix}{category}_dates"] = f"{names[0]}...{names[-1]}"
            total += report.total
        return dg.Output(total, metadata=metadata)

    @dg.job(
        name="claims_purge",
        description="claims-pipeline purge as a job: delete stored PHI older than "
        "CLAIMS_RETENTION, of every practice or of one (config `practice`).",
    )
    def claims_purge() -> None:
        purge_stored_phi()

    return claims_purge


def nightly_claims_purge(job: dg.JobDefinition, timezone: str) -> dg.ScheduleDefinition:
    """At 04:30 in ``timezone``; stopped until turned on."""
    return dg.ScheduleDefinition(
        name="nightly_claims_purge",
        job=job,
        cron_schedule="30 4 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="04:30 every night: delete stored PHI older than CLAIMS_RETENTION. Off until "
        "an operator turns it on.",
    )


@dg.definitions
def defs() -> dg.Definitions:
    job = purge_job(served_practices())
    timezone = settings.require(settings.CLAIMS_TIMEZONE)
    return dg.Definitions(jobs=[job], schedules=[nightly_claims_purge(job, timezone)])
