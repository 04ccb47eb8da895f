"""The reference EHR schema and its adapter.

The reference schema is the project's own, documented in ``docs/reference-schema.md``: the demo
database uses it, and a practice whose EHR is not OpenEMR maps its data onto it (tables, or views
with these names and columns). :class:`ReferenceSource` reads it.

Values the adapter compares with (``encounters.status = 'finalized'``, ``coverages.priority =
'primary'``) are lower case; ids are the EHR's own and never generated here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Unicode,
)

# The shared driver-value coercions (Decimal, bytes, datetimes, MySQL zero dates).
from claims_pipeline.sources.base import (
    DEFAULT_CHUNK_ROWS,
    BatchSource,
    RowBlock,
    as_date,
    as_text,
    convert_each,
    spread_lines,
    stream_batches,
    unreadable_columns,
)

BILLABLE_STATUS = "finalized"
PRIMARY = "primary"
CLAIM_ID_PREFIX = "REF-"

metadata = MetaData()

# Names and addresses are Unicode (NVARCHAR on SQL Server) and MySQL tables utf8mb4 whatever the
# server's default, so that Núñez or Nguyễn survive the round trip.
_TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4"}

# Only keys and the columns that place a row (dates, status, ordering) are NOT NULL: a missing
# name, code or amount should reach claim validation and come back as a rejection with a reason,
# not make a practice's nightly copy into these tables fail.

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("first_name", Unicode(60)),
    Column("last_name", Unicode(60)),
    Column("date_of_birth", Date),
    Column("sex", String(20)),
    Column("street", Unicode(100)),
    Column("city", Unicode(60)),
    Column("state", String(2)),
    Column("postal_code", String(10)),
    **_TABLE_OPTIONS,
)

facilities = Table(
    "facilities",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", Unicode(100)),
    Column("street", Unicode(100)),
    Column("city", Unicode(60)),
    Column("state", String(2)),
    Column("postal_code", String(10)),
    Column("place_of_service", String(2)),
    **_TABLE_OPTIONS,
)

providers = Table(
    "providers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("first_name", Unicode(60)),
    Column("last_name", Unicode(60)),
    Column("credential", String(20)),
    Column("npi", String(10)),
    **_TABLE_OPTIONS,
)

payers = Table(
    "payers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", Unicode(100)),
    Column("phone", String(30)),
    **_TABLE_OPTIONS,
)

coverages = Table(
    "coverages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("patient_id", Integer, ForeignKey("patients.id"), nullable=False),
    Column("payer_id", Integer, ForeignKey("payers.id"), nullable=False),
    Column("member_id", String(40)),
    Column("priority", String(10), nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("effective_to", Date),
    # The payer look-up is "this patient's primary coverage in force on a date".
    Index("ix_coverages_patient_priority", "patient_id", "priority", "effective_from"),
    **_TABLE_OPTIONS,
)

encounters = Table(
    "encounters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("patient_id", Integer, ForeignKey("patients.id"), nullable=False),
    Column("provider_id", Integer, ForeignKey("providers.id"), nullable=False),
    Column("facility_id", Integer, ForeignKey("facilities.id"), nullable=False),
    Column("service_date", Date, nullable=False),
    Column("status", String(20), nullable=False),
    Column("visit_number", String(40)),
    Column("place_of_service", String(2)),
    Column("created_at", DateTime),
    Column("updated_at", DateTime),
    # The extract's window filter and its ordering.
    Index("ix_encounters_service_date_status", "service_date", "status"),
    **_TABLE_OPTIONS,
)

diagnoses = Table(
    "diagnoses",
    metadata,
    # The primary key leads with encounter_id, so it is also the per-encounter index.
    Column("encounter_id", Integer, ForeignKey("encounters.id"), primary_key=True),
    Column("sequence", Integer, primary_key=True, autoincrement=False),
    Column("icd10_code", String(10)),
    **_TABLE_OPTIONS,
)

charges = Table(
    "charges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("encounter_id", Integer, ForeignKey("encounters.id"), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("hcpcs_code", String(10)),
    Column("modifiers", String(20)),
    Column("units", Numeric(10, 3)),
    Column("line_amount", Numeric(12, 2)),
    Column("service_date_from", Date),
    Column("service_date_to", Date),
    Column("diagnosis_codes", String(100)),
    Column("provider_id", Integer, ForeignKey("providers.id")),
    Index("ix_charges_encounter_line", "encounter_id", "line_number", unique=True),
    **_TABLE_OPTIONS,
)

#: Columns kept for people (and for future incremental extracts) that the extract never reads;
#: a mapped database may leave them out.
OPTIONAL_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    {
        ("patients", "street"),
        ("patients", "city"),
        ("patients", "state"),
        ("patients", "postal_code"),
        ("facilities", "name"),
        ("encounters", "created_at"),
        ("encounters", "updated_at"),
        ("charges", "id"),
    }
)

#: What :meth:`ReferenceSource.check` requires: every column the extract reads, per table.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    table.name: tuple(
        column.name for column in table.columns if (table.name, column.name) not in OPTIONAL_COLUMNS
    )
    for table in metadata.sorted_tables
}

# Row kinds of the extract's single stream, in the order they sort within an encounter: its
# diagnoses, its claim-level row, its charge lines.
_DIAGNOSIS_ROW = 0
_ENCOUNTER_ROW = 1
_LINE_ROW = 2


def _window(start: date, end: date) -> list[sa.ColumnElement[bool]]:
    return [
        encounters.c.status == BILLABLE_STATUS,
        encounters.c.service_date >= start,
        encounters.c.service_date < end,
    ]


def _primary_coverage_id() -> sa.ScalarSelect[Any]:
    """Id of the encounter patient's primary coverage in force on the service date; when
    several are, the one that started last."""
    in_force = coverages.alias("in_force")
    return (
        sa.select(in_force.c.id)
        .where(
            in_force.c.patient_id == encounters.c.patient_id,
            in_force.c.priority == PRIMARY,
            in_force.c.effective_from <= encounters.c.service_date,
            sa.or_(
                in_force.c.effective_to.is_(None),
                in_force.c.effective_to >= encounters.c.service_date,
            ),
        )
        .order_by(in_force.c.effective_from.desc(), in_force.c.id.desc())
        .limit(1)
        .correlate(encounters)
        .scalar_subquery()
    )


def _extract_statement(start: date, end: date) -> sa.Select[Any]:
    """One statement for the whole window: each encounter's diagnosis rows followed by its
    charge-line rows, ordered by service date, encounter, kind, sequence/line number.

    Diagnoses travel in the same ordered stream (a UNION ALL) rather than a second query,
    because MySQL and SQL Server drivers allow one streaming result per connection (PyMySQL
    silently truncates the first), and an ordered string aggregate is not portable (SQLite
    before 3.44 cannot order group_concat)."""
    # The window's encounters with their payer's coverage id, picked in the select list: a
    # correlated subquery in a join condition trips SQLAlchemy's MySQL cartesian-product lint.
    billable = (
        sa.select(
            encounters.c.id,
            encounters.c.patient_id,
            encounters.c.provider_id,
            encounters.c.facility_id,
            encounters.c.service_date,
            encounters.c.visit_number,
            encounters.c.place_of_service,
            _primary_coverage_id().label("coverage_id"),
        )
        .where(*_window(start, end))
        .subquery("billable")
    )
    encounter_provider = providers.alias("encounter_provider")
    line_provider = providers.alias("line_provider")
    # Each kind of row fills its own columns; the others are typed NULLs (cheap to sort and
    # fetch): the claim-level columns travel once per encounter, not on each of its lines.
    encounter_values = {
        "service_date": billable.c.service_date,
        "encounter_key": billable.c.id,
        "row_kind": sa.literal_column(str(_ENCOUNTER_ROW), Integer),
        "visit_number": billable.c.visit_number,
        "patient_first_name": patients.c.first_name,
        "patient_last_name": patients.c.last_name,
        "date_of_birth": patients.c.date_of_birth,
        "sex": patients.c.sex,
        "member_id": coverages.c.member_id,
        "payer_name": payers.c.name,
        "payer_phone": payers.c.phone,
        "encounter_pos": billable.c.place_of_service,
        "facility_pos": facilities.c.place_of_service,
        "street": facilities.c.street,
        "city": facilities.c.city,
        "state": facilities.c.state,
        "postal_code": facilities.c.postal_code,
        "provider_first_name": encounter_provider.c.first_name,
        "provider_last_name": encounter_provider.c.last_name,
        "provider_credential": encounter_provider.c.credential,
        "provider_npi": encounter_provider.c.npi,
    }
    line_values = {
        "service_date": encounters.c.service_date,
        "encounter_key": encounters.c.id,
        "row_kind": sa.literal_column(str(_LINE_ROW), Integer),
        "ordinal": charges.c.line_number,
        "line_provider_id": charges.c.provider_id,
        "line_provider_first_name": line_provider.c.first_name,
        "line_provider_last_name": line_provider.c.last_name,
        "line_provider_credential": line_provider.c.credential,
        "line_provider_npi": line_provider.c.npi,
        "hcpcs_code": charges.c.hcpcs_code,
        "modifiers": charges.c.modifiers,
        "units": charges.c.units,
        "line_amount": charges.c.line_amount,
        "service_date_from": charges.c.service_date_from,
        "service_date_to": charges.c.service_date_to,
        "diagnosis_codes": charges.c.diagnosis_codes,
    }
    diagnosis_values = {
        "service_date": encounters.c.service_date,
        "encounter_key": encounters.c.id,
        "row_kind": sa.literal_column(str(_DIAGNOSIS_ROW), Integer),
        "ordinal": diagnoses.c.sequence,
        "diagnosis_code": diagnoses.c.icd10_code,
    }
    # The union's columns with their types (the same in every kind that has them).
    names = list(dict.fromkeys([*encounter_values, *line_values, *diagnosis_values]))
    types = {
        name: column.type
        for values in (encounter_values, line_values, diagnosis_values)
        for name, column in values.items()
    }

    def select(values: dict[str, Any]) -> sa.Select[Any]:
        return sa.select(
            *(
                (values[name] if name in values else sa.cast(sa.null(), types[name])).label(name)
                for name in names
            )
        )

    encounter_rows = select(encounter_values).select_from(
        # Outer joins throughout: an encounter whose patient, provider or facility row is
        # missing still comes out (and is rejected for the missing field) instead of vanishing.
        billable.outerjoin(patients, patients.c.id == billable.c.patient_id)
        .outerjoin(facilities, facilities.c.id == billable.c.facility_id)
        .outerjoin(encounter_provider, encounter_provider.c.id == billable.c.provider_id)
        .outerjoin(coverages, coverages.c.id == billable.c.coverage_id)
        .outerjoin(payers, payers.c.id == coverages.c.payer_id)
    )
    line_rows = (
        select(line_values)
        .select_from(
            charges.join(encounters, encounters.c.id == charges.c.encounter_id).outerjoin(
                line_provider, line_provider.c.id == charges.c.provider_id
            )
        )
        .where(*_window(start, end))
    )
    diagnosis_rows = (
        select(diagnosis_values)
        .select_from(diagnoses.join(encounters, encounters.c.id == diagnoses.c.encounter_id))
        .where(*_window(start, end))
    )
    rows = sa.union_all(encounter_rows, line_rows, diagnosis_rows).subquery("encounter_rows")
    return sa.select(rows).order_by(
        rows.c.service_date, rows.c.encounter_key, rows.c.row_kind, rows.c.ordinal
    )


def _joined(*parts: Any) -> str | None:
    words = [text for text in map(as_text, parts) if text]
    return " ".join(words) or None


def _units(value: Any) -> str | None:
    # NUMERIC(10,3) reads back as 1.000; "1" is what the EHR meant.
    return as_text(value.normalize() if isinstance(value, Decimal) else value)


def _codes(text: Any) -> str | None:
    """Comma-separated codes, blanks dropped, in the order written."""
    codes = [code.strip() for code in str(text).split(",")] if text is not None else []
    return ",".join(code for code in codes if code) or None


def _provider_name(first: Any, last: Any, credential: Any) -> str | None:
    name = _joined(first, last)
    credential = as_text(credential)
    return f"{name}, {credential}" if name and credential else name


def _line_batch(block: RowBlock) -> pa.RecordBatch:
    """The LINE_SCHEMA lines of a block of whole encounters, column by column. Each
    encounter's diagnosis rows become its claim_diagnosis_codes, its claim-level row its
    claim-level columns (computed once, spread over its lines by index) and each charge-line
    row a line; an encounter without charges is one line with null line columns, so that it
    is counted (and rejected) rather than lost."""
    columns, unreadable = block.columns, block.unreadable
    claim_rows: list[int] = []  # per encounter: its claim-level row
    claim_codes: list[str | None] = []  # per encounter: its diagnosis codes
    lines: list[int | None] = []  # per line: its row (None: the encounter has no charges)
    line_encounters: list[int] = []  # per line: its encounter's number
    line_unreadable: list[str | None] = []
    encounter_key: Any = object()
    codes: list[str] = []
    number: int | None = None
    claim_unreadable: list[str] = []  # of the encounter's diagnosis and claim-level rows
    diagnosis_codes = columns["diagnosis_code"]

    def close_encounter() -> None:
        if number is not None and (not line_encounters or line_encounters[-1] != number):
            lines.append(None)
            line_encounters.append(number)
            line_unreadable.append(unreadable_columns(claim_unreadable) or None)

    for row, (key, kind) in enumerate(
        zip(columns["encounter_key"], columns["row_kind"], strict=True)
    ):
        if key != encounter_key:
            close_encounter()
            encounter_key, codes, number, claim_unreadable = key, [], None, []
        if kind == _DIAGNOSIS_ROW:
            code = as_text(diagnosis_codes[row])
            if code:
                codes.append(code)
            if row in unreadable:
                claim_unreadable += _kind_of(unreadable[row], diagnosis=True)
        elif number is None:  # the claim-level row (the first, if a view repeats it)
            if kind != _ENCOUNTER_ROW:
                raise ValueError(f"encounter {key}: charge lines without its encounter row")
            number = len(claim_rows)
            claim_rows.append(row)
            claim_codes.append(",".join(codes) or None)
            if row in unreadable:
                claim_unreadable += _kind_of(unreadable[row], diagnosis=False)
        elif kind == _LINE_ROW:
            lines.append(row)
            line_encounters.append(number)
            names = claim_unreadable
            if row in unreadable:
                names = [*names, *_kind_of(unreadable[row], diagnosis=False)]
            line_unreadable.append(unreadable_columns(names) if names else None)
    close_encounter()

    def first(name: str) -> list[Any]:  # per encounter
        column = columns[name]
        return [column[row] for row in claim_rows]

    def line(name: str) -> list[Any]:  # per line
        column = columns[name]
        return [None if row is None else column[row] for row in lines]

    keys = first("encounter_key")
    encounter: dict[str, list[Any]] = {
        "service_date": list(map(as_date, first("service_date"))),
        "encounter_id": [str(key) for key in keys],
        "claim_submitter_identifier": [f"{CLAIM_ID_PREFIX}{key}" for key in keys],
        "visit_number": list(map(as_text, first("visit_number"))),
        "patient_name": list(map(_joined, first("patient_first_name"), first("patient_last_name"))),
        "patient_dob": list(map(as_date, first("date_of_birth"))),
        "patient_gender": convert_each(as_text, first("sex")),
        "patient_member_id": list(map(as_text, first("member_id"))),
        "payer_name": convert_each(as_text, first("payer_name")),
        "payer_phone": convert_each(as_text, first("payer_phone")),
        "place_of_service": [
            as_text(by_encounter) or as_text(by_facility)
            for by_encounter, by_facility in zip(
                first("encounter_pos"), first("facility_pos"), strict=True
            )
        ],
        "claim_diagnosis_codes": claim_codes,
        "provider_street": convert_each(as_text, first("street")),
        "provider_city": convert_each(as_text, first("city")),
        "provider_state": convert_each(as_text, first("state")),
        "provider_postal_code": convert_each(as_text, first("postal_code")),
    }
    # A line that names its own rendering provider uses that provider's name and NPI even when
    # the row it points at is missing: billing it under someone else's NPI would be wrong.
    by_line = [value is not None for value in line("line_provider_id")]

    def provider(part: str) -> list[Any]:
        of_encounter = first("provider_" + part)
        return [
            own if mine else of_encounter[number]
            for mine, own, number in zip(
                by_line, line("line_provider_" + part), line_encounters, strict=True
            )
        ]

    line_values: dict[str, list[Any]] = {
        "provider_name": convert_each(
            _provider_name, provider("first_name"), provider("last_name"), provider("credential")
        ),
        "provider_npi": convert_each(as_text, provider("npi")),
        "line_number": [None if value is None else int(value) for value in line("ordinal")],
        "hcpcs_code": convert_each(as_text, line("hcpcs_code")),
        "modifiers": convert_each(as_text, line("modifiers")),
        "units": convert_each(_units, line("units")),
        "line_amount": convert_each(as_text, line("line_amount")),
        "line_service_date_from": list(map(as_date, line("service_date_from"))),
        "line_service_date_to": list(map(as_date, line("service_date_to"))),
        "line_diagnosis_codes": convert_each(_codes, line("diagnosis_codes")),
        "unreadable_columns": line_unreadable,
    }
    return spread_lines(encounter, line_values, line_encounters)


def _kind_of(unreadable: Iterable[str], diagnosis: bool) -> list[str]:
    """Unreadable source columns of a row; a column the union reads from both kinds of row
    (``charges.line_number/diagnoses.sequence``) named by the table of this row's kind."""
    names = []
    for name in unreadable:
        parts = name.split("/")
        if len(parts) > 1:
            parts = [part for part in parts if part.startswith("diagnoses.") == diagnosis] or parts
        names.append("/".join(parts))
    return names


