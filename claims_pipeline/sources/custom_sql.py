"""The ``sql`` adapter (``EHR_SCHEMA=sql``): the practice's own query, kept in a file
(``EHR_QUERY_FILE``), for an EHR that is neither the reference schema nor OpenEMR (Epic Clarity,
athenahealth, eClinicalWorks, a data warehouse, ...).

The contract, documented for users in ``docs/sources.md``:

- One read-only statement (``SELECT`` or ``WITH ... SELECT``; it runs on a read-only
  connection, and functions that act outside it such as ``dblink_exec`` are refused), with the
  bind parameters
  ``:window_start`` and ``:window_end`` (dates; the window is ``window_start <= service_date <
  window_end``), and no others.
- It returns every column of :data:`~claims_pipeline.sources.lines.LINE_SCHEMA`, by name (case
  does not matter; ``NULL AS name`` where the EHR has no value), one row per charge line.
  Extra columns are ignored.
- It ends with ``ORDER BY service_date, encounter_id, line_number``. A stream cannot be
  sorted afterwards without holding it all, so the adapter checks the order as rows arrive
  and stops at the first encounter that comes back after another one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from datetime import date
from os import PathLike
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Result
from sqlalchemy.exc import SQLAlchemyError

from claims_pipeline.errors import SourceError
from claims_pipeline.phi import describe_error

# The shared driver-value coercions (Decimal, bytes, datetimes, MySQL zero dates).
from claims_pipeline.sources.base import (
    CONVERTERS,
    DEFAULT_CHUNK_ROWS,
    STREAMING,
    UNREADABLE,
    chunk_by_encounter,
    unreadable_columns,
)
from claims_pipeline.sources.lineage import QUERY_TABLE
from claims_pipeline.sources.lines import LINE_COLUMNS, UNREADABLE_COLUMNS

#: The columns the query returns: every LINE_SCHEMA column but the one the adapter fills.
QUERY_COLUMNS = tuple(name for name in LINE_COLUMNS if name != UNREADABLE_COLUMNS)

BIND_PARAMETERS = ("window_start", "window_end")
#: Columns that place a row; a row without one cannot be stored, so it stops the extract.
KEY_COLUMNS = ("service_date", "encounter_id", "claim_submitter_identifier")
# An empty window, for reading the result's column names without reading rows.
_NO_DAY = date(2000, 1, 1)

# Comments, string literals and quoted identifiers, which may contain anything (a ';', the
# word DELETE) without it being SQL: blanked out before the statement is inspected.
_OPAQUE = re.compile(
    r"""
      --[^\n]*                 # line comment
    | /\*.*?\*/                # block comment
    | '(?:[^']|'')*'           # string literal ('' escapes a quote)
    | "(?:[^"]|"")*"           # quoted identifier (ANSI)
    | `[^`]*`                  # quoted identifier (MySQL)
    | \[[^\]]*\]               # quoted identifier (SQL Server)
    """,
    re.DOTALL | re.VERBOSE,
)
# Statements that change data or schema. The query runs on a read-only connection
# (sources/connection.py) with the pipeline's database user, which should be read-only too;
# this keeps a pasted script from doing damage first, and names what is wrong.
_WRITES = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|UPSERT|TRUNCATE|DROP|ALTER|CREATE|GRANT|REVOKE"
    r"|EXEC|EXECUTE|CALL|INTO)\b",
    re.IGNORECASE,
)
# Functions that act outside the read-only session: their own connection (dblink), server
# files (lo_export, pg_write_file via adminpack, ...), or session settings (set_config could
# turn the read-only default off for the next transaction).
_ESCAPES = re.compile(
    r"\b(DBLINK\w*|SET_CONFIG|LO_\w+|PG_\w*FILE\w*|PG_TERMINATE_BACKEND|PG_CANCEL_BACKEND"
    r"|PG_RELOAD_CONF|PG_ROTATE_LOGFILE|PG_PROMOTE|PG_SWITCH_WAL|PG_CREATE\w*|PG_DROP\w*"
    r"|PG_REPLICATION\w*|PG_ADVISORY\w*|SYS_EXEC|SYS_EVAL|LOAD_FILE)\s*\(",
    re.IGNORECASE,
)


def _blank_opaque(sql: str) -> str:
    """``sql`` with comments, literals and quoted identifiers replaced by spaces of the same
    length, so positions still match the original."""
    return _OPAQUE.sub(lambda match: " " * len(match.group()), sql)


def parse_query(sql: str, origin: str) -> sa.TextClause:
    """The query as a bound ``text()`` clause, after checking that it is one read-only SELECT
    (or WITH) statement using the bind parameters :window_start and :window_end and no other.
    Raises :class:`SourceError` naming ``origin`` (the file) and what is wrong."""
    scan = _blank_opaque(sql)
    end = len(scan.rstrip().rstrip(";").rstrip())  # a trailing ";" only ends the statement
    head = scan[:end]
    # A T-SQL habit: ";WITH cte AS (...)". A leading semicolon ends no statement either.
    start = len(head) - len(head.lstrip().lstrip(";").lstrip())
    body = scan[start:end]
    if not body.strip():
        raise SourceError(f"EHR_QUERY_FILE {origin} holds no query.")
    if ";" in body:
        raise SourceError(
            f"EHR_QUERY_FILE {origin} holds more than one statement: keep one SELECT (use "
            "WITH ... AS (...) for intermediate steps, not temporary tables or variables)."
        )
    first_word = re.match(r"[\s(]*(\w+)", body)
    if first_word is None or first_word.group(1).upper() not in ("SELECT", "WITH"):
        raise SourceError(
            f"EHR_QUERY_FILE {origin} must be one SELECT (or WITH ... SELECT) statement."
        )
    write = _WRITES.search(body)
    if write is not None:
        raise SourceError(
            f"EHR_QUERY_FILE {origin} uses {write.group(1).upper()}: the query must only "
            "read (SELECT ... FROM, no INTO, no procedure calls)."
        )
    escape = _ESCAPES.search(body)
    if escape is not None:
        raise SourceError(
            f"EHR_QUERY_FILE {origin} calls {escape.group(1).lower()}(), which acts outside "
            "the query's read-only connection: the query must only read the EHR's tables."
        )
    statement = sa.text(sql[start:end])
    used = set(statement.compile().params)
    # Only parameters in the SQL itself count as used, not one mentioned in a comment.
    in_code = set(sa.text(body).compile().params)
    missing = [name for name in BIND_PARAMETERS if name not in in_code]
    if missing:
        raise SourceError(
            f"EHR_QUERY_FILE {origin} does not use {', '.join(':' + n for n in missing)}: filter "
            "the service date with service_date >= :window_start AND service_date < "
            ":window_end, or every run reads the whole history."
        )
    unknown = sorted(used - set(BIND_PARAMETERS))
    if unknown:
        raise SourceError(
            f"EHR_QUERY_FILE {origin} uses bind parameter(s) "
            f"{', '.join(':' + n for n in unknown)}; only :window_start and :window_end are "
            "supplied (write other values into the query, or escape a literal colon as \\:)."
        )
    return statement.bindparams(*(sa.bindparam(name, type_=sa.Date) for name in BIND_PARAMETERS))


def _column_positions(names: Sequence[str], origin: str) -> list[tuple[str, int]]:
    """(LINE_SCHEMA column, position in the result) for every column; a SourceError naming
    each missing column (and the near miss that was probably meant for it) otherwise."""
    positions: dict[str, int] = {}
    for position, name in enumerate(names):
        positions.setdefault(name.lower(), position)
    missing = [column for column in QUERY_COLUMNS if column not in positions]
    if missing:
        extras = [name for name in names if name.lower() not in QUERY_COLUMNS]
        hints = []
        for column in missing:
            near = difflib.get_close_matches(column, extras, n=1, cutoff=0.75)
            if near:
                hints.append(f"'{near[0]}' -> '{column}'")
        hint = f" (misnamed? {', '.join(hints)})" if hints else ""
        raise SourceError(
            f"the query in EHR_QUERY_FILE {origin} does not return column(s) "
            f"{', '.join(missing)}{hint}: return them under these names (NULL AS name when "
            "the EHR has no value); docs/sources.md lists every column."
        )
    return [(column, positions[column]) for column in QUERY_COLUMNS]


class CustomSqlSource:
    """Adapter for a practice's own query (``EHR_SCHEMA=sql``, ``EHR_QUERY_FILE``)."""

    name = "sql"

    def __init__(self, query_file: str | PathLike[str]):
        self.query_file = Path(query_file)

    def statement(self) -> sa.TextClause:
        """The checked query (see :func:`parse_query`); a SourceError names the file when it
        cannot be read or is not an acceptable query."""
        try:
            sql = self.query_file.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise SourceError(
                f"EHR_QUERY_FILE {self.query_file} cannot be read ({type(error).__name__}): "
                "set EHR_QUERY_FILE to the path of your query file."
            ) from None
        except UnicodeDecodeError:
            raise SourceError(f"EHR_QUERY_FILE {self.query_file} is not UTF-8 text.") from None
        return parse_query(sql, str(self.query_file))

    def _execute(
        self, conn: Connection, window_start: date, window_end: date, stream: bool
    ) -> Result[Any]:
        statement = self.statement()
        options = STREAMING if stream else {}
        try:
            return conn.execute(
                statement,
                {"window_start": window_start, "window_end": window_end},
                execution_options=options,
            )
        except SQLAlchemyError as error:
            raise SourceError(
                f"the query in EHR_QUERY_FILE {self.query_file} fails on this database: "
                f"{_database_message(error)}"
            ) from None

    def check(self, conn: Connection) -> list[str]:
        """What stops the query from being used, each problem named with its fix: the file,
        its statement, a database error, or missing result columns. Runs the query over an
        empty window and reads only the column names."""
        try:
            result = self._execute(conn, _NO_DAY, _NO_DAY, stream=False)
        except SourceError as error:
            # PostgreSQL refuses every later statement of a transaction an error aborted.
            conn.rollback()
            return [str(error)]
        try:
            _column_positions(list(result.keys()), str(self.query_file))
        except SourceError as error:
            return [str(error)]
        finally:
            result.close()
        return []

    def extract(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> Iterator[list[dict[str, Any]]]:
        """The query's rows for the window, in chunks of about ``chunk_rows`` rows that never
        split an encounter, each with exactly the keys of LINE_SCHEMA (values coerced as
        :func:`~claims_pipeline.sources.base.to_record_batch` does).

        The result's column names are checked before any row is read. While streaming, a
        SourceError stops the extract at the first row that breaks the contract: a key column
        that is null, a service date outside the window, a service date earlier than the one
        before, or an encounter that reappears after another (the query is not ordered by
        service_date, encounter_id, line_number). Errors name the encounter_id, never a value
        about the patient."""
        result = self._execute(conn, window_start, window_end, stream=True)
        try:
            positions = _column_positions(list(result.keys()), str(self.query_file))
            rows = self._checked_rows(result, positions, window_start, window_end)
            yield from chunk_by_encounter(rows, chunk_rows)
        finally:
            result.close()

    def count_encounters(self, conn: Connection, window_start: date, window_end: date) -> int:
        """Encounters the query returns for the window, counted while checking the rows as
        :meth:`extract` does (the query is the user's, so it cannot be wrapped in a COUNT
        portably: SQL Server refuses an ORDER BY in a derived table)."""
        # With chunk_rows=1 every chunk is exactly one encounter.
        return sum(1 for _ in self.extract(conn, window_start, window_end, chunk_rows=1))

    def _checked_rows(
        self,
        result: Result[Any],
        positions: list[tuple[str, int]],
        window_start: date,
        window_end: date,
    ) -> Iterator[dict[str, Any]]:
        origin = self.query_file
        order_fix = (
            f"the query in EHR_QUERY_FILE {origin} must end with "
            "ORDER BY service_date, encounter_id, line_number"
        )
        converters = [(name, position, CONVERTERS[name]) for name, position in positions]
        current: str | None = None
        current_day: date | None = None
        # Encounters already finished on the current day; an encounter lives on one day, so
        # the set is emptied when the day moves on and memory stays bounded by one day.
        finished: set[str] = set()
        for number, raw in enumerate(result, start=1):
            row: dict[str, Any] = {
                name: convert(raw[position]) for name, position, convert in converters
            }
            row[UNREADABLE_COLUMNS] = None
            if UNREADABLE in row.values():  # identity first: a cheap scan of the row
                bad = [name for name, value in row.items() if value is UNREADABLE]
                for key in KEY_COLUMNS:
                    if key in bad:
                        raise SourceError(
                            f"row {number} of the query in EHR_QUERY_FILE {origin} has a {key} "
                            "the database driver cannot read: correct it in the EHR, or leave "
                            "such rows out of the query."
                        )
                for name in bad:
                    row[name] = None
                row[UNREADABLE_COLUMNS] = unreadable_columns(f"{QUERY_TABLE}.{n}" for n in bad)
            for key in KEY_COLUMNS:
                if row[key] is None:
                    raise SourceError(
                        f"row {number} of the query in EHR_QUERY_FILE {origin} has no {key}: "
                        "every row needs service_date, encounter_id and "
                        "claim_submitter_identifier."
                    )
            encounter_id = row["encounter_id"]
            day = row["service_date"]
            if not window_start <= day < window_end:
                raise SourceError(
                    f"encounter {encounter_id} from EHR_QUERY_FILE {origin} has a "
                    "service_date outside the window: filter with service_date >= "
                    ":window_start AND service_date < :window_end."
                )
            if encounter_id == current and day != current_day:
                raise SourceError(
                    f"encounter {encounter_id} from EHR_QUERY_FILE {origin} has rows with "
                    "different service_date values: an encounter has one date of service."
                )
            if current_day is not None and day < current_day:
                raise SourceError(f"encounter {encounter_id} is out of order: {order_fix}.")
            if day != current_day:
                finished.clear()
                current_day = day
            if encounter_id != current:
                if encounter_id in finished:
                    raise SourceError(
                        f"encounter {encounter_id} reappears after another encounter: {order_fix}."
                    )
                if current is not None:
                    finished.add(current)
                current = encounter_id
            yield row


def _database_message(error: SQLAlchemyError) -> str:
    """The driver's own message (a syntax error, a missing table) without the statement, its
    parameters or any value it quotes."""
    return describe_error(getattr(error, "orig", None) or error)
