"""The claims domain's definitions, built when Dagster loads the code location: per practice,
its partitions, four assets, job and nightly schedule. The practices are the files of
CLAIMS_PRACTICES_DIR (components, each bringing its resources), else the one practice the
environment configures (resources: defs/resources.py)."""

import dagster as dg

from claims_pipeline.components.claims_practice import load_practices
from claims_pipeline.defs.claims_sync.claims import claims_assets
from claims_pipeline.defs.claims_sync.claims_import import claims_import_asset
from claims_pipeline.defs.claims_sync.encounters import ehr_encounters_asset
from claims_pipeline.defs.claims_sync.partitions import daily_partitions
from claims_pipeline.defs.claims_sync.schedules import claims_sync_job, nightly_schedule
from claims_pipeline.practices import Practice, environment_practice


def practice_definitions(practice: Practice) -> dg.Definitions:
    """One practice's assets (in its partitions), job and 02:00 schedule."""
    partitions = daily_partitions(practice)
    job = claims_sync_job(practice)
    return dg.Definitions(
        assets=[
            ehr_encounters_asset(practice, partitions),
            claims_assets(practice, partitions),
            claims_import_asset(practice, partitions),
        ],
        jobs=[job],
        schedules=[nightly_schedule(job, practice)],
    )


@dg.definitions
def defs() -> dg.Definitions:
    files = load_practices()
    if not files:
        return practice_definitions(environment_practice())
    return dg.Definitions.merge(*(practice.definitions() for practice in files))
