"""Every adapter's statements compile for SQL Server (mssql) and the other dialects with the
window as bind parameters, never as literals; the tables can be created on SQL Server.

The reference adapter running end to end on PostgreSQL, MariaDB and SQLite is
``test_reference.py`` (and the OpenEMR adapter, ``test_openemr.py``): their fixtures run every
test on each dialect. SQL Server has no server here, so its cases compile only."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from claims_pipeline.sources import openemr, reference
from claims_pipeline.sources.custom_sql import parse_query

DIALECTS = {
    "mssql": mssql.dialect(),
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "sqlite": sqlite.dialect(),
}
START, END = date(2026, 3, 1), date(2026, 3, 2)


def statements() -> dict[str, tuple[sa.ClauseElement, set[object]]]:
    """Each adapter statement and the window values it must carry as parameters."""
    window = {START, END}
    midnights = {datetime(2026, 3, 1), datetime(2026, 3, 2)}
    return {
        "reference extract": (reference._extract_statement(START, END), window),
        "openemr extract": (openemr._extract_statement(START, END), midnights),
        "openemr count": (
            sa.select(sa.func.count())
            .select_from(openemr.form_encounter)
            .where(*openemr._in_window(START, END)),
            midnights,
        ),
    }


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("name", ["reference extract", "openemr extract", "openemr count"])
def test_statements_compile_with_the_window_as_bind_parameters(dialect, name):
    statement, window = statements()[name]
    compiled = statement.compile(dialect=DIALECTS[dialect])
    sql = str(compiled)
    values = list(compiled.params.values())
    assert all(value in values for value in window)
    for value in window:
        assert value.isoformat()[:10] not in sql
    # Codes compared with are parameters too, not spliced text.
    for literal in ("'finalized'", "'primary'", "'ICD10'", "'CPT4'"):
        assert literal not in sql


def test_sql_server_spellings():
    sql = str(openemr._extract_statement(START, END).compile(dialect=mssql.dialect()))
    assert "TOP __[POSTCOMPILE_param_1]" in sql  # LIMIT 1 of the payer look-up
    assert "LIMIT" not in sql
    assert "NULLS LAST" not in sql  # SQL Server has none: the order is a CASE
    assert "patient_data.[DOB]" in sql
    assert "CAST(insurance_companies.id AS VARCHAR(255))" in sql


@pytest.mark.parametrize("tables", [reference.metadata, openemr.metadata], ids=["ref", "oemr"])
def test_tables_can_be_created_on_sql_server(tables):
    for table in tables.sorted_tables:
        assert "CREATE TABLE" in str(CreateTable(table).compile(dialect=mssql.dialect()))
        for index in table.indexes:
            assert "CREATE" in str(CreateIndex(index).compile(dialect=mssql.dialect()))


def test_openemr_tables_keep_openemr_types_on_mysql():
    ddl = str(CreateTable(openemr.form_encounter).compile(dialect=mysql.dialect()))
    assert "date DATETIME" in ddl
    assert "pos_code TINYINT" in ddl
    billing = str(CreateTable(openemr.billing).compile(dialect=mysql.dialect()))
    assert "fee NUMERIC(12, 2)" in billing
    assert "units INTEGER" in billing
    insurance = str(CreateTable(openemr.insurance_data).compile(dialect=mysql.dialect()))
    assert "type ENUM('primary','secondary','tertiary')" in insurance
    assert "date DATE" in insurance


def test_a_t_sql_query_file_compiles_with_its_bind_parameters():
    statement = parse_query(
        ";WITH lines AS (SELECT * FROM dbo.claim_lines)\n"
        "SELECT * FROM lines WHERE service_date >= :window_start "
        "AND service_date < :window_end ORDER BY service_date, encounter_id, line_number;",
        "clarity.sql",
    )
    compiled = statement.compile(dialect=mssql.dialect())
    assert set(compiled.params) == {"window_start", "window_end"}
    # Sent as one statement: the T-SQL leading and trailing semicolons are dropped.
    assert str(compiled).startswith("WITH lines AS")
    assert str(compiled).endswith("line_number")
