"""``ehr_encounters``: billable encounter lines of each date of service, streamed from the EHR
into one Parquet file per day (claims_pipeline/extraction.py does the work)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.column_lineage import column_schema_for_lines, encounters_lineage_metadata
from claims_pipeline.defs.claims_sync.partitions import partition_days
from claims_pipeline.defs.resources import (
    ClaimsStorage,
    EhrDatabase,
    practice_resource,
    required_keys,
)
from claims_pipeline.extraction import extract_days
from claims_pipeline.names import ENCOUNTERS
from claims_pipeline.practices import Practice
from claims_pipeline.reporting import OWNERS, per_day_materializations, range_totals


def ehr_encounters_asset(
    practice: Practice, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    key = dg.AssetKey(practice.key_path(ENCOUNTERS))

    @dg.asset(
        key=key,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"sql", "parquet"},
        metadata={"dagster/column_schema": column_schema_for_lines()},
        description=(
            "Billable (finalized) encounters of each date of service, one row per charge line "
            "with the claim-level columns, as read from the EHR by the EHR_SCHEMA adapter. "
            "Contains PHI: stored as Parquet under CLAIMS_DATA_DIR/ehr_encounters/."
        ),
        owners=OWNERS,
        group_name=practice.group,
        required_resource_keys=required_keys(practice, EhrDatabase, ClaimsStorage),
    )
    def ehr_encounters(context: dg.AssetExecutionContext) -> Iterator[Any]:
        ehr = practice_resource(context, practice, EhrDatabase)
        claims_storage = practice_resource(context, practice, ClaimsStorage)
        days = partition_days(context)
        source = ehr.source()
        tallies = extract_days(
            ehr.connect,
            source,
            claims_storage.store(),
            days,
            ehr.chunk_rows,
            progress=lambda n: context.log.info(f"{ENCOUNTERS}: {n} charge lines extracted"),
            processes=settings.build_processes(),
        )
        figures = {
            day: {
                "dagster/row_count": t.charge_lines,
                "charge_lines": t.charge_lines,
                "encounters": t.encounters,
                "lines_with_unreadable_values": t.unreadable_lines,
            }
            for day, t in tallies.items()
        }
        totals = range_totals(figures)
        context.log.info(
            f"{ENCOUNTERS}: {totals.get('charge_lines', 0)} charge lines of "
            f"{totals.get('encounters', 0)} encounters over {len(days)} day(s)"
        )
        if totals.get("lines_with_unreadable_values"):
            context.log.warning(
                f"{ENCOUNTERS}: {totals['lines_with_unreadable_values']} charge line(s) hold a "
                "value the database driver cannot read; their encounters are rejected as "
                "unreadable_value (claim_rejections names each table and column)"
            )
        lineage = encounters_lineage_metadata(source.name)
        yield dg.MaterializeResult(metadata=totals | {"ehr_schema": source.name} | lineage)
        per_day_materializations(context, key, figures)

    return ehr_encounters
