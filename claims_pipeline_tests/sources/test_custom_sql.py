"""CustomSqlSource: a user's query over the reference schema on SQLite, PostgreSQL and MariaDB
gives the reference adapter's lines; missing or misnamed columns are named before any row is
read; a query out of order, outside the window or with a null key stops the extract; a file
that is not one read-only SELECT is refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from claims_pipeline.errors import SourceError
from claims_pipeline.rules import build_claims
from claims_pipeline.sources import get_source
from claims_pipeline.sources.custom_sql import CustomSqlSource, parse_query
from claims_pipeline.sources.lines import LINE_COLUMNS
from claims_pipeline.sources.reference import ReferenceSource, metadata
from claims_pipeline_tests.databases import fresh_database_fixture
from claims_pipeline_tests.sources.test_reference import MAR_1, MAR_3, load

engine = fresh_database_fixture("engine")

TODAY = MAR_3


@pytest.fixture(scope="module")
def practice(engine: sa.Engine) -> sa.Engine:
    metadata.create_all(engine)
    with engine.begin() as conn:
        load(conn, metadata)
    return engine


def concat(dialect: str, *parts: str) -> str:
    # SQLite before 3.44 has no CONCAT(); MySQL reads || as OR.
    return f"CONCAT({', '.join(parts)})" if dialect == "mysql" else " || ".join(parts)


def reference_query(
    dialect: str,
    order_by: str = "e.service_date, e.id, c.line_number",
    where: str = "e.service_date >= :window_start AND e.service_date < :window_end",
    leave_out: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> str:
    """What a practice would write for the reference schema, in LINE_SCHEMA's shape (payer by
    the latest primary coverage in force; no encounter diagnosis list: NULL)."""
    columns = {
        "service_date": "e.service_date",
        "encounter_id": "e.id",
        "claim_submitter_identifier": concat(dialect, "'REF-'", "e.id"),
        "visit_number": "e.visit_number",
        "patient_name": concat(dialect, "p.first_name", "' '", "p.last_name"),
        "patient_dob": "p.date_of_birth",
        "patient_gender": "p.sex",
        "patient_member_id": "cv.member_id",
        "payer_name": "py.name",
        "payer_phone": "py.phone",
        "place_of_service": "COALESCE(e.place_of_service, f.place_of_service)",
        "claim_diagnosis_codes": "NULL",
        "provider_name": "COALESCE("
        + concat(dialect, "lp.first_name", "' '", "lp.last_name")
        + ", "
        + concat(dialect, "pr.first_name", "' '", "pr.last_name")
        + ")",
        "provider_npi": "COALESCE(lp.npi, pr.npi)",
        "provider_street": "f.street",
        "provider_city": "f.city",
        "provider_state": "f.state",
        "provider_postal_code": "f.postal_code",
        "line_number": "c.line_number",
        "hcpcs_code": "c.hcpcs_code",
        "modifiers": "c.modifiers",
        "units": "c.units",
        "line_amount": "c.line_amount",
        "line_service_date_from": "c.service_date_from",
        "line_service_date_to": "c.service_date_to",
        "line_diagnosis_codes": "c.diagnosis_codes",
    }
    rename = rename or {}
    select_list = ",\n    ".join(
        f"{expression} AS {rename.get(name, name)}"
        for name, expression in columns.items()
        if name not in leave_out
    )
    return f"""-- Charge lines of finalized encounters; a ';' in a comment is not a statement.
SELECT
    {select_list}
FROM encounters e
JOIN patients p ON p.id = e.patient_id
JOIN providers pr ON pr.id = e.provider_id
JOIN facilities f ON f.id = e.facility_id
LEFT JOIN coverages cv ON cv.id = (
    SELECT MAX(c2.id) FROM coverages c2
    WHERE c2.patient_id = e.patient_id AND c2.priority = 'primary'
      AND c2.effective_from <= e.service_date
      AND (c2.effective_to IS NULL OR c2.effective_to >= e.service_date)
)
LEFT JOIN payers py ON py.id = cv.payer_id
LEFT JOIN charges c ON c.encounter_id = e.id
LEFT JOIN providers lp ON lp.id = c.provider_id
WHERE e.status = 'finalized' AND {where}
ORDER BY {order_by};
"""


def query_file(tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "encounters.sql"
    path.write_text(sql, encoding="utf-8")
    return path


def extract(engine: sa.Engine, source: Any, start=MAR_1, end=MAR_3, chunk_rows=1000) -> list:
    with engine.connect() as conn:
        return [row for chunk in source.extract(conn, start, end, chunk_rows) for row in chunk]


NAMES = {"1234567893": "Maria Lopez", "1245319599": "James Chen", "1987654328": "Priya Patel"}


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row with numbers as Decimals (through text() each driver returns NUMERIC its own way:
    SQLite a float, PostgreSQL and MariaDB a Decimal with the column's scale) and code lists
    without blanks (the reference adapter tidies them; claim assembly does for the query)."""
    codes = row["line_diagnosis_codes"]
    return {
        **row,
        "line_diagnosis_codes": codes and ",".join(c.strip() for c in codes.split(",")),
        "units": None if row["units"] is None else Decimal(row["units"]),
        "line_amount": None if row["line_amount"] is None else Decimal(row["line_amount"]),
    }


