"""One bad value rejects one encounter: a value the driver cannot decode or convert (text that
is not UTF-8, a DATE column holding text or an impossible date, a date Python cannot hold)
becomes an ``unreadable_value`` rejection naming the table and column, never the value, and
every other encounter of the night goes through. On SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from claims_pipeline.rules import build_claims
from claims_pipeline.rules.reasons import ReasonCode
from claims_pipeline.sources.base import to_record_batch
from claims_pipeline.sources.connection import read_only_engine
from claims_pipeline.sources.custom_sql import CustomSqlSource
from claims_pipeline.sources.reference import (
    ReferenceSource,
    charges,
    coverages,
    diagnoses,
    encounters,
    facilities,
    metadata,
    patients,
    payers,
    providers,
)
from claims_pipeline_tests.databases import fresh_database_fixture
from claims_pipeline_tests.sources.test_custom_sql import reference_query

engine = fresh_database_fixture("engine", scope="function")
mysql_engine = fresh_database_fixture("mysql_engine", scope="function", dialects=("mysql",))
sqlite_engine = fresh_database_fixture("sqlite_engine", scope="function", dialects=("sqlite",))

DAY = date(2026, 3, 2)
TODAY = date(2026, 3, 10)
ENCOUNTERS = (1, 2, 3, 4)

# Per dialect: (statement run on the writable connection, what it plants, where), and the
# encounter -> source columns the extract must name. Encounter 4 is always clean.
CORRUPTIONS = {
    "sqlite": (
        [
            "UPDATE patients SET date_of_birth = '12/04/1985' WHERE id = 1",
            "UPDATE patients SET first_name = CAST(X'4A6FFF' AS TEXT) WHERE id = 2",
            "UPDATE charges SET line_amount = 'twelve' WHERE encounter_id = 3",
            "UPDATE charges SET line_number = 'one' WHERE encounter_id = 3",
        ],
        {
            1: {"patients.date_of_birth"},
            2: {"patients.first_name"},
            3: {"charges.line_amount", "charges.line_number"},
        },
    ),
    "mysql": (
        [
            "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
            "UPDATE patients SET date_of_birth = '1985-02-30' WHERE id = 1",
            "UPDATE charges SET service_date_from = '2026-02-31' WHERE encounter_id = 3",
        ],
        {1: {"patients.date_of_birth"}, 3: {"charges.service_date_from"}},
    ),
    "postgresql": (
        [
            "UPDATE patients SET date_of_birth = 'infinity' WHERE id = 1",
            "UPDATE patients SET date_of_birth = '4713-01-01 BC' WHERE id = 2",
            "UPDATE charges SET service_date_to = '20000-01-01' WHERE encounter_id = 3",
        ],
        {
            1: {"patients.date_of_birth"},
            2: {"patients.date_of_birth"},
            3: {"charges.service_date_to"},
        },
    ),
}
#: Text of the planted values: none may reach a rejection message.
PLANTED = ("12/04", "twelve", "one", "1985-02-30", "2026-02-31", "infinity", "4713", "20000")


def seed(conn: sa.Connection) -> None:
    conn.execute(
        facilities.insert(),
        [
            dict(
                id=1,
                name="Mission",
                street="1 Main St",
                city="Oakland",
                state="CA",
                postal_code="94610",
                place_of_service="11",
            )
        ],
    )
    conn.execute(
        providers.insert(),
        [dict(id=1, first_name="Maria", last_name="Lopez", credential="MD", npi="1234567893")],
    )
    conn.execute(payers.insert(), [dict(id=1, name="Aetna", phone="(800) 555-0123")])
    for number in ENCOUNTERS:
        conn.execute(
            patients.insert(),
            [
                dict(
                    id=number,
                    first_name="Pat",
                    last_name=f"Doe{number}",
                    date_of_birth=date(1980, 1, number),
                    sex="F",
                )
            ],
        )
        conn.execute(
            coverages.insert(),
            [
                dict(
                    id=number,
                    patient_id=number,
                    payer_id=1,
                    member_id=f"M{number}",
                    priority="primary",
                    effective_from=date(2020, 1, 1),
                )
            ],
        )
        conn.execute(
            encounters.insert(),
            [
                dict(
                    id=number,
                    patient_id=number,
                    provider_id=1,
                    facility_id=1,
                    service_date=DAY,
                    status="finalized",
                    visit_number=f"V{number}",
                )
            ],
        )
        conn.execute(
            diagnoses.insert(), [dict(encounter_id=number, sequence=1, icd10_code="J06.9")]
        )
        conn.execute(
            charges.insert(),
            [
                dict(
                    id=number,
                    encounter_id=number,
                    line_number=1,
                    hcpcs_code="99213",
                    units=1,
                    line_amount=Decimal("150.00"),
                    diagnosis_codes="J06.9",
                )
            ],
        )


@pytest.fixture
def corrupted(engine: sa.Engine) -> tuple[sa.Engine, dict[int, set[str]]]:
    return corrupt(engine)


def corrupt(engine: sa.Engine) -> tuple[sa.Engine, dict[int, set[str]]]:
    metadata.create_all(engine)
    statements, expected = CORRUPTIONS[engine.dialect.name]
    with engine.begin() as conn:
        seed(conn)
        for statement in statements:
            conn.exec_driver_sql(statement)
    return engine, expected


def outcomes(reader: sa.Engine, source) -> tuple[list, list]:
    with reader.connect() as conn:
        rows = [row for chunk in source.extract(conn, DAY, TODAY) for row in chunk]
    to_record_batch(rows)  # what ehr_encounters stores: every row fits LINE_SCHEMA
    return rows, list(build_claims(rows, today=TODAY))


def test_one_bad_value_rejects_its_encounter_and_the_rest_goes_through(corrupted):
    ehr, expected = corrupted
    reader = read_only_engine(ehr.url.render_as_string(hide_password=False))
    try:
        rows, results = outcomes(reader, ReferenceSource())
    finally:
        reader.dispose()
    assert [r.encounter_id for r in results] == [str(n) for n in ENCOUNTERS]
    for result in results:
        number = int(result.encounter_id)
        named = {p.field for p in result.problems if p.code is ReasonCode.UNREADABLE_VALUE}
        assert named == expected.get(number, set()), number
        if number not in expected:
            assert result.accepted, result.problems
        for problem in result.problems:
            assert not any(text in problem.message for text in PLANTED), problem.message
    assert sum(r.accepted for r in results) + sum(not r.accepted for r in results) == 4
    assert results[-1].accepted


def test_a_zero_date_on_mariadb_is_no_date_not_an_unreadable_one(mysql_engine):
    engine = mysql_engine
    metadata.create_all(engine)
    with engine.begin() as conn:
        seed(conn)
        conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        conn.exec_driver_sql("UPDATE patients SET date_of_birth = '0000-00-00' WHERE id = 2")
    reader = read_only_engine(engine.url.render_as_string(hide_password=False))
    try:
        _, results = outcomes(reader, ReferenceSource())
    finally:
        reader.dispose()
    problems = {r.encounter_id: [(p.code, p.field) for p in r.problems] for r in results}
    assert problems["2"] == [(ReasonCode.MISSING_FIELD, "patient_dob")]
    assert all(r.accepted for r in results if r.encounter_id != "2")


def test_the_sql_adapter_rejects_one_encounter_per_unreadable_value(sqlite_engine, tmp_path: Path):
    """SQLite's cells are the ones a query's text() result cannot convert (the servers' are
    covered for the sql adapter by test_robustness)."""
    ehr, _ = corrupt(sqlite_engine)
    query = tmp_path / "q.sql"
    query.write_text(reference_query("sqlite"))
    reader = read_only_engine(ehr.url)
    try:
        _, results = outcomes(reader, CustomSqlSource(query))
    finally:
        reader.dispose()
    named = {
        r.encounter_id: {p.field for p in r.problems if p.code is ReasonCode.UNREADABLE_VALUE}
        for r in results
    }
    assert named["1"] == {"ehr_query.patient_dob"}
    assert named["2"] == {"ehr_query.patient_name"}
    assert named["4"] == set() and results[-1].accepted
