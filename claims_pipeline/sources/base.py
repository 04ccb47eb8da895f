"""The source protocol: given a connection and a window of service dates, yield billable
encounter lines in chunks, in the shape of :data:`claims_pipeline.sources.lines.LINE_SCHEMA`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

import pyarrow as pa
from sqlalchemy import Connection, Executable, RowMapping

from claims_pipeline.sources.lines import LINE_SCHEMA

# A chunk is a list of row dicts, about 1 KB a row in Python, and a consumer's loop holds the
# previous chunk while the next is built. 20,000 rows keep a 500,000-line day under 250 MB of
# peak RSS; larger chunks only add memory, not speed (benchmarks/extract_memory.py).
DEFAULT_CHUNK_ROWS = 20_000
# Rows per fetch of a server-side cursor: enough to amortise round trips; more would only
# hold more driver rows beside the chunk being built.
FETCH_ROWS = 2_000
#: Execution options that stream a result from a server-side cursor, FETCH_ROWS at a time.
#: Passed per execute: Connection.execution_options() would change the caller's connection.
STREAMING = {"stream_results": True, "yield_per": FETCH_ROWS}


class EncounterSource(Protocol):
    """An EHR schema adapter. Implementations are plain classes, one module each."""

    name: str

    def check(self, conn: Connection) -> list[str]:
        """Problems with the live schema (missing table or column, each named with its fix);
        empty when the adapter can read this database."""
        ...

    def extract(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> Iterator[list[dict[str, Any]]]:
        """Billable encounter lines with ``window_start <= service_date < window_end``, in
        chunks of about ``chunk_rows`` rows, ordered by service_date, encounter, line. Every
        row has the keys of LINE_SCHEMA. An encounter never spans two chunks."""
        ...

    def count_encounters(self, conn: Connection, window_start: date, window_end: date) -> int:
        """How many billable encounters fall in the window (for check-source)."""
        ...


def as_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    if text.startswith("0000-00-00"):  # MySQL zero dates mean "unknown"
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        # A text column holding "04/12/1985" is unreadable, not guessed (day/month order is
        # ambiguous): the value counts as missing, so that encounter is rejected by
        # validation and the night goes on. The value itself is never quoted.
        return None


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        value = value.decode()
    text = str(value).strip()
    return text or None


def as_int(value: Any) -> int | None:
    return None if value is None else int(value)


CONVERTERS = {
    field.name: (
        as_date
        if pa.types.is_date(field.type)
        else as_int
        if pa.types.is_integer(field.type)
        else as_text
    )
    for field in LINE_SCHEMA
}


def to_record_batch(rows: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    """Arrow batch in LINE_SCHEMA from adapter rows, coercing driver types (Decimal, datetime,
    bytes, MySQL zero dates) so every dialect stores the same values."""
    rows = rows if isinstance(rows, list) else list(rows)
    try:  # rows already of the schema's types (what the adapters yield) convert in C
        return pa.RecordBatch.from_pylist(rows, schema=LINE_SCHEMA)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass  # a raw driver value somewhere: coerce every row in Python
    columns: dict[str, list[Any]] = {name: [] for name in LINE_SCHEMA.names}
    for row in rows:
        for name, convert in CONVERTERS.items():
            columns[name].append(convert(row.get(name)))
    return pa.RecordBatch.from_pydict(columns, schema=LINE_SCHEMA)


def chunk_by_encounter(
    rows: Iterable[Mapping[str, Any]], chunk_rows: int
) -> Iterator[list[dict[str, Any]]]:
    """Group an ordered row stream into chunks of about ``chunk_rows`` rows without splitting an
    encounter (rows of one encounter must be contiguous in the input)."""
    chunk: list[dict[str, Any]] = []
    for row in rows:
        if type(row) is not dict:  # adapters build fresh dicts; copy anything else
            row = dict(row)
        if len(chunk) >= chunk_rows and row["encounter_id"] != chunk[-1]["encounter_id"]:
            yield chunk
            chunk = []
        chunk.append(row)
    if chunk:
        yield chunk


class SharedValues:
    """Hands back the object already held for an equal value seen before, so the codes,
    amounts, addresses and dates that repeat across a chunk's rows are stored once (most of a
    chunk is such repeats). Bounded: forgets everything past ``limit`` distinct values."""

    def __init__(self, limit: int = 65_536):
        self._values: dict[Any, Any] = {}
        self._limit = limit

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        held = self._values.get(value)
        if held is None:
            if len(self._values) >= self._limit:
                self._values.clear()
            self._values[value] = held = value
        return held


def stream_chunks(
    conn: Connection,
    statement: Executable,
    to_lines: Callable[[Iterator[RowMapping]], Iterator[dict[str, Any]]],
    chunk_rows: int,
) -> Iterator[list[dict[str, Any]]]:
    """Run ``statement`` on a server-side cursor and yield ``to_lines`` of its rows in chunks
    that never split an encounter: memory holds about one chunk whatever the window. The
    connection is busy until the iterator is exhausted or closed."""
    result = conn.execute(statement, execution_options=STREAMING)
    try:
        yield from chunk_by_encounter(to_lines(result.mappings()), chunk_rows)
    finally:
        result.close()
