"""The Dagster metadata built from the lineage data: valid column schema and lineage objects
that a materialization accepts, pointing at the adapter's EHR tables."""

from __future__ import annotations

import dagster as dg
import pytest

from claims_pipeline.column_lineage import (
    CLAIM_COLUMN_LINES,
    claims_lineage_metadata,
    column_lineage_for,
    column_schema_for_lines,
    encounters_lineage_metadata,
)
from claims_pipeline.sources.lines import LINE_COLUMNS, PHI_COLUMNS
from claims_pipeline.storage import CLAIM_SCHEMA


def test_line_schema_has_every_column_and_tags_phi():
    schema = column_schema_for_lines()
    assert [c.name for c in schema.columns] == list(LINE_COLUMNS)
    assert {c.name for c in schema.columns if c.tags and "phi" in c.tags} == PHI_COLUMNS
    assert all(c.description for c in schema.columns)


def test_openemr_lineage_points_at_openemr_tables():
    lineage = column_lineage_for("openemr")
    assert set(lineage.deps_by_column) == set(LINE_COLUMNS)
    assert lineage.deps_by_column["line_amount"] == [
        dg.TableColumnDep(asset_key=dg.AssetKey(["ehr", "openemr", "billing"]), column_name="fee")
    ]


def test_claims_lineage_covers_every_stored_column():
    assert set(CLAIM_COLUMN_LINES) == set(CLAIM_SCHEMA.names)
    assert {c for names in CLAIM_COLUMN_LINES.values() for c in names} <= set(LINE_COLUMNS)


@pytest.mark.parametrize("schema", ["reference", "openemr", "sql"])
def test_a_materialization_accepts_the_metadata(schema):
    @dg.asset(name="ehr_encounters")
    def encounters() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=encounters_lineage_metadata(schema))

    @dg.asset(name="claims", deps=[encounters])
    def claims() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=claims_lineage_metadata(schema))

    result = dg.materialize([encounters, claims])
    assert result.success
    materialization = result.asset_materializations_for_node("claims")[0]
    assert "`payer_name`" in materialization.metadata["claim_field_sources"].value
