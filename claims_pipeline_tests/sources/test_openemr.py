"""OpenEmrSource against a small OpenEMR practice, with OpenEMR's tables created from
OPENEMR_TABLES on SQLite, MariaDB and PostgreSQL (when configured): payer by effective date,
deleted and non-claim billing rows, an unreferenced diagnosis, modifiers 25:59, NULL units, a
line-level provider, POS falling back to the facility, the uninsured and the line-less, and the
exact claims build_claims makes of them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from claims_pipeline.rules import ReasonCode, build_claims
from claims_pipeline.sources import get_source
from claims_pipeline.sources.base import to_record_batch
from claims_pipeline.sources.lines import LINE_COLUMNS
from claims_pipeline.sources.openemr import (
    OPENEMR_TABLES,
    REQUIRED_COLUMNS,
    OpenEmrSource,
    justify_codes,
    metadata,
)
from claims_pipeline_tests.databases import fresh_database_fixture

engine = fresh_database_fixture("engine")
scratch_engine = fresh_database_fixture("scratch_engine", scope="function")

MAR_1, MAR_2, MAR_3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
TODAY = date(2026, 3, 10)

FACILITIES = [
    # The service location: its POS is the fallback when the encounter has none.
    dict(
        id=3,
        name="Mission Family Medicine",
        street="2100 Mission St",
        city="San Francisco",
        state="CA",
        postal_code="94110",
        pos_code=11,
        facility_npi="1679576722",
    ),
    # The billing location: the provider address comes from here; its POS is never used.
    dict(
        id=4,
        name="Mission Medical Group Billing",
        street="1 Market St Suite 300",
        city="San Francisco",
        state="CA",
        postal_code="94105",
        pos_code=22,
        facility_npi="1679576722",
    ),
]
USERS = [
    dict(id=7, fname="Maria", lname="Lopez", npi="1234567893"),
    dict(id=8, fname="Priya", lname="Patel", npi="1987654328"),
    dict(id=9, fname="James", lname="Chen", npi="1245319599"),
]
INSURANCE_COMPANIES = [
    dict(id=11, name="Aetna", cms_id="60054"),
    dict(id=12, name="Cigna", cms_id="62308"),
]
PHONE_NUMBERS = [
    dict(id=1, area_code="800", prefix="555", number="0123", type=2, foreign_id=11),
    dict(id=2, area_code="800", prefix="555", number="0999", type=5, foreign_id=11),  # fax
    dict(id=3, area_code="888", prefix="555", number="0199", type=2, foreign_id=12),
    dict(id=4, area_code="888", prefix="555", number="0100", type=2, foreign_id=12),  # 2nd
]
PATIENTS = [
    dict(
        id=1,
        pid=1,
        pubpid="P0001",
        fname="John",
        mname="Q",
        lname="Doe",
        DOB=date(1985, 4, 12),
        sex="Male",
    ),
    dict(
        id=2,
        pid=2,
        pubpid="P0002",
        fname="Ana",
        mname="",
        lname="Núñez",
        DOB=date(1990, 7, 1),
        sex="Female",
    ),
    dict(
        id=3,
        pid=3,
        pubpid="P0003",
        fname="Sam",
        mname="",
        lname="Lee",
        DOB=date(1979, 1, 20),
        sex="",
    ),
]


def insurance(id, pid, type, provider, policy_number, effective):
    return dict(
        id=id, pid=pid, type=type, provider=provider, policy_number=policy_number, date=effective
    )


INSURANCE_DATA = [
    # John: Aetna since 2024, Cigna from Mar 2 (so Mar 1 is Aetna, Mar 2 is Cigna), and a
    # secondary that is never billed here.
    insurance(1, 1, "primary", "11", "AET100", date(2024, 1, 1)),
    insurance(2, 1, "primary", "12", "CIG200", MAR_2),
    insurance(3, 1, "secondary", "12", "SEC900", date(2025, 1, 1)),
    # Ana: OpenEMR's empty primary row: uninsured.
    insurance(4, 2, "primary", "", "", None),
    # Sam: an undated Cigna row in force, and an Aetna row that starts after the window.
    insurance(5, 3, "primary", "12", "CIG300", None),
    insurance(6, 3, "primary", "11", "AET301", date(2026, 4, 1)),
]


def encounter(id, pid, number, when, provider_id=7, pos_code=None, facility_id=3):
    return dict(
        id=id,
        pid=pid,
        encounter=number,
        date=when,
        facility_id=facility_id,
        billing_facility=4,
        provider_id=provider_id,
        pos_code=pos_code,
        date_end=None,
    )


FORM_ENCOUNTERS = [
    encounter(1, 1, 1001, datetime(2026, 3, 1, 9, 30)),  # POS from the facility
    encounter(2, 1, 1002, datetime(2026, 3, 2, 14, 0), provider_id=9, pos_code=2),
    encounter(3, 2, 1003, datetime(2026, 3, 1, 11, 0)),  # uninsured
    encounter(4, 3, 1004, datetime(2026, 3, 1, 16, 45)),  # diagnoses only
    encounter(5, 3, 1005, datetime(2026, 3, 2, 23, 59, 59)),  # last second of the window
    encounter(6, 1, 1006, datetime(2026, 3, 3, 0, 0)),  # on window_end: excluded
    encounter(7, 1, 1000, datetime(2026, 2, 28, 23, 59, 59)),  # before the window
]


def bill(
    id,
    pid,
    number,
    when,
    code_type,
    code,
    fee=None,
    units=None,
    modifier="",
    justify="",
    provider_id=0,
    activity=1,
):
    return dict(
        id=id,
        date=when,
        code_type=code_type,
        code=code,
        pid=pid,
        provider_id=provider_id,
        encounter=number,
        billed=0,
        activity=activity,
        modifier=modifier,
        units=units,
        fee=None if fee is None else Decimal(fee),
        justify=justify,
    )


def at(day: date, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute)


BILLING = [
    # 1001: the J1100 row has the lower id but was entered later: date, id order puts the
    # 99214 first. I10 is coded but justifies no line: it still goes on the claim, last.
    bill(20, 1, 1001, at(MAR_1, 9, 35), "ICD10", "M54.50"),
    bill(
        19,
        1,
        1001,
        at(MAR_1, 9, 45),
        "HCPCS",
        "J1100",
        "12.00",
        None,
        "",
        "ICD10|M54.50:",
        provider_id=8,
    ),
    bill(
        21,
        1,
        1001,
        at(MAR_1, 9, 40),
        "CPT4",
        "99214",
        "220.00",
        1,
        "25:59",
        "ICD10|M54.50:ICD10|G89.29:",
    ),
    bill(22, 1, 1001, at(MAR_1, 9, 41), "ICD10", "G89.29"),
    bill(23, 1, 1001, at(MAR_1, 9, 42), "ICD10", "I10"),
    bill(24, 1, 1001, at(MAR_1, 9, 43), "CPT4", "96372", "40.00", 1, activity=0),  # deleted
    bill(25, 1, 1001, at(MAR_1, 9, 50), "COPAY", "", "-20.00"),  # not a claim line
    # 1002: a line provider_id of 0 means "the encounter's provider"; units 0 mean 1 to
    # OpenEMR (PHP's empty()).
    bill(30, 1, 1002, at(MAR_2, 14, 5), "CPT4", "99213", "150.00", 0, "", "ICD10|I10:"),
    bill(31, 1, 1002, at(MAR_2, 14, 6), "ICD10", "I10"),
    # 1003: uninsured.
    bill(40, 2, 1003, at(MAR_1, 11, 5), "CPT4", "99213", "150.00", 1, "", "ICD10|J02.9:"),
    bill(41, 2, 1003, at(MAR_1, 11, 6), "ICD10", "J02.9"),
    # 1004: a diagnosis and a deleted procedure only.
    bill(50, 3, 1004, at(MAR_1, 16, 50), "ICD10", "R05.9"),
    bill(51, 3, 1004, at(MAR_1, 16, 51), "CPT4", "99212", "90.00", 1, activity=0),
    # 1005: two units, the fee is already the line total; modifiers separated by a space.
    bill(60, 3, 1005, at(MAR_2, 23, 50), "ICD10", "J06.9"),
    bill(61, 3, 1005, at(MAR_2, 23, 51), "CPT4", "97110", "90.00", 2, "GP 59", "ICD10|J06.9:"),
    # Outside the window.
    bill(70, 1, 1006, at(MAR_3, 0, 5), "CPT4", "99213", "150.00", 1, "", "ICD10|I10:"),
    bill(71, 1, 1000, datetime(2026, 2, 28, 23, 59), "CPT4", "99213", "150.00", 1),
]

TABLE_ROWS = {
    "facility": FACILITIES,
    "users": USERS,
    "insurance_companies": INSURANCE_COMPANIES,
    "phone_numbers": PHONE_NUMBERS,
    "patient_data": PATIENTS,
    "insurance_data": INSURANCE_DATA,
    "form_encounter": FORM_ENCOUNTERS,
    "billing": BILLING,
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
        return list(OpenEmrSource().extract(conn, start, end, chunk_rows))


def flat(chunks: list[list[dict]]) -> list[dict]:
    return [row for chunk in chunks for row in chunk]


BILLING_OFFICE = dict(
    provider_street="1 Market St Suite 300",
    provider_city="San Francisco",
    provider_state="CA",
    provider_postal_code="94105",
)
LOPEZ = dict(provider_name="Maria Lopez", provider_npi="1234567893")
JOHN = dict(patient_name="John Doe", patient_dob=date(1985, 4, 12), patient_gender="Male")
SAM = dict(patient_name="Sam Lee", patient_dob=date(1979, 1, 20), patient_gender=None)
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


def row(pid: int, number: int, when: datetime, **values: Any) -> dict[str, Any]:
    key = f"{pid}-{number}"
    base = dict(
        service_date=when.date(),
        encounter_id=key,
        claim_submitter_identifier=key,
        visit_number=str(number),
        **BILLING_OFFICE,
        line_service_date_from=None,
        line_service_date_to=None,
    )
    return {**base, **values, "unreadable_columns": None}


E1001 = dict(
    **JOHN,
    patient_member_id="AET100",
    payer_name="Aetna",
    payer_phone="8005550123",
    place_of_service="11",
    claim_diagnosis_codes="M54.50,G89.29,I10",
)
E1005 = dict(
    **SAM,
    patient_member_id="CIG300",
    payer_name="Cigna",
    payer_phone="8885550199",
    place_of_service="11",
    claim_diagnosis_codes="J06.9",
)

EXPECTED = [
    row(
        1,
        1001,
        datetime(2026, 3, 1, 9, 30),
        **E1001,
        **LOPEZ,
        line_number=1,
        hcpcs_code="99214",
        modifiers="25:59",
        units="1",
        line_amount="220.00",
        line_diagnosis_codes="M54.50,G89.29",
    ),
    row(
        1,
        1001,
        datetime(2026, 3, 1, 9, 30),
        **E1001,
        provider_name="Priya Patel",
        provider_npi="1987654328",
        line_number=2,
        hcpcs_code="J1100",
        modifiers=None,
        units=None,
        line_amount="12.00",
        line_diagnosis_codes="M54.50",
    ),
    row(
        2,
        1003,
        datetime(2026, 3, 1, 11, 0),
        patient_name="Ana Núñez",
        patient_dob=date(1990, 7, 1),
        patient_gender="Female",
        patient_member_id=None,
        payer_name=None,
        payer_phone=None,
        place_of_service="11",
        claim_diagnosis_codes="J02.9",
        **LOPEZ,
        line_number=1,
        hcpcs_code="99213",
        modifiers=None,
        units="1",
        line_amount="150.00",
        line_diagnosis_codes="J02.9",
    ),
    row(
        3,
        1004,
        datetime(2026, 3, 1, 16, 45),
        **SAM,
        patient_member_id="CIG300",
        payer_name="Cigna",
        payer_phone="8885550199",
        place_of_service="11",
        claim_diagnosis_codes="R05.9",
        **LOPEZ,
        **NO_LINE,
    ),
    row(
        1,
        1002,
        datetime(2026, 3, 2, 14, 0),
        **JOHN,
        patient_member_id="CIG200",
        payer_name="Cigna",
        payer_phone="8885550199",
        place_of_service="2",
        claim_diagnosis_codes="I10",
        provider_name="James Chen",
        provider_npi="1245319599",
        line_number=1,
        hcpcs_code="99213",
        modifiers=None,
        units=None,
        line_amount="150.00",
        line_diagnosis_codes="I10",
    ),
    row(
        3,
        1005,
        datetime(2026, 3, 2, 23, 59, 59),
        **E1005,
        **LOPEZ,
        line_number=1,
        hcpcs_code="97110",
        modifiers="GP 59",
        units="2",
        line_amount="90.00",
        line_diagnosis_codes="J06.9",
    ),
]


def test_extract_yields_exactly_the_billable_lines(practice):
    rows = flat(extract(practice))
    assert all(tuple(r) == LINE_COLUMNS for r in rows)
    assert rows == EXPECTED
    assert to_record_batch(rows).num_rows == len(EXPECTED)


def test_the_claims_are_what_openemr_would_bill(practice):
    results = list(build_claims(flat(extract(practice)), today=TODAY))
    by_key = {result.claim_submitter_identifier: result for result in results}
    assert [r.claim_submitter_identifier for r in results] == [
        "1-1001",
        "2-1003",
        "3-1004",
        "1-1002",
        "3-1005",
    ]
    assert by_key["1-1001"].wire == {
        "patient_name": "John Doe",
        "patient_dob": "1985-04-12",
        "patient_gender": "M",
        "provider_name": "Maria Lopez",
        "provider_address": "1 Market St Suite 300, San Francisco, CA 94105",
        "provider_npi": "1234567893",
        "patient_member_id": "AET100",
        "payer_name": "Aetna",
        "claim_submitter_identifier": "1-1001",
        "facility_code_value": "11",
        # Justified codes in order of first use, then the coded diagnosis no line points at.
        "icd_codes": ["M54.50", "G89.29", "I10"],
        "visit_number": "1001",
        "payer_phone_number": "+18005550123",
        "charge_lines": [
            {
                "hcpcs_code": "99214",
                "monetary_amount": 220,
                "units": 1,
                "diagnosis_code_pointers": ["1", "2"],
                "service_date_from": "2026-03-01",
                "service_date_to": "2026-03-01",
                "modifiers": ["25", "59"],
            },
            {
                "hcpcs_code": "J1100",
                "monetary_amount": 12,
                "units": 1,
                "diagnosis_code_pointers": ["1"],
                "service_date_from": "2026-03-01",
                "service_date_to": "2026-03-01",
            },
        ],
    }
    assert by_key["1-1002"].wire["payer_name"] == "Cigna"  # effective on its date of service
    assert by_key["1-1002"].wire["patient_member_id"] == "CIG200"
    assert by_key["1-1002"].wire["payer_phone_number"] == "+18885550199"
    assert by_key["1-1002"].wire["facility_code_value"] == "02"
    assert by_key["1-1002"].wire["provider_npi"] == "1245319599"
    assert by_key["1-1002"].wire["charge_lines"][0]["units"] == 1
    assert by_key["3-1005"].wire["charge_lines"] == [
        {
            "hcpcs_code": "97110",
            "monetary_amount": 90,
            "units": 2,
            "diagnosis_code_pointers": ["1"],
            "service_date_from": "2026-03-02",
            "service_date_to": "2026-03-02",
            "modifiers": ["GP", "59"],
        }
    ]
    assert by_key["3-1005"].wire["payer_name"] == "Cigna"  # the undated row
    assert [p.code for p in by_key["2-1003"].problems] == [ReasonCode.UNINSURED]
    assert [p.code for p in by_key["3-1004"].problems] == [ReasonCode.NO_CHARGE_LINES]
    assert {key for key, r in by_key.items() if r.accepted} == {"1-1001", "1-1002", "3-1005"}


@pytest.mark.parametrize(
    ("start", "end", "keys"),
    [
        (MAR_2, MAR_3, ["1-1002", "3-1005"]),
        (date(2026, 2, 28), MAR_1, ["1-1000"]),
        (MAR_3, date(2026, 3, 4), ["1-1006"]),
        (MAR_1, MAR_1, []),
    ],
)
def test_window_compares_the_encounter_datetime_from_midnight_to_midnight(
    practice, start, end, keys
):
    rows = flat(extract(practice, start, end))
    assert list(dict.fromkeys(r["encounter_id"] for r in rows)) == keys
    with practice.connect() as conn:
        assert OpenEmrSource().count_encounters(conn, start, end) == len(keys)


def test_count_encounters_counts_every_encounter_in_the_window(practice):
    with practice.connect() as conn:
        assert OpenEmrSource().count_encounters(conn, MAR_1, MAR_3) == 5


@pytest.mark.parametrize(
    ("chunk_rows", "chunks"),
    [
        (1, [["1-1001", "1-1001"], ["2-1003"], ["3-1004"], ["1-1002"], ["3-1005"]]),
        (3, [["1-1001", "1-1001", "2-1003"], ["3-1004", "1-1002", "3-1005"]]),
    ],
)
def test_chunks_never_split_an_encounter(practice, chunk_rows, chunks):
    result = extract(practice, chunk_rows=chunk_rows)
    assert [[r["encounter_id"] for r in chunk] for chunk in result] == chunks
    assert flat(result) == EXPECTED


def test_abandoned_extract_leaves_the_connection_usable(practice):
    with practice.connect() as conn:
        chunks = OpenEmrSource().extract(conn, MAR_1, MAR_3, chunk_rows=1)
        next(chunks)
        chunks.close()
        assert OpenEmrSource().count_encounters(conn, MAR_1, MAR_3) == 5


def test_get_source_picks_the_openemr_adapter():
    assert get_source("openemr").name == "openemr"


def test_check_accepts_the_openemr_schema(practice):
    with practice.connect() as conn:
        assert OpenEmrSource().check(conn) == []


def test_required_columns_are_what_the_extract_reads():
    assert REQUIRED_COLUMNS == {
        "billing": (
            "id",
            "date",
            "code_type",
            "code",
            "pid",
            "provider_id",
            "encounter",
            "activity",
            "modifier",
            "units",
            "fee",
            "justify",
        ),
        "facility": ("id", "street", "city", "state", "postal_code", "pos_code"),
        "form_encounter": (
            "date",
            "facility_id",
            "pid",
            "encounter",
            "provider_id",
            "billing_facility",
            "pos_code",
        ),
        "insurance_companies": ("id", "name"),
        "insurance_data": ("id", "type", "provider", "policy_number", "date", "pid"),
        "patient_data": ("fname", "lname", "DOB", "sex", "pid"),
        "phone_numbers": ("id", "area_code", "prefix", "number", "type", "foreign_id"),
        "users": ("id", "fname", "lname", "npi"),
    }
    assert set(REQUIRED_COLUMNS) == set(OPENEMR_TABLES)


def test_check_names_a_dropped_column_and_a_missing_table(scratch_engine):
    metadata.create_all(
        scratch_engine, tables=[t for t in metadata.sorted_tables if t.name != "phone_numbers"]
    )
    with scratch_engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE billing DROP COLUMN justify"))
    with scratch_engine.connect() as conn:
        problems = OpenEmrSource().check(conn)
    assert len(problems) == 2
    missing_table, dropped = sorted(problems, key=lambda p: "phone_numbers" not in p)
    assert "table 'phone_numbers' is missing" in missing_table
    assert "table 'billing' has no column 'justify'" in dropped


@pytest.mark.parametrize(
    ("justify", "codes"),
    [
        ("ICD10|M54.50:ICD10|G89.29:", "M54.50,G89.29"),
        ("ICD10|M54.50:", "M54.50"),
        ("M54.50:G89.29:", "M54.50,G89.29"),  # legacy, untyped
        ("SNOMED-CT|279039007:ICD10|M54.50:", "M54.50"),
        ("ICD9|724.2:", "724.2"),
        ("", None),
        (None, None),
        (":", None),
    ],
)
def test_justify_codes(justify, codes):
    assert justify_codes(justify) == codes


def test_line_amount_keeps_cents_on_every_dialect(practice):
    amounts = {r["line_amount"] for r in flat(extract(practice))}
    assert amounts == {"220.00", "12.00", "150.00", "90.00", None}
    assert all(Decimal(a) for a in amounts if a)
