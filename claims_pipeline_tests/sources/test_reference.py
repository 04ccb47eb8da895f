"""ReferenceSource against a small hand-made practice, on SQLite and (when configured)
PostgreSQL and MariaDB: payer in force, uninsured, no charges, line provider, place of
service, status and window filters, chunking, and check()."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from claims_pipeline.sources import get_source
from claims_pipeline.sources.base import to_record_batch
from claims_pipeline.sources.lines import LINE_COLUMNS
from claims_pipeline.sources.reference import REQUIRED_COLUMNS, ReferenceSource, metadata
from claims_pipeline_tests.databases import fresh_database_fixture

engine = fresh_database_fixture("engine")
scratch_engine = fresh_database_fixture("scratch_engine", scope="function")

MAR_1, MAR_2, MAR_3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)

FACILITIES = [
    dict(
        id=1,
        name="Mission Family Medicine",
        street="2100 Mission St",
        city="San Francisco",
        state="CA",
        postal_code="94110",
        place_of_service="11",
    ),
    dict(
        id=2,
        name="Lakeside Outpatient Center",
        street="500 Grand Ave",
        city="Oakland",
        state="CA",
        postal_code="94610",
        place_of_service="22",
    ),
]
PROVIDERS = [
    dict(id=1, first_name="Maria", last_name="Lopez", credential="MD", npi="1234567893"),
    dict(id=2, first_name="James", last_name="Chen", credential=None, npi="1245319599"),
    dict(id=3, first_name="Priya", last_name="Patel", credential="PA-C", npi="1987654328"),
]
PAYERS = [
    dict(id=1, name="Aetna", phone="(800) 555-0123"),
    dict(id=2, name="Cigna", phone="800.555.0199"),
    dict(id=3, name="Humana", phone="1-888-555-0142"),
]
PATIENTS = [
    dict(
        id=1,
        first_name="John",
        last_name="Doe",
        date_of_birth=date(1985, 4, 12),
        sex="Male",
        street="1 Main St",
        city="San Francisco",
        state="CA",
        postal_code="94103",
    ),
    dict(
        id=2,
        first_name="Ana",
        last_name="Núñez",
        date_of_birth=date(1990, 7, 1),
        sex="Female",
        street="2 Oak Ave",
        city="Oakland",
        state="CA",
        postal_code="94612",
    ),
    dict(
        id=3,
        first_name="Sam",
        last_name="Lee",
        date_of_birth=date(1979, 1, 20),
        sex="Unknown",
        street=None,
        city=None,
        state=None,
        postal_code=None,
    ),
]


def coverage(id, patient_id, payer_id, member_id, priority, start, end=None):
    return dict(
        id=id,
        patient_id=patient_id,
        payer_id=payer_id,
        member_id=member_id,
        priority=priority,
        effective_from=start,
        effective_to=end,
    )


COVERAGES = [
    # Patient 1: Aetna and Cigna both in force on Mar 1 (Cigna started later, so it wins),
    # a secondary that must be ignored, and Humana from Mar 2 on.
    coverage(1, 1, 1, "MEM100", "primary", date(2024, 1, 1)),
    coverage(2, 1, 2, "W200", "primary", date(2026, 2, 1)),
    coverage(3, 1, 3, "SEC300", "secondary", date(2026, 2, 15)),
    coverage(4, 1, 3, "MEM400", "primary", MAR_2),
    # Patient 2: coverage ended the day before: uninsured on Mar 1.
    coverage(5, 2, 1, "MEM500", "primary", date(2025, 1, 1), date(2026, 2, 28)),
    # Patient 3: coverage ends on Mar 2, inclusive.
    coverage(6, 3, 2, "W600", "primary", date(2026, 1, 1), MAR_2),
]


def encounter(
    id,
    patient_id,
    service_date,
    status="finalized",
    provider_id=1,
    facility_id=1,
    place_of_service=None,
):
    return dict(
        id=id,
        patient_id=patient_id,
        provider_id=provider_id,
        facility_id=facility_id,
        service_date=service_date,
        status=status,
        visit_number=f"V-{id:04d}",
        place_of_service=place_of_service,
        created_at=datetime(2026, 3, 1, 9, 30),
        updated_at=datetime(2026, 3, 1, 17, 0),
    )


ENCOUNTERS = [
    encounter(8, 3, MAR_1),  # no diagnoses
    encounter(10, 1, MAR_1),
    encounter(11, 2, MAR_1, provider_id=2, facility_id=2),  # uninsured, POS from facility
    encounter(9, 3, MAR_2, place_of_service="02"),  # no charges; POS override; lower id
    encounter(12, 1, MAR_2),
    encounter(13, 1, MAR_2, status="draft"),
    encounter(14, 2, MAR_2, status="cancelled"),
    encounter(15, 1, date(2026, 2, 28)),  # before the window
    encounter(16, 1, MAR_3),  # on window_end: excluded
]
# Inserted out of sequence on purpose: the extract must order them.
DIAGNOSES = [
    dict(encounter_id=10, sequence=2, icd10_code="I10"),
    dict(encounter_id=10, sequence=1, icd10_code="J06.9"),
    dict(encounter_id=10, sequence=3, icd10_code="E11.9"),
    dict(encounter_id=11, sequence=1, icd10_code="J02.9"),
    dict(encounter_id=9, sequence=1, icd10_code="R05.9"),
    dict(encounter_id=12, sequence=1, icd10_code="I10"),
    dict(encounter_id=12, sequence=2, icd10_code="E11.9"),
    dict(encounter_id=13, sequence=1, icd10_code="I10"),
    dict(encounter_id=15, sequence=1, icd10_code="I10"),
    dict(encounter_id=16, sequence=1, icd10_code="I10"),
]


def charge(
    id,
    encounter_id,
    line_number,
    hcpcs_code,
    line_amount,
    units="1",
    modifiers=None,
    diagnosis_codes=None,
    provider_id=None,
    service_date_from=None,
    service_date_to=None,
):
    return dict(
        id=id,
        encounter_id=encounter_id,
        line_number=line_number,
        hcpcs_code=hcpcs_code,
        modifiers=modifiers,
        units=units,
        line_amount=line_amount,
        service_date_from=service_date_from,
        service_date_to=service_date_to,
        diagnosis_codes=diagnosis_codes,
        provider_id=provider_id,
    )


CHARGES = [
    charge(101, 10, 2, "96372", "40.00", units=None, diagnosis_codes="J06.9", provider_id=3),
    charge(100, 10, 1, "99214", "220.00", modifiers="25", diagnosis_codes="J06.9,I10,E11.9"),
    charge(102, 10, 3, "J1100", "12.00", units="8", diagnosis_codes="J06.9"),
    charge(110, 11, 1, "99213", "150.00", diagnosis_codes="J02.9"),
    charge(80, 8, 1, "36415", "15.00"),
    charge(
        120,
        12,
        1,
        "99213",
        "150.00",
        modifiers="25 59",
        diagnosis_codes=" I10 , E11.9",
        service_date_from=MAR_2,
        service_date_to=MAR_2,
    ),
    charge(130, 13, 1, "99213", "150.00"),
    charge(150, 15, 1, "99213", "150.00"),
    charge(160, 16, 1, "99213", "150.00"),
]

TABLE_ROWS = {
    "facilities": FACILITIES,
    "providers": PROVIDERS,
    "payers": PAYERS,
    "patients": PATIENTS,
    "coverages": COVERAGES,
    "encounters": ENCOUNTERS,
    "diagnoses": DIAGNOSES,
    "charges": CHARGES,
}


def load(conn: sa.Connection, tables: sa.MetaData) -> None:
    for table in tables.sorted_tables:
        rows = [{k: v for k, v in row.items() if k in table.c} for row in TABLE_ROWS[table.name]]
        conn.execute(table.insert(), rows)


@pytest.fixture(scope="module")
def practice(engine: sa.Engine) -> sa.Engine:
    metadata.create_all(engine)
    with engine.begin() as conn:
        load(conn, metadata)
    return engine


def extract(engine: sa.Engine, start=MAR_1, end=MAR_3, chunk_rows=1000) -> list[list[dict]]:
    with engine.connect() as conn:
        return list(ReferenceSource().extract(conn, start, end, chunk_rows))


def flat(chunks: list[list[dict]]) -> list[dict]:
    return [row for chunk in chunks for row in chunk]


MISSION = dict(
    provider_street="2100 Mission St",
    provider_city="San Francisco",
    provider_state="CA",
    provider_postal_code="94110",
)
LOPEZ = dict(provider_name="Maria Lopez, MD", provider_npi="1234567893")
NO_LINE = dict(
    line_number=None,
    hcpcs_code=None,
    modifiers=None,
    units=None,
    line_amount=None,
    line_service_date_from=None,
    line_service_date_to=None,
    line_diagnosis_codes=None,
)


def row(encounter_id: int, service_date: date, **values: Any) -> dict[str, Any]:
    base = dict(
        service_date=service_date,
        encounter_id=str(encounter_id),
        claim_submitter_identifier=f"REF-{encounter_id}",
        visit_number=f"V-{encounter_id:04d}",
    )
    return {**base, **NO_LINE, **values, "unreadable_columns": None}


JOHN = dict(patient_name="John Doe", patient_dob=date(1985, 4, 12), patient_gender="Male")
SAM = dict(patient_name="Sam Lee", patient_dob=date(1979, 1, 20), patient_gender="Unknown")
CIGNA_W200 = dict(patient_member_id="W200", payer_name="Cigna", payer_phone="800.555.0199")
CIGNA_W600 = dict(patient_member_id="W600", payer_name="Cigna", payer_phone="800.555.0199")
E10 = dict(
    **JOHN, **CIGNA_W200, **MISSION, place_of_service="11", claim_diagnosis_codes="J06.9,I10,E11.9"
)

EXPECTED = [
    row(
        8,
        MAR_1,
        **SAM,
        **CIGNA_W600,
        **MISSION,
        **LOPEZ,
        place_of_service="11",
        claim_diagnosis_codes=None,
        line_number=1,
        hcpcs_code="36415",
        units="1",
        line_amount="15.00",
    ),
    row(
        10,
        MAR_1,
        **E10,
        **LOPEZ,
        line_number=1,
        hcpcs_code="99214",
        modifiers="25",
        units="1",
        line_amount="220.00",
        line_diagnosis_codes="J06.9,I10,E11.9",
    ),
    row(
        10,
        MAR_1,
        **E10,
        provider_name="Priya Patel, PA-C",
        provider_npi="1987654328",
        line_number=2,
        hcpcs_code="96372",
        line_amount="40.00",
        line_diagnosis_codes="J06.9",
    ),
    row(
        10,
        MAR_1,
        **E10,
        **LOPEZ,
        line_number=3,
        hcpcs_code="J1100",
        units="8",
        line_amount="12.00",
        line_diagnosis_codes="J06.9",
    ),
    row(
        11,
        MAR_1,
        patient_name="Ana Núñez",
        patient_dob=date(1990, 7, 1),
        patient_gender="Female",
        patient_member_id=None,
        payer_name=None,
        payer_phone=None,
        place_of_service="22",
        claim_diagnosis_codes="J02.9",
        provider_name="James Chen",
        provider_npi="1245319599",
        provider_street="500 Grand Ave",
        provider_city="Oakland",
        provider_state="CA",
        provider_postal_code="94610",
        line_number=1,
        hcpcs_code="99213",
        units="1",
        line_amount="150.00",
        line_diagnosis_codes="J02.9",
    ),
    row(
        9,
        MAR_2,
        **SAM,
        **CIGNA_W600,
        **MISSION,
        **LOPEZ,
        place_of_service="02",
        claim_diagnosis_codes="R05.9",
    ),
    row(
        12,
        MAR_2,
        **JOHN,
        patient_member_id="MEM400",
        payer_name="Humana",
        payer_phone="1-888-555-0142",
        **MISSION,
        **LOPEZ,
        place_of_service="11",
        claim_diagnosis_codes="I10,E11.9",
        line_number=1,
        hcpcs_code="99213",
        modifiers="25 59",
        units="1",
        line_amount="150.00",
        line_service_date_from=MAR_2,
        line_service_date_to=MAR_2,
        line_diagnosis_codes="I10,E11.9",
    ),
]


def test_extract_yields_exactly_the_billable_lines(practice):
    rows = flat(extract(practice))
    assert all(tuple(r) == LINE_COLUMNS for r in rows)
    assert rows == EXPECTED
    assert to_record_batch(rows).num_rows == len(EXPECTED)


@pytest.mark.parametrize(
    ("start", "end", "encounter_ids"),
    [
        (MAR_2, MAR_3, ["9", "12"]),
        (date(2026, 2, 28), MAR_1, ["15"]),
        (MAR_3, date(2026, 3, 4), ["16"]),
        (MAR_1, MAR_1, []),
    ],
)
def test_window_includes_start_and_excludes_end(practice, start, end, encounter_ids):
    rows = flat(extract(practice, start, end))
    assert [r["encounter_id"] for r in rows if r["line_number"] in (1, None)] == encounter_ids
    with practice.connect() as conn:
        assert ReferenceSource().count_encounters(conn, start, end) == len(encounter_ids)


def test_count_encounters_counts_finalized_only(practice):
    with practice.connect() as conn:
        assert ReferenceSource().count_encounters(conn, MAR_1, MAR_3) == 5


@pytest.mark.parametrize(
    ("chunk_rows", "chunks"),
    [
        (1, [["8"], ["10", "10", "10"], ["11"], ["9"], ["12"]]),
        (2, [["8", "10", "10", "10"], ["11", "9"], ["12"]]),
        (1000, [["8", "10", "10", "10", "11", "9", "12"]]),
    ],
)
def test_chunks_never_split_an_encounter(practice, chunk_rows, chunks):
    result = extract(practice, chunk_rows=chunk_rows)
    assert [[r["encounter_id"] for r in chunk] for chunk in result] == chunks
    assert flat(result) == EXPECTED


def test_abandoned_extract_leaves_the_connection_usable(practice):
    with practice.connect() as conn:
        chunks = ReferenceSource().extract(conn, MAR_1, MAR_3, chunk_rows=1)
        next(chunks)
        chunks.close()
        assert ReferenceSource().count_encounters(conn, MAR_1, MAR_3) == 5


def test_get_source_picks_the_reference_adapter():
    assert get_source("reference").name == "reference"


def test_check_accepts_the_full_schema(practice):
    with practice.connect() as conn:
        assert ReferenceSource().check(conn) == []


def test_check_names_a_dropped_column_and_a_missing_table(scratch_engine):
    metadata.create_all(
        scratch_engine, tables=[t for t in metadata.sorted_tables if t.name != "diagnoses"]
    )
    with scratch_engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE charges DROP COLUMN diagnosis_codes"))
    with scratch_engine.connect() as conn:
        problems = ReferenceSource().check(conn)
    assert len(problems) == 2
    missing_table, dropped = sorted(problems, key=lambda p: "diagnoses" not in p)
    assert "table 'diagnoses' is missing" in missing_table
    assert "encounter_id, sequence, icd10_code" in missing_table
    assert "table 'charges' has no column 'diagnosis_codes'" in dropped
    assert "ALTER TABLE charges ADD COLUMN diagnosis_codes VARCHAR(100)" in dropped


def test_a_mapping_with_only_the_required_columns_extracts_the_same_rows(scratch_engine):
    # What a practice mapping its EHR must provide: REQUIRED_COLUMNS, nothing else.
    minimal = sa.MetaData()
    for table in metadata.sorted_tables:
        sa.Table(
            table.name,
            minimal,
            *(sa.Column(name, table.c[name].type) for name in REQUIRED_COLUMNS[table.name]),
        )
    minimal.create_all(scratch_engine)
    with scratch_engine.begin() as conn:
        load(conn, minimal)
    with scratch_engine.connect() as conn:
        assert ReferenceSource().check(conn) == []
    assert flat(extract(scratch_engine)) == EXPECTED
