"""The EHR connection is read-only on every dialect: the database itself refuses a write, from
an adapter, a user's query file (a CTE or a function that writes) or anything else."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from claims_pipeline.defs.resources import EhrDatabase
from claims_pipeline.errors import SourceError
from claims_pipeline.sources.base import UNREADABLE
from claims_pipeline.sources.connection import read_only_engine, sqlite_read_only_url
from claims_pipeline.sources.custom_sql import CustomSqlSource
from claims_pipeline_tests.databases import SERVICES, fresh_database_fixture, server_url

engine = fresh_database_fixture("engine")
# The servers alone: SQLite has neither data-modifying CTEs nor functions defined in SQL.
server_engine = fresh_database_fixture("server_engine", dialects=("postgresql", "mysql"))

# A function that writes, called from a SELECT: what no keyword guard can see.
WRITING_FUNCTION = {
    "postgresql": "CREATE FUNCTION bump() RETURNS integer LANGUAGE sql AS "
    "$$ INSERT INTO notes (x) VALUES (9) RETURNING 1 $$",
    "mysql": "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO notes (x) VALUES (9); RETURN 1; END",
}


def _notes(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO notes (x) VALUES (1)")
        if engine.dialect.name in WRITING_FUNCTION:
            conn.exec_driver_sql(WRITING_FUNCTION[engine.dialect.name])
    return engine


@pytest.fixture(scope="module")
def ehr(engine: sa.Engine) -> sa.Engine:
    return _notes(engine)


@pytest.fixture(scope="module")
def server_ehr(server_engine: sa.Engine) -> sa.Engine:
    return _notes(server_engine)


def rows_in(ehr: sa.Engine) -> list[int]:
    with ehr.connect() as conn:
        return [x for (x,) in conn.exec_driver_sql("SELECT x FROM notes ORDER BY x")]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO notes (x) VALUES (2)",
        "UPDATE notes SET x = 3",
        "DELETE FROM notes",
        "CREATE TABLE more_notes (y INTEGER)",
        "DROP TABLE notes",
    ],
)
def test_every_write_is_refused_by_the_database(ehr, statement):
    reader = read_only_engine(ehr.url)
    try:
        with reader.connect() as conn:
            assert [x for (x,) in conn.exec_driver_sql("SELECT x FROM notes")] == [1]
            with pytest.raises(DBAPIError):
                conn.exec_driver_sql(statement)
                conn.commit()
    finally:
        reader.dispose()
    assert rows_in(ehr) == [1]


def test_a_writing_cte_is_refused_by_the_database(server_ehr):
    ehr = server_ehr
    sql = {
        "postgresql": "WITH w AS (INSERT INTO notes (x) VALUES (7) RETURNING x) SELECT * FROM w",
        # MariaDB/MySQL: a CTE before an INSERT ... SELECT
        "mysql": "INSERT INTO notes (x) WITH w AS (SELECT 7 AS x) SELECT x FROM w",
    }[ehr.dialect.name]
    reader = read_only_engine(ehr.url)
    try:
        with reader.connect() as conn, pytest.raises(DBAPIError):
            conn.exec_driver_sql(sql)
            conn.commit()
    finally:
        reader.dispose()
    assert rows_in(ehr) == [1]


def test_a_query_file_calling_a_writing_function_fails_and_writes_nothing(server_ehr, tmp_path):
    ehr = server_ehr
    query = tmp_path / "q.sql"
    # Passes the keyword guard: no write keyword, no known escape function.
    query.write_text(
        "SELECT * FROM notes WHERE bump() = 1 "
        "AND :window_start IS NOT NULL AND :window_end IS NOT NULL"
    )
    reader = EhrDatabase(url=ehr.url.render_as_string(hide_password=False)).engine()
    try:
        with reader.connect() as conn, pytest.raises(SourceError, match="fails on this database"):
            list(CustomSqlSource(query).extract(conn, date(2026, 3, 1), date(2026, 3, 2)))
    finally:
        reader.dispose()
    assert rows_in(ehr) == [1]


def test_the_pipelines_ehr_engine_is_read_only(ehr):
    reader = EhrDatabase(url=ehr.url.render_as_string(hide_password=False)).engine()
    try:
        with reader.connect() as conn, pytest.raises(DBAPIError):
            conn.exec_driver_sql("INSERT INTO notes (x) VALUES (5)")
            conn.commit()
    finally:
        reader.dispose()
    assert rows_in(ehr) == [1]


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path):
    missing = tmp_path / "no such ehr.db"
    reader = read_only_engine(f"sqlite:///{missing}")
    with pytest.raises(DBAPIError):
        reader.connect().close()
    assert not missing.exists()


def test_in_memory_sqlite_still_works_and_still_refuses_writes():
    reader = read_only_engine("sqlite://")
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        with pytest.raises(DBAPIError):
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")


@pytest.mark.parametrize(
    ("url", "database", "query"),
    [
        ("sqlite:////srv/ehr/a b#%.db", "file:/srv/ehr/a%20b%23%25.db", {"mode": "ro"}),
        ("sqlite:///relative.db", "file:relative.db", {"mode": "ro"}),
        ("sqlite:///file:/srv/x.db?uri=true", "file:/srv/x.db", {"mode": "ro"}),
        ("sqlite:///file:m?mode=memory&uri=true", "file:m", {"mode": "memory"}),
        ("sqlite://", None, {}),
        ("sqlite:///:memory:", ":memory:", {}),
    ],
)
def test_sqlite_urls_open_files_read_only(url, database, query):
    parsed = sqlite_read_only_url(sa.make_url(url))
    assert parsed.database == database
    for key, value in query.items():
        assert parsed.query[key] == value


@SERVICES
def test_postgres_dates_are_parsed_by_psycopgs_c_loader_and_read_leniently():
    """The lenient loaders delegate to psycopg's C parsers (the Python ones cost a fifth of an
    OpenEMR extract) and still turn what Python cannot hold into UNREADABLE."""
    from psycopg import _cmodule

    engine = read_only_engine(server_url("postgresql").render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT '2026-12-06'::date, 'infinity'::date, '2026-12-06 10:11:12.5'::timestamp,"
                " '20000-01-01'::timestamp, '2026-12-06 10:11:12+00'::timestamptz"
            ).one()
            adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
            loader = adapters.get_loader(1082, 0)(1082)
    finally:
        engine.dispose()
    assert row[0] == date(2026, 12, 6) and row[2].microsecond == 500000
    assert row[1] is UNREADABLE and row[3] is UNREADABLE
    assert row[4].tzinfo is not None
    assert _cmodule._psycopg is not None  # psycopg[binary] is a dependency
    assert type(loader._parse.__self__).__module__ == _cmodule._psycopg.__name__