class ReferenceSource(BatchSource):
    """Adapter for the reference schema (``EHR_SCHEMA=reference``)."""

    name = "reference"

    def check(self, conn: Connection) -> list[str]:
        """Each table or column the extract needs that the live database lacks, named with its
        fix; empty when the extract can run. Views count as tables."""
        inspector = sa.inspect(conn)
        present = {
            name.lower(): name for name in inspector.get_table_names() + inspector.get_view_names()
        }
        problems: list[str] = []
        for table in metadata.sorted_tables:
            needed = REQUIRED_COLUMNS[table.name]
            actual_name = present.get(table.name)
            if actual_name is None:
                problems.append(
                    f"table '{table.name}' is missing: create it (reference.metadata.create_all)"
                    f" or a view named '{table.name}' with columns {', '.join(needed)}"
                    " (docs/reference-schema.md)."
                )
                continue
            columns = {column["name"].lower() for column in inspector.get_columns(actual_name)}
            # SQL Server spells it ADD without COLUMN; the others accept ADD COLUMN.
            add = "ADD" if conn.dialect.name == "mssql" else "ADD COLUMN"
            for name in needed:
                if name not in columns:
                    kind = table.c[name].type.compile(dialect=conn.dialect)
                    problems.append(
                        f"table '{table.name}' has no column '{name}': add it, e.g. "
                        f"ALTER TABLE {table.name} {add} {name} {kind}"
                        " (or map it in your view)."
                    )
        return problems

    def extract_batches(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        processes: int = 1,
    ) -> Iterator[pa.RecordBatch]:
        """Charge lines of finalized encounters with ``window_start <= service_date <
        window_end``, as Arrow batches in LINE_SCHEMA (built column by column) of about
        ``chunk_rows`` rows that never split an encounter, ordered by service date,
        encounter id, line number. Every row has exactly the keys of LINE_SCHEMA; an
        encounter without charges is one row with null line columns. Rows stream from one
        server-side cursor (see ``stream_batches``), converted by
        ``processes`` worker processes in a long read."""
        statement = _extract_statement(window_start, window_end)
        yield from stream_batches(
            conn, statement, "encounter_key", chunk_rows, _line_batch, processes
        )

    def count_encounters(self, conn: Connection, window_start: date, window_end: date) -> int:
        """Finalized encounters with ``window_start <= service_date < window_end``."""
        statement = (
            sa.select(sa.func.count())
            .select_from(encounters)
            .where(*_window(window_start, window_end))
        )
        return int(conn.execute(statement).scalar_one())
