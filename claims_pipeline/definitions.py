"""The code location: every definition under ``defs/`` (found by dg), with the resources and
executor the environment selects. Settings are read when Dagster loads it, not at import."""

from pathlib import Path

import dagster as dg

from claims_pipeline.defs.executors import executor_from_environment
from claims_pipeline.defs.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(resources=build_resources(), executor=executor_from_environment()),
    )
