"""The source protocol: given a connection and a window of service dates, yield billable
encounter lines in chunks, in the shape of :data:`claims_pipeline.sources.lines.LINE_SCHEMA`."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar, runtime_checkable

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import Connection

from claims_pipeline.sources.lines import LINE_SCHEMA

T = TypeVar("T")

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
#: Rows converted in the extract step's own process before worker processes are started
#: (:func:`stream_batches`): a smaller read is over before they would have imported pyarrow.
PARALLEL_AFTER_ROWS = 100_000
#: Rows a block holds when worker processes may convert it: the step holds two blocks a worker
#: ahead of the one it writes, and each worker one, as Python values (≈1 KB a row).
WORKER_BLOCK_ROWS = 5_000


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


@runtime_checkable
class BatchSource(EncounterSource, Protocol):
    """An adapter that also builds its lines as Arrow batches (column by column)."""

    def extract_batches(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        processes: int = 1,
    ) -> Iterator[pa.RecordBatch]:
        """The rows :meth:`extract` yields, as batches in LINE_SCHEMA; with ``processes`` > 1,
        a long read's rows converted by that many worker processes (:func:`stream_batches`)."""
        ...

    def extract(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`extract_batches` as chunks of row dicts (an adapter that subclasses this
        protocol inherits it)."""
        batches = self.extract_batches(conn, window_start, window_end, chunk_rows)
        rows = (row for batch in batches for row in batch.to_pylist())
        yield from chunk_by_encounter(rows, chunk_rows)


#: What an adapter builds from a block of whole encounters: a module-level function, so that a
#: worker process can be handed it (sources/workers.py).
BuildBatch = Callable[["RowBlock"], pa.RecordBatch]


class Unreadable:
    """The stand-in for a value the database driver could not decode or convert (text that is
    not UTF-8, a DATE column holding text): the value itself is never kept or shown."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNREADABLE"

    def __reduce__(self) -> str:  # the one instance, in a worker process too
        return "UNREADABLE"


#: The one :class:`Unreadable` instance (compare with ``is``).
UNREADABLE = Unreadable()
#: Key, in a raw row, of the source columns (table.column) whose values were unreadable.
UNREADABLE_KEY = "__unreadable__"
_ZERO_DATE = "0000-00-00"


def decode_text(data: bytes) -> str | Unreadable:
    """SQLite's text_factory: the UTF-8 text, or UNREADABLE (SQLite stores any bytes as TEXT,
    and the default factory fails the whole fetch on one bad cell)."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        return UNREADABLE


def read_date(value: Any) -> date | None | Unreadable:
    """A date from a driver value: None for NULL, empty or a MySQL zero date (its way of
    saying "no date"); UNREADABLE for anything else that is not an ISO date (``04/12/1985``
    is not guessed: day and month order is ambiguous)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return UNREADABLE
    if value.startswith(_ZERO_DATE):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return UNREADABLE


def read_text(value: Any) -> str | None | Unreadable:
    """Stripped text from a driver value (None when blank); UNREADABLE for undecodable text."""
    if value is None or value is UNREADABLE:
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return UNREADABLE
    text = str(value).strip()
    return text or None


def read_int(value: Any) -> int | None | Unreadable:
    if value is None or type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return UNREADABLE


def as_date(value: Any) -> date | None:
    """:func:`read_date` for values :class:`LenientRows` already checked: None if unreadable."""
    read = read_date(value)
    return None if read is UNREADABLE else read  # type: ignore[return-value]


def as_text(value: Any) -> str | None:
    """:func:`read_text` for values :class:`LenientRows` already checked: None if unreadable."""
    read = read_text(value)
    return None if read is UNREADABLE else read  # type: ignore[return-value]


#: What the ``sql`` adapter and :func:`to_record_batch` apply to each driver value, by column.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    field.name: (
        read_date
        if pa.types.is_date(field.type)
        else read_int
        if pa.types.is_integer(field.type)
        else read_text
    )
    for field in LINE_SCHEMA
}


def spread_lines(
    encounter: Mapping[str, list[Any]], lines: Mapping[str, list[Any]], line_encounters: list[int]
) -> pa.RecordBatch:
    """A batch in LINE_SCHEMA from columns of two kinds: ``encounter`` holds one value per
    encounter, spread over its lines by index (``line_encounters[i]`` is line i's encounter),
    and ``lines`` one value per line."""
    spread = pa.array(line_encounters, pa.int32())
    arrays = [
        pa.array(encounter[field.name], field.type).take(spread)
        if field.name in encounter
        else pa.array(lines[field.name], field.type)
        for field in LINE_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=LINE_SCHEMA)


