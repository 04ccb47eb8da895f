"""Column schema and column lineage metadata of the pipeline's assets, from the plain data in
:mod:`claims_pipeline.sources.lineage`.

The EHR's tables are not assets of this code location; lineage points at them under the
asset keys ``ehr/<EHR_SCHEMA>/<table>`` (for ``sql``: ``ehr/sql/ehr_query``), which the UI
shows as upstream columns whether or not anything materializes them.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

from claims_pipeline.names import ENCOUNTERS as ENCOUNTERS_ASSET
from claims_pipeline.sources.lineage import (
    LINE_COLUMN_DESCRIPTIONS,
    claim_field_sources,
    line_sources,
)
from claims_pipeline.sources.lines import LINE_SCHEMA, PHI_COLUMNS
from claims_pipeline.storage import CLAIM_SCHEMA

#: Each stored column of ``claims`` -> the ``ehr_encounters`` columns it is built from.
CLAIM_COLUMN_LINES: dict[str, list[str]] = {
    "service_date": ["service_date"],
    "encounter_id": ["encounter_id"],
    "claim_submitter_identifier": ["claim_submitter_identifier"],
    "provider_npi": ["provider_npi"],
    "visit_number": ["visit_number"],
    "payer_name": ["payer_name"],
    "line_count": ["line_number", "hcpcs_code"],
    "total_amount": ["line_amount"],
    "icd_codes": ["line_diagnosis_codes", "claim_diagnosis_codes"],
    "hcpcs_codes": ["hcpcs_code"],
    "content_hash": list(LINE_SCHEMA.names),
    "payload": list(LINE_SCHEMA.names),
}


def ehr_table_key(schema_name: str, table: str) -> dg.AssetKey:
    """The asset key lineage uses for an EHR table read by adapter ``schema_name``."""
    return dg.AssetKey(["ehr", schema_name, table])


def _column_type(data_type: pa.DataType) -> str:
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_integer(data_type):
        return "int"
    return "string"


def column_schema_for_lines() -> dg.TableSchema:
    """The ``ehr_encounters`` table: every LINE_SCHEMA column with its type, its meaning and
    a ``phi`` tag on the columns that identify a patient."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=_column_type(field.type),
                description=LINE_COLUMN_DESCRIPTIONS[field.name],
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
                tags={"phi": ""} if field.name in PHI_COLUMNS else None,
            )
            for field in LINE_SCHEMA
        ]
    )


def column_schema_for_claims() -> dg.TableSchema:
    """The ``claims`` table as stored (one row per claim; ``payload`` is the posted JSON)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=_column_type(field.type),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in CLAIM_SCHEMA
        ]
    )


def column_lineage_for(schema_name: str) -> dg.TableColumnLineage:
    """``ehr_encounters`` column -> the EHR table.column(s) adapter ``schema_name`` reads it
    from (``reference``, ``openemr`` or ``sql``)."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=ehr_table_key(schema_name, table), column_name=name)
                for table, name in sources
            ]
            for column, sources in line_sources(schema_name).items()
        }
    )


def claims_column_lineage() -> dg.TableColumnLineage:
    """``claims`` stored column -> the ``ehr_encounters`` columns it is built from."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=ENCOUNTERS_ASSET, column_name=name) for name in names
            ]
            for column, names in CLAIM_COLUMN_LINES.items()
        }
    )


def claim_field_sources_table(schema_name: str) -> dg.MetadataValue:
    """A Markdown table for the ``claims`` asset: each field of the posted claim and the EHR
    table.column(s) it comes from under adapter ``schema_name``."""
    rows = [
        f"| `{field}` | {', '.join(f'`{table}.{column}`' for table, column in sources)} |"
        for field, sources in claim_field_sources(schema_name).items()
    ]
    header = f"| claim field | {schema_name} source |\n|---|---|\n"
    return dg.MetadataValue.md(header + "\n".join(rows))


def encounters_lineage_metadata(schema_name: str) -> dict[str, Any]:
    """Metadata for an ``ehr_encounters`` materialization read with adapter ``schema_name``."""
    return {
        "dagster/column_schema": column_schema_for_lines(),
        "dagster/column_lineage": column_lineage_for(schema_name),
    }


def claims_lineage_metadata(schema_name: str) -> dict[str, Any]:
    """Metadata for a ``claims`` materialization whose encounters came from ``schema_name``."""
    return {
        "dagster/column_schema": column_schema_for_claims(),
        "dagster/column_lineage": claims_column_lineage(),
        "claim_field_sources": claim_field_sources_table(schema_name),
    }
