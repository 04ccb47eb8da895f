"""The lineage data: every LINE_SCHEMA column and every claim field has a source under each
adapter, and every source named is a column the adapter really reads."""

from __future__ import annotations

import pytest

from claims_pipeline.sources import openemr, reference
from claims_pipeline.sources.lineage import (
    CLAIM_FIELD_LINES,
    CLAIM_FIELD_NAMES,
    LINE_COLUMN_DESCRIPTIONS,
    LINE_SOURCES,
    QUERY_TABLE,
    claim_field_sources,
)
from claims_pipeline.sources.lines import LINE_COLUMNS

READS = {"reference": reference.REQUIRED_COLUMNS, "openemr": openemr.REQUIRED_COLUMNS}


@pytest.mark.parametrize("schema", ["reference", "openemr", "sql"])
def test_every_line_column_has_a_source(schema):
    assert list(LINE_SOURCES[schema]) == list(LINE_COLUMNS)
    assert all(LINE_SOURCES[schema].values())


@pytest.mark.parametrize("schema", ["reference", "openemr"])
def test_every_source_is_a_column_the_adapter_reads(schema):
    named = {source for sources in LINE_SOURCES[schema].values() for source in sources}
    read = {(table, column) for table, columns in READS[schema].items() for column in columns}
    assert named - read == set()


def test_every_claim_field_is_mapped_from_line_columns():
    assert set(CLAIM_FIELD_LINES) == set(CLAIM_FIELD_NAMES)
    assert {c for columns in CLAIM_FIELD_LINES.values() for c in columns} <= set(LINE_COLUMNS)
    assert set(LINE_COLUMN_DESCRIPTIONS) == set(LINE_COLUMNS)


def test_claim_field_sources_compose_both_hops():
    sources = claim_field_sources("openemr")
    assert sources["provider_address"] == [
        ("facility", "street"),
        ("form_encounter", "billing_facility"),
        ("facility", "city"),
        ("facility", "state"),
        ("facility", "postal_code"),
    ]
    assert sources["icd_codes"] == [
        ("billing", "justify"),
        ("billing", "code"),
        ("billing", "code_type"),
    ]
    assert claim_field_sources("reference")["charge_lines.monetary_amount"] == [
        ("charges", "line_amount")
    ]
    assert claim_field_sources("sql")["payer_phone_number"] == [(QUERY_TABLE, "payer_phone")]
