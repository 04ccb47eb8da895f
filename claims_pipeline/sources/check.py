"""``claims-pipeline check-source``: can the configured adapter read the configured EHR, and how
many billable encounters does a window hold? Findings name tables, columns, settings and
fixes; they never contain a row value (no PHI) or the database password."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from claims_pipeline.errors import ClaimsPipelineError
from claims_pipeline.phi import describe_error, safe_url
from claims_pipeline.sources import get_source
from claims_pipeline.sources.connection import read_only_engine

#: The driver each dialect needs, and how to get it.
DRIVER_HINTS = {
    "mssql": "pip install 'claims_pipeline[mssql]' (pymssql), or pyodbc with an ODBC driver",
    "postgresql": "psycopg is a dependency: use postgresql+psycopg://",
    "mysql": "pymysql is a dependency: use mysql+pymysql://",
    "mariadb": "pymysql is a dependency: use mysql+pymysql://",
}


@dataclass
class SourceReport:
    """What :func:`check_source` found. ``problems`` each name what is wrong and its fix;
    ``notes`` are worth knowing but do not stop the pipeline. Nothing here is PHI."""

    database: str  # the URL with its password hidden
    schema: str
    window_start: date
    window_end: date  # exclusive
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    encounter_count: int | None = None

    @property
    def ok(self) -> bool:
        """True when the adapter can read the database and counted the window."""
        return not self.problems and self.encounter_count is not None

    @property
    def findings(self) -> list[str]:
        """Every problem then every note, as printed."""
        return [f"problem: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]


def _driver_message(error: BaseException, password: str | None) -> str:
    """The driver's message (host unreachable, access denied, unknown database) without what
    it may quote: values, SQL parameters, dates, the password."""
    original = getattr(error, "orig", None) or error
    text = describe_error(original, secrets=[password] if password else [])
    return " ".join(text.split())  # one line: drivers add hints on lines of their own


def _missing_sqlite_file(url: URL) -> bool:
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    return not Path(database).expanduser().is_file()


def check_source(
    url: str,
    schema: str,
    query_file: str | None,
    window_start: date,
    window_end: date,
) -> SourceReport:
    """Connect to ``url`` with the ``schema`` adapter, verify every table and column it reads
    (or, for ``sql``, the query file and its result columns) and count the billable encounters
    with ``window_start <= service date < window_end``. Never raises for a source problem: each
    becomes a finding in the report."""
    shown = safe_url(url)
    report = SourceReport(shown, schema, window_start, window_end)
    try:
        parsed = make_url(url)
    except ArgumentError:
        report.problems.append(
            "EHR_DATABASE_URL is not a SQLAlchemy URL: set it like "
            "mysql+pymysql://user:password@host:3306/openemr."
        )
        return report
    try:
        source = get_source(schema, query_file)
    except ClaimsPipelineError as error:
        report.problems.append(str(error))
        return report
    if _missing_sqlite_file(parsed):
        # Connecting would create an empty file and then report every table missing.
        report.problems.append(
            f"EHR_DATABASE_URL names a SQLite file that does not exist ({shown}): set "
            "EHR_DATABASE_URL to your EHR database (or run claims-pipeline seed-demo for the "
            "demo)."
        )
        return report
    try:
        engine = read_only_engine(parsed, poolclass=sa.NullPool)
    except (NoSuchModuleError, ImportError, ArgumentError) as error:
        hint = DRIVER_HINTS.get(parsed.get_backend_name(), "install the driver the URL names")
        report.problems.append(
            f"the database driver for {parsed.drivername} is not available "
            f"({type(error).__name__}): {hint}."
        )
        return report
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as error:
            report.problems.append(
                f"cannot connect to {shown} ({_driver_message(error, parsed.password)}): check "
                "the host, port, user, password and database name in EHR_DATABASE_URL."
            )
            return report
        with conn:
            try:
                problems = source.check(conn)
            except SQLAlchemyError as error:
                problems = [
                    f"the schema of {shown} cannot be inspected "
                    f"({_driver_message(error, parsed.password)}): grant the user read access "
                    "to the database's catalog."
                ]
            report.problems.extend(problems)
            if problems:
                return report
            try:
                count = source.count_encounters(conn, window_start, window_end)
            except ClaimsPipelineError as error:
                report.problems.append(str(error))
                return report
            except SQLAlchemyError as error:
                # Only the error's kind: a message raised while rows are read can quote a
                # value from them (PostgreSQL's "invalid input syntax ... 'Smith'").
                original = getattr(error, "orig", None) or error
                report.problems.append(
                    f"counting the window's encounters failed ({type(original).__name__}): "
                    "run the adapter's query for these dates in your SQL client to see the "
                    "database's message."
                )
                return report
    finally:
        engine.dispose()
    report.encounter_count = count
    if count == 0:
        report.notes.append(
            "no billable encounters in the window: if the practice saw patients then, check "
            "that EHR_DATABASE_URL points at the live database (not a test copy) and the dates."
        )
    return report