def test_a_query_over_the_reference_schema_yields_the_reference_lines(practice, tmp_path):
    source = CustomSqlSource(query_file(tmp_path, reference_query(practice.dialect.name)))
    rows = extract(practice, source)
    assert all(tuple(r) == LINE_COLUMNS for r in rows)
    # What the query does differently on purpose: no diagnosis list, no credentials.
    expected = [
        {
            **r,
            "claim_diagnosis_codes": None,
            "provider_name": NAMES[r["provider_npi"]],
        }
        for r in extract(practice, ReferenceSource())
    ]
    assert [comparable(r) for r in rows] == [comparable(r) for r in expected]
    outcomes = [(r.claim_submitter_identifier, r.accepted) for r in build_claims(rows, today=TODAY)]
    assert outcomes == [
        (r.claim_submitter_identifier, r.accepted) for r in build_claims(expected, today=TODAY)
    ]
    with practice.connect() as conn:
        assert source.check(conn) == []
        assert source.count_encounters(conn, MAR_1, MAR_3) == 5


def test_chunks_never_split_an_encounter(practice, tmp_path):
    source = CustomSqlSource(query_file(tmp_path, reference_query(practice.dialect.name)))
    with practice.connect() as conn:
        chunks = list(source.extract(conn, MAR_1, MAR_3, chunk_rows=2))
    assert [[r["encounter_id"] for r in chunk] for chunk in chunks] == [
        ["8", "10", "10", "10"],
        ["11", "9"],
        ["12"],
    ]


def test_missing_and_misnamed_columns_are_named_before_any_row(practice, tmp_path):
    sql = reference_query(
        practice.dialect.name,
        leave_out=("payer_phone",),
        rename={"patient_name": "patient_nme"},
    )
    path = query_file(tmp_path, sql)
    source = CustomSqlSource(path)
    with practice.connect() as conn:
        problems = source.check(conn)
        assert len(problems) == 1
        assert "patient_name, payer_phone" in problems[0]
        assert "'patient_nme' -> 'patient_name'" in problems[0]
        assert str(path) in problems[0]
        rows = source.extract(conn, MAR_1, MAR_3)
        with pytest.raises(SourceError, match="does not return column"):
            next(rows)
        # The failed extract left the connection usable.
        assert ReferenceSource().count_encounters(conn, MAR_1, MAR_3) == 5


def test_an_encounter_that_comes_back_is_refused_by_id(practice, tmp_path):
    sql = reference_query(practice.dialect.name, order_by="e.service_date, c.line_number, e.id")
    source = CustomSqlSource(query_file(tmp_path, sql))
    with pytest.raises(SourceError) as raised:
        extract(practice, source)
    assert "encounter 10 reappears after another encounter" in str(raised.value)
    assert "ORDER BY service_date, encounter_id, line_number" in str(raised.value)


def test_service_dates_going_backwards_are_refused(practice, tmp_path):
    sql = reference_query(practice.dialect.name, order_by="e.service_date DESC, e.id")
    source = CustomSqlSource(query_file(tmp_path, sql))
    with pytest.raises(SourceError, match="encounter 8 is out of order"):
        extract(practice, source)


def test_rows_outside_the_window_are_refused(practice, tmp_path):
    sql = reference_query(
        practice.dialect.name,
        where="(:window_start IS NOT NULL OR :window_end IS NOT NULL)",
    )
    source = CustomSqlSource(query_file(tmp_path, sql))
    with pytest.raises(SourceError, match="encounter 15 .* outside the window"):
        extract(practice, source)


