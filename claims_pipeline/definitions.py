"""The code location: one Definitions object."""

import dagster as dg

from claims_pipeline.defs.claims import build_claims_assets
from claims_pipeline.defs.claims_import import claims_import
from claims_pipeline.defs.encounters import ehr_encounters
from claims_pipeline.defs.executors import executor_from_environment
from claims_pipeline.defs.purge_job import claims_purge, nightly_claims_purge
from claims_pipeline.defs.resources import build_resources
from claims_pipeline.defs.schedules import claims_sync, nightly_claims_sync
from claims_pipeline.defs.sensors import alert_sensors

defs = dg.Definitions(
    assets=[ehr_encounters, build_claims_assets, claims_import],
    jobs=[claims_sync, claims_purge],
    schedules=[nightly_claims_sync, nightly_claims_purge],
    sensors=alert_sensors,
    resources=build_resources(),
    executor=executor_from_environment(),
)