def to_record_batch(rows: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    """Arrow batch in LINE_SCHEMA from adapter rows, coercing driver types (Decimal, datetime,
    bytes, MySQL zero dates) so every dialect stores the same values."""
    rows = rows if isinstance(rows, list) else list(rows)
    try:  # rows already of the schema's types (what the adapters yield) convert in C
        # (what RecordBatch.from_pylist does, at half its cost)
        columns = {name: [row.get(name) for row in rows] for name in LINE_SCHEMA.names}
        return pa.RecordBatch.from_pydict(columns, schema=LINE_SCHEMA)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass  # a raw driver value somewhere: coerce every row in Python
    columns = {name: [] for name in LINE_SCHEMA.names}
    for row in rows:
        for name, convert in CONVERTERS.items():
            value = convert(row.get(name))
            columns[name].append(None if value is UNREADABLE else value)
    return pa.RecordBatch.from_pydict(columns, schema=LINE_SCHEMA)


# Types whose equal values convert alike (1 == 1.0 == Decimal("1.00") == True do not).
_PLAIN_TYPES = frozenset({str, bytes, int, type(None)})


def convert_each(convert: Callable[..., T], *columns: Sequence[Any]) -> list[T]:
    """``convert`` of each row of ``columns``, computed once per distinct row when every value
    is text, bytes, an int or None (a block's codes, names and addresses repeat); value by
    value otherwise."""
    if not all(set(map(type, column)) <= _PLAIN_TYPES for column in columns):
        return list(map(convert, *columns))
    if len(columns) == 1:
        (column,) = columns
        done = {value: convert(value) for value in set(column)}
        return list(map(done.__getitem__, column))
    rows = list(zip(*columns, strict=True))
    converted = {row: convert(*row) for row in set(rows)}
    return list(map(converted.__getitem__, rows))


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


class LenientRows:
    """A statement's rows with every value the driver cannot decode or convert replaced by
    None and named (``row[UNREADABLE_KEY]``: the source ``table.column`` of each), instead of
    an exception that would end the whole stream.

    SQLAlchemy converts DATE, DATETIME and NUMERIC values on SQLite itself (from text), and one
    text where a date should be raises for the whole result: those columns are selected
    without SQLAlchemy's conversion and converted here, the way SQLAlchemy would, row by row.
    Text that is not UTF-8 arrives as UNREADABLE from :func:`decode_text`, or, read as bytes
    (:func:`stream_batches` on SQLite), is decoded the same way by :meth:`block`.
    """

    def __init__(self, statement: sa.Select[Any], dialect: sa.Dialect):
        self.sources = _source_names(statement)
        columns: list[Any] = []
        self.conversions: list[tuple[str, Callable[[Any], Any]]] = []
        for column in statement.selected_columns:
            convert = _lenient_converter(column.type)
            if convert is not None:
                if column.key is None:  # its values would come back under a made-up name
                    raise ValueError(f"label the selected column {column} to read it leniently")
                self.conversions.append((column.key, convert))
                if column.type._type_affinity is not sa.Integer:
                    column = sa.type_coerce(column, sa.types.NullType()).label(column.key)
            columns.append(column)
        self.statement = statement.with_only_columns(*columns, maintain_column_froms=True)
        # SQLite hands over undecodable text (decode_text) and bytes where text should be;
        # MySQL bytes from binary columns. PostgreSQL checks encodings when it stores text.
        self.scan_values = dialect.name in ("sqlite", "mysql", "mariadb")
        # stream_batches reads SQLite's text as bytes (its one text factory that costs no
        # Python call per value); :meth:`block` decodes them as decode_text would.
        self.text_as_bytes = dialect.name == "sqlite"
        self.__setstate__({})

    def __getstate__(self) -> dict[str, Any]:
        """What :meth:`block` needs, for a worker process (sources/workers.py): not the
        statement, nor the caches."""
        names = ("sources", "conversions", "scan_values", "text_as_bytes")
        return {key: self.__dict__[key] for key in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # Text (SQLite's dates and numbers) repeats across rows: each converted once.
        self._converters = [
            (key, convert, _text_cache(convert)) for key, convert in self.conversions
        ]

    def converter(self, key: str) -> Callable[[Any], Any]:
        """How :meth:`block` reads the values of column ``key`` (unchanged, if not at all)."""
        convert = dict(self.conversions).get(key, _unchanged)
        if self.text_as_bytes:
            return lambda value: convert(_decoded(value))
        return convert

    def block(self, keys: Sequence[str], raw: Sequence[Sequence[Any]]) -> RowBlock:
        """Rows of plain value tuples in ``keys`` order (``Result`` rows) as columns, each value
        converted leniently: a value the driver could not read becomes None and
        :attr:`RowBlock.unreadable` names its source column for that row. Column by column:
        a text conversion runs once per distinct text, and the scan for undecodable values
        looks at the set of a column's value types (in C) and walks the column only when an
        :data:`UNREADABLE` or ``bytes`` is among them."""
        keys = list(keys)
        columns: dict[str, list[Any]] = {key: [] for key in keys}
        if raw:
            transposed = zip(keys, zip(*raw, strict=True), strict=True)
            columns = {key: list(values) for key, values in transposed}
        if self.text_as_bytes:
            for key, column in columns.items():
                if bytes in set(map(type, column)):  # each distinct value decoded once
                    columns[key] = convert_each(_decoded, column)
        flagged: dict[int, set[str]] = {}
        for key, convert, cached in self._converters:
            column = columns[key] = [
                value if value is None else cached(value) if type(value) is str else convert(value)
                for value in columns[key]
            ]
            if Unreadable in set(map(type, column)):
                for row, value in enumerate(column):
                    if value is UNREADABLE:
                        flagged.setdefault(row, set()).add(key)
        if self.scan_values:
            for key, column in columns.items():
                kinds = set(map(type, column))
                if Unreadable in kinds or bytes in kinds:
                    for row, value in enumerate(column):
                        if value is UNREADABLE or (
                            type(value) is bytes and read_text(value) is UNREADABLE
                        ):
                            flagged.setdefault(row, set()).add(key)
        for row, names in flagged.items():
            for key in names:
                columns[key][row] = None
        return RowBlock(
            columns,
            {row: sorted({self.sources[key] for key in names}) for row, names in flagged.items()},
        )


def _decoded(value: Any) -> Any:
    """A value read as bytes as :func:`decode_text` makes it (a BLOB too, which SQLite hands
    over as bytes either way); any other value as it is."""
    return decode_text(value) if type(value) is bytes else value


@dataclass(slots=True)
class RowBlock:
    """Consecutive rows of a statement as converted columns (:meth:`LenientRows.block`)."""

    columns: dict[str, list[Any]]
    #: row index -> the source columns (``table.column``) whose values were unreadable there
    unreadable: dict[int, list[str]]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def rows(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts; an unreadable row also has :data:`UNREADABLE_KEY`."""
        keys, unreadable = list(self.columns), self.unreadable
        for index, values in enumerate(zip(*self.columns.values(), strict=True)):
            row = dict(zip(keys, values, strict=True))
            if index in unreadable:
                row[UNREADABLE_KEY] = unreadable[index]
            yield row

    @staticmethod
    def concat(blocks: Sequence[RowBlock]) -> RowBlock:
        """The rows of ``blocks`` (of the same columns), in order."""
        if len(blocks) == 1:
            return blocks[0]
        columns: dict[str, list[Any]] = {key: [] for key in blocks[0].columns}
        unreadable: dict[int, list[str]] = {}
        for block in blocks:
            size = len(next(iter(columns.values()), ()))
            unreadable.update({size + row: names for row, names in block.unreadable.items()})
            for key, column in block.columns.items():
                columns[key] += column
        return RowBlock(columns, unreadable)


def _unchanged(value: Any) -> Any:
    return value


def _text_cache(convert: Callable[[Any], Any]) -> Callable[[str], Any]:
    """``convert`` remembering its result per text value (equal text, equal result: the
    results are immutable dates, datetimes, Decimals and ints). Only for ``str`` input:
    ``Decimal("1.0") == Decimal("1.00")`` and ``-0.0 == 0.0`` would share a wrong entry."""
    return functools.lru_cache(maxsize=65_536)(convert)


def _source_names(statement: sa.Select[Any]) -> dict[str, str]:
    """Each selected column's key -> the ``table.column`` it reads ("a/b" when a union reads
    several; its own key when it is computed)."""
    names: dict[str, str] = {}
    for column in statement.selected_columns:
        if column.key is None:  # unlabelled: a row holds it under a made-up name
            continue
        found = sorted(
            {
                f"{base.table.name}.{base.name}"
                for base in column.base_columns
                if isinstance(getattr(base, "table", None), sa.Table)
            }
        )
        key = str(column.key)
        names[key] = "/".join(found) or key
    return names


def _lenient_converter(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    affinity = kind._type_affinity
    if affinity is sa.DateTime:
        return _as_datetime
    if affinity is sa.Date:
        return _as_date_value
    if affinity is sa.Integer:
        return read_int
    if affinity is sa.Numeric and getattr(kind, "asdecimal", True):
        scale = getattr(kind, "scale", None)
        return functools.partial(_as_decimal, scale=scale)
    return None


def _as_date_value(value: Any) -> Any:
    return value if isinstance(value, date) else read_date(value)


def _as_datetime(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        if value.startswith(_ZERO_DATE):
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return UNREADABLE
    return UNREADABLE


def _as_decimal(value: Any, scale: int | None) -> Any:
    """What SQLAlchemy's Numeric gives for a driver value (a float formatted at the column's
    scale), or UNREADABLE for text that is not a number."""
    if type(value) is Decimal:
        return value
    if isinstance(value, float):
        return Decimal(f"%.{scale}f" % value) if scale is not None else Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        # SQLite stores 220.00 in a NUMERIC(12,2) column as the integer 220.
        try:
            return Decimal(value).scaleb(0).quantize(Decimal(1).scaleb(-(scale or 0)))
        except ArithmeticError:
            return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except ArithmeticError:
            return UNREADABLE
    return UNREADABLE


def convert_block(
    lenient: LenientRows, keys: Sequence[str], build: BuildBatch, rows: Sequence[tuple[Any, ...]]
) -> pa.RecordBatch:
    """The batch of a block of raw rows (whole encounters), converted FETCH_ROWS at a time: a
    few thousand driver values alive at once, not a block's worth for the garbage collector."""
    parts = [
        lenient.block(keys, rows[at : at + FETCH_ROWS]) for at in range(0, len(rows), FETCH_ROWS)
    ]
    return build(RowBlock.concat(parts))


def stream_batches(
    conn: Connection,
    statement: sa.Select[Any],
    group: str,
    block_rows: int,
    build: BuildBatch,
    processes: int = 1,
) -> Iterator[pa.RecordBatch]:
    """``build`` of each block of whole groups (rows sharing a value of the ``group`` column,
    contiguous) of about ``block_rows`` rows of ``statement``, read leniently from a
    server-side cursor, in order. With ``processes`` > 1, blocks of at most
    :data:`WORKER_BLOCK_ROWS` rows, and once :data:`PARALLEL_AFTER_ROWS` rows have been
    converted here, the blocks after are converted by that many worker processes while this
    process reads on (sources/workers.py): a short read never pays for starting them."""
    lenient = LenientRows(statement, conn.dialect)
    if processes > 1:
        block_rows = min(block_rows, WORKER_BLOCK_ROWS)
    with _text_as_bytes(conn, lenient.text_as_bytes):
        yield from _stream(conn, lenient, group, block_rows, build, processes)


@contextmanager
def _text_as_bytes(conn: Connection, wanted: bool) -> Iterator[None]:
    """SQLite's text read as bytes inside the block (:attr:`LenientRows.text_as_bytes`), the
    connection's own text factory back after it."""
    if not wanted:
        yield
        return
    driver: Any = conn.connection.driver_connection
    factory = driver.text_factory
    driver.text_factory = bytes
    try:
        yield
    finally:
        driver.text_factory = factory


def _stream(
    conn: Connection,
    lenient: LenientRows,
    group: str,
    block_rows: int,
    build: BuildBatch,
    processes: int,
) -> Iterator[pa.RecordBatch]:
    result = conn.execute(lenient.statement, execution_options=STREAMING)
    try:
        keys = list(result.keys())
        blocks = _raw_blocks(result, keys.index(group), lenient.converter(group), block_rows)
        converted = 0
        for rows in blocks:
            if processes > 1 and converted >= PARALLEL_AFTER_ROWS:
                blocks = itertools.chain([rows], blocks)
                break
            yield convert_block(lenient, keys, build, rows)
            converted += len(rows)
        else:
            return
        from claims_pipeline.sources.workers import BlockWorkers

        with BlockWorkers(processes, lenient, keys, build) as workers:
            yield from workers.batches(blocks)
    finally:
        result.close()


def _raw_blocks(
    result: sa.CursorResult[Any],
    group: int,
    convert: Callable[[Any], Any],
    block_rows: int,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``result`` as plain tuples, in blocks of about ``block_rows`` rows that end
    where the value of column ``group`` changes (compared as ``convert`` reads it): a group
    is never split, and one longer than ``block_rows`` is a block of its own."""
    rows: list[tuple[Any, ...]] = []
    while fetched := result.fetchmany(min(FETCH_ROWS, block_rows)):
        rows += map(tuple, fetched)
        if len(rows) < block_rows:
            continue
        last = convert(rows[-1][group])
        start = len(rows) - 1  # the first row of the last group
        while start > 0 and convert(rows[start - 1][group]) == last:
            start -= 1
        if start == 0:  # one group so far: it may go on in the next fetch
            continue
        yield rows[:start]
        rows = rows[start:]
    if rows:
        yield rows


def unreadable_columns(names: Iterable[str]) -> str | None:
    """The ``unreadable_columns`` value for these source column names (sorted, distinct)."""
    return ",".join(sorted(set(names))) or None
