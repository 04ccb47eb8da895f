"""The claims domain's definitions, built when Dagster loads the code location: partitions,
schedule and job read the settings then, not at import."""

import dagster as dg

from claims_pipeline.defs.claims_sync.claims import claims_assets
from claims_pipeline.defs.claims_sync.claims_import import claims_import_asset
from claims_pipeline.defs.claims_sync.encounters import ehr_encounters_asset
from claims_pipeline.defs.claims_sync.partitions import daily_partitions
from claims_pipeline.defs.claims_sync.schedules import claims_sync_job, nightly_schedule


@dg.definitions
def defs() -> dg.Definitions:
    partitions = daily_partitions()
    job = claims_sync_job()
    return dg.Definitions(
        assets=[
            ehr_encounters_asset(partitions),
            claims_assets(partitions),
            claims_import_asset(partitions),
        ],
        jobs=[job],
        schedules=[nightly_schedule(job)],
    )