def test_a_null_key_column_is_refused(practice, tmp_path):
    sql = reference_query(practice.dialect.name, rename={"visit_number": "claim_key_source"})
    claim_key = concat(practice.dialect.name, "'REF-'", "e.id")
    sql = sql.replace(
        f"{claim_key} AS claim_submitter_identifier", "NULL AS claim_submitter_identifier"
    ).replace("AS claim_key_source", "AS visit_number")
    source = CustomSqlSource(query_file(tmp_path, sql))
    with pytest.raises(SourceError, match="row 1 .* has no claim_submitter_identifier"):
        extract(practice, source)


def test_a_database_error_is_a_problem_and_the_connection_survives(practice, tmp_path):
    sql = reference_query(practice.dialect.name).replace("FROM encounters e", "FROM visits e")
    source = CustomSqlSource(query_file(tmp_path, sql))
    with practice.connect() as conn:
        problems = source.check(conn)
        assert len(problems) == 1
        assert "fails on this database" in problems[0]
        assert ReferenceSource().count_encounters(conn, MAR_1, MAR_3) == 5


def test_an_unreadable_file_is_a_problem_naming_it(practice, tmp_path):
    missing = tmp_path / "nowhere.sql"
    with practice.connect() as conn:
        assert CustomSqlSource(missing).check(conn) == [
            f"EHR_QUERY_FILE {missing} cannot be read (FileNotFoundError): set EHR_QUERY_FILE "
            "to the path of your query file."
        ]


def test_get_source_picks_the_sql_adapter(tmp_path):
    source = get_source("sql", str(tmp_path / "q.sql"))
    assert source.name == "sql"
    assert isinstance(source, CustomSqlSource)


GOOD = "SELECT * FROM v WHERE d >= :window_start AND d < :window_end"


@pytest.mark.parametrize(
    "sql",
    [
        GOOD,
        GOOD + ";",
        GOOD + " ;  -- the end\n",
        "-- header; with a semicolon\n/* and; another */\n" + GOOD,
        "WITH x AS (SELECT 1 AS a) " + GOOD,
        ";WITH x AS (SELECT 1 AS a) " + GOOD,
        "(" + GOOD + ")",
        GOOD + " AND note <> 'a;b' AND [odd;name] = 1 AND \"x;y\" = 2",
        GOOD.replace(":window_start", "CAST(:window_start AS date)") + " AND t::date > d",
        GOOD + " AND update_date > d AND deleted = 0 AND note <> 'DELETE'",
        GOOD + " AND REPLACE(phone, '-', '') <> ''",
        GOOD + " AND lo_limit > 0 AND dblink_note IS NULL",  # columns, not calls
    ],
)
def test_one_select_is_accepted(sql):
    statement = parse_query(sql, "q.sql")
    assert set(statement.compile().params) == {"window_start", "window_end"}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "holds no query"),
        (" ; -- nothing\n", "holds no query"),
        (GOOD + "; DROP TABLE encounters", "more than one statement"),
        (GOOD + ";\n" + GOOD, "more than one statement"),
        ("DECLARE @d date; " + GOOD, "more than one statement"),
        ("DELETE FROM v WHERE d >= :window_start AND d < :window_end", "must be one SELECT"),
        ("WITH gone AS (DELETE FROM v RETURNING *) " + GOOD, "uses DELETE"),
        (GOOD.replace("SELECT *", "SELECT * INTO copy"), "uses INTO"),
        ("EXEC claims_extract :window_start, :window_end", "must be one SELECT"),
        ("SELECT * FROM v WHERE d >= :window_start", "does not use :window_end"),
        ("SELECT * FROM v", "does not use :window_start, :window_end"),
        ("-- d < :window_end\nSELECT * FROM v WHERE d >= :window_start", "not use :window_end"),
        (GOOD + " AND tenant = :tenant", r"uses bind parameter\(s\) :tenant"),
        (GOOD + " AND dblink_exec('dbname=ehr', 'DELETE FROM x') = 'OK'", r"dblink_exec\(\)"),
        (GOOD + " AND DBLINK ('dbname=ehr', 'SELECT 1') IS NOT NULL", r"dblink\(\)"),
        (GOOD + " AND set_config('default_transaction_read_only', 'off', false) = ''", "set_conf"),
        (GOOD + " AND lo_export(42, '/tmp/x') = 1", r"lo_export\(\)"),
        (GOOD + " AND pg_terminate_backend(1)", "pg_terminate_backend"),
    ],
)
def test_anything_but_one_read_only_select_is_refused(sql, message):
    with pytest.raises(SourceError, match=message) as raised:
        parse_query(sql, "q.sql")
    assert "q.sql" in str(raised.value)
