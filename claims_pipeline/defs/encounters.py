"""``ehr_encounters``: billable encounter lines of each date of service, streamed from the EHR
into one Parquet file per day."""

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta

import dagster as dg
import pyarrow.compute as pc
from dagster import AssetExecutionContext

from claims_pipeline.defs.lineage import column_schema_for_lines, encounters_lineage_metadata
from claims_pipeline.defs.partitions import daily_partitions, partition_days
from claims_pipeline.defs.reporting import (
    ASSET_DEFAULTS,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.defs.resources import ClaimsStorage, EhrDatabase
from claims_pipeline.errors import ClaimsPipelineError, SourceError
from claims_pipeline.phi import describe_error
from claims_pipeline.sources.base import to_record_batch
from claims_pipeline.sources.changes import extraction_facts
from claims_pipeline.sources.lines import LINE_SCHEMA

ASSET = "ehr_encounters"
PROGRESS_EVERY_ROWS = 100_000


@dg.asset(
    name=ASSET,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"sql", "parquet"},
    metadata={"dagster/column_schema": column_schema_for_lines()},
    description=(
        "Billable (finalized) encounters of each date of service, one row per charge line with "
        "the claim-level columns, as read from the EHR by the EHR_SCHEMA adapter. Contains PHI: "
        "stored as Parquet under CLAIMS_DATA_DIR/ehr_encounters/."
    ),
    **ASSET_DEFAULTS,
)
def ehr_encounters(
    context: AssetExecutionContext, ehr: EhrDatabase, claims_storage: ClaimsStorage
) -> Iterator[dg.MaterializeResult]:
    days = partition_days(context)
    store = claims_storage.store()
    source = ehr.source()
    lines = {day.isoformat(): 0 for day in days}
    encounters = dict(lines)
    unreadable = dict(lines)  # lines holding a value the driver could not read
    last_encounter: dict[str, str | None] = dict.fromkeys(lines)
    engine = ehr.engine()
    try:
        with engine.connect() as conn, ExitStack() as files:
            problems = source.check(conn)
            if problems:
                raise SourceError(
                    f"EHR_SCHEMA={source.name} cannot read this database: " + "; ".join(problems)
                )
            # Read before the lines: an edit made meanwhile shows as a change the next night.
            facts = extraction_facts(conn, source.name, days)
            writers = {
                key: files.enter_context(store.writer(ASSET, key, LINE_SCHEMA, facts[key]))
                for key in lines
            }
            total = 0
            for chunk in source.extract(
                conn, days[0], days[-1] + timedelta(days=1), ehr.chunk_rows
            ):
                batch = to_record_batch(chunk)
                for day in pc.unique(batch.column("service_date")).to_pylist():
                    key = day.isoformat()
                    part = batch.filter(pc.equal(batch.column("service_date"), day))
                    writers[key].write_batch(part)
                    lines[key] += part.num_rows
                    unreadable[key] += pc.count(part.column("unreadable_columns")).as_py()
                    # encounters are contiguous: count the boundaries
                    ids = part.column("encounter_id").to_pylist()
                    previous = last_encounter[key]
                    for encounter_id in ids:
                        if encounter_id != previous:
                            encounters[key] += 1
                            previous = encounter_id
                    last_encounter[key] = previous
                before, total = total, total + batch.num_rows
                if total // PROGRESS_EVERY_ROWS > before // PROGRESS_EVERY_ROWS:
                    context.log.info(f"ehr_encounters: {total} charge lines extracted so far")
    except ClaimsPipelineError:
        raise
    except Exception as error:  # a driver's message may quote a row's values: never pass it on
        raise SourceError(
            f"Reading the EHR (EHR_SCHEMA={source.name}) failed: {describe_error(error)}"
        ) from None
    finally:
        engine.dispose()
    figures = {
        key: {
            "dagster/row_count": lines[key],
            "charge_lines": lines[key],
            "encounters": encounters[key],
            "lines_with_unreadable_values": unreadable[key],
        }
        for key in lines
    }
    context.log.info(
        f"ehr_encounters: {sum(lines.values())} charge lines of "
        f"{sum(encounters.values())} encounters over {len(days)} day(s)"
    )
    if sum(unreadable.values()):
        context.log.warning(
            f"ehr_encounters: {sum(unreadable.values())} charge line(s) hold a value the "
            "database driver cannot read; their encounters are rejected as unreadable_value "
            "(claim_rejections names each table and column)"
        )
    metadata = (
        range_totals(figures)
        | {"ehr_schema": source.name}
        | encounters_lineage_metadata(source.name)
    )
    yield dg.MaterializeResult(metadata=metadata)
    per_day_materializations(context, ASSET, figures)
