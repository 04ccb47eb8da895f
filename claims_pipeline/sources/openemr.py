"""The OpenEMR adapter (``EHR_SCHEMA=openemr``): billable encounter lines read straight from
OpenEMR's own tables, assembled the way OpenEMR assembles a professional claim.

The tables and columns are OpenEMR's (``sql/database.sql``; described in
``docs/sources.md``). :data:`OPENEMR_TABLES` declares the ones read here with OpenEMR's column
types, so the same definitions build the extract's query and, in the tests, create an OpenEMR
database on SQLite, MariaDB or PostgreSQL. The adapter never writes to OpenEMR.

Mapping decisions (OpenEMR has no claim "status"):

- **Billable encounter**: every ``form_encounter`` row whose ``date`` falls in the window. An
  encounter already billed (``billing.billed = 1``) is read again on every run: the delivery
  ledger sends a claim only when its content changed, so re-reading is idempotent and a
  corrected charge goes out again.
- **Lines**: ``billing`` rows of the encounter with ``activity = 1``, in ``date, id`` order
  (OpenEMR's own order). Rows of a :data:`DIAGNOSIS_CODE_TYPES` type are the encounter's
  diagnoses; rows of a :data:`PROCEDURE_CODE_TYPES` type are the charge lines; any other row
  (``COPAY``, ``TAX``, ``CVX`` vaccine administrations, ...) is not part of a claim.
- **Identifiers**: ``encounter_id`` and ``claim_submitter_identifier`` are ``{pid}-{encounter}``;
  ``visit_number`` is ``encounter``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import (
    CHAR,
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.sql import visitors

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

#: ``billing.code_type`` values that are diagnoses (ICD-9 only in records from before 2015,
#: which claim validation then rejects rather than this adapter silently dropping them).
DIAGNOSIS_CODE_TYPES: tuple[str, ...] = ("ICD10", "ICD9")
#: ``billing.code_type`` values that are charge lines (procedure codes in SV1 of an 837P):
#: CPT-4 (category I and III), CPT category II, HCPCS level II.
PROCEDURE_CODE_TYPES: tuple[str, ...] = ("CPT4", "CPTII", "HCPCS")
PRIMARY = "primary"
#: ``phone_numbers.type`` of a work number (OpenEMR's PhoneNumber::TYPE_WORK).
WORK_PHONE = 2

metadata = MetaData()

# OpenEMR runs on MySQL/MariaDB; these variants give its exact types there, and the generic
# types let the same tables be created on SQLite and PostgreSQL for tests and conversions.
_TINYINT = SmallInteger().with_variant(mysql.TINYINT(), "mysql", "mariadb")
# SQLite only auto-numbers an INTEGER PRIMARY KEY, not a BIGINT one.
_BIGINT_ID = BigInteger().with_variant(Integer(), "sqlite")
_INSURANCE_TYPE = String(9).with_variant(
    mysql.ENUM("primary", "secondary", "tertiary"), "mysql", "mariadb"
)
_TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4"}

form_encounter = Table(
    "form_encounter",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True),
    Column("date", DateTime),  # date *and time* of service
    Column("facility_id", Integer, nullable=False, server_default="0"),
    Column("pid", BigInteger),
    Column("encounter", BigInteger),
    Column("provider_id", Integer, server_default="0"),
    Column("billing_facility", Integer, nullable=False, server_default="0"),
    Column("pos_code", _TINYINT),
    Column("date_end", DateTime),
    Index("form_encounter_pid_encounter", "pid", "encounter"),
    Index("form_encounter_encounter_date", "date"),
    **_TABLE_OPTIONS,
)

billing = Table(
    "billing",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("date", DateTime),
    Column("code_type", String(15)),
    Column("code", String(20)),
    Column("pid", Integer),
    Column("provider_id", Integer),
    Column("encounter", Integer),
    Column("billed", _TINYINT),
    Column("activity", _TINYINT),
    Column("modifier", String(12)),
    Column("units", Integer),
    Column("fee", Numeric(12, 2)),
    Column("justify", String(255)),
    Index("billing_pid", "pid"),
    **_TABLE_OPTIONS,
)

patient_data = Table(
    "patient_data",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True),
    Column("fname", String(255), nullable=False, server_default=""),
    Column("lname", String(255), nullable=False, server_default=""),
    Column("mname", String(255), nullable=False, server_default=""),
    Column("DOB", Date),
    Column("sex", String(255), nullable=False, server_default=""),
    Column("pubpid", String(255), nullable=False, server_default=""),
    Column("pid", BigInteger, nullable=False, server_default="0"),
    Index("patient_data_pid", "pid", unique=True),
    **_TABLE_OPTIONS,
)

insurance_data = Table(
    "insurance_data",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True),
    Column("type", _INSURANCE_TYPE),
    # The insurance_companies id as text; empty (or NULL, or 0) means "no insurance from date".
    Column("provider", String(255)),
    Column("policy_number", String(255)),
    Column("date", Date),  # effective from; NULL = since always
    Column("pid", BigInteger, nullable=False, server_default="0"),
    Index("insurance_data_pid_type_date", "pid", "type", "date", unique=True),
    **_TABLE_OPTIONS,
)

insurance_companies = Table(
    "insurance_companies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255)),
    Column("cms_id", String(15)),
    **_TABLE_OPTIONS,
)

phone_numbers = Table(
    "phone_numbers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("area_code", CHAR(3)),
    Column("prefix", CHAR(3)),
    Column("number", String(4)),
    Column("type", Integer),
    # An insurance company's (or pharmacy's) id; OpenEMR draws both from one sequence.
    Column("foreign_id", Integer),
    Index("phone_numbers_foreign_id", "foreign_id"),
    **_TABLE_OPTIONS,
)

users = Table(
    "users",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True),
    Column("fname", String(255)),
    Column("lname", String(255)),
    Column("npi", String(15)),
    **_TABLE_OPTIONS,
)

facility = Table(
    "facility",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255)),
    Column("street", String(255)),
    Column("city", String(255)),
    Column("state", String(50)),
    Column("postal_code", String(11)),
    Column("pos_code", _TINYINT),
    Column("facility_npi", String(15)),
    **_TABLE_OPTIONS,
)

#: OpenEMR's tables as read by this adapter, by name (create them with ``metadata.create_all``).
OPENEMR_TABLES: dict[str, Table] = {table.name: table for table in metadata.sorted_tables}

# OpenEMR writes "TYPE|CODE:" entries; records from before code types were prefixed hold bare
# "CODE:" entries, which OpenEMR's own claim reader still honours.
_JUSTIFY_ENTRY = re.compile(r"[:\s]+")


def _in_window(start: date, end: date) -> list[sa.ColumnElement[bool]]:
    # form_encounter.date is a DATETIME: compare with midnights, never with a date cast, so the
    # encounter_date index is used and an 18:30 visit on the last day is inside the window.
    return [
        form_encounter.c.date >= datetime.combine(start, time.min),
        form_encounter.c.date < datetime.combine(end, time.min),
    ]


def _primary_insurance_id() -> sa.ScalarSelect[Any]:
    """Id of the patient's primary ``insurance_data`` row in force on the service date: the
    latest ``date`` not after it, a NULL ``date`` only when no dated row is (OpenEMR's rule)."""
    in_force = insurance_data.alias("in_force")
    # Undated rows sort after dated ones on every dialect: under "date DESC" PostgreSQL puts
    # NULL first and MySQL, SQLite and SQL Server last, and only some have NULLS LAST.
    undated_last = sa.case(
        (in_force.c.date.is_(None), sa.literal_column("1")), else_=sa.literal_column("0")
    )
    return (
        sa.select(in_force.c.id)
        .where(
            in_force.c.pid == form_encounter.c.pid,
            in_force.c.type == PRIMARY,
            sa.or_(in_force.c.date.is_(None), in_force.c.date <= form_encounter.c.date),
        )
        .order_by(undated_last, in_force.c.date.desc(), in_force.c.id.desc())
        .limit(1)
        .correlate(form_encounter)
        .scalar_subquery()
    )


def _extract_statement(start: date, end: date) -> sa.Select[Any]:
    """One statement for the whole window: each encounter's live billing rows (diagnoses and
    procedures alike, in OpenEMR's ``date, id`` order) with the encounter's patient, payer,
    provider and facilities, ordered by encounter date and time, pid, encounter.

    Diagnoses and procedure lines both live in ``billing``, so one ordered stream carries them:
    MySQL and SQL Server drivers allow one streaming result per connection."""
    # The window's encounters with their primary insurance row, picked in the select list: a
    # correlated subquery in a join condition trips SQLAlchemy's MySQL cartesian-product lint.
    billable = (
        sa.select(
            form_encounter.c.date,
            form_encounter.c.pid,
            form_encounter.c.encounter,
            form_encounter.c.facility_id,
            form_encounter.c.billing_facility,
            form_encounter.c.provider_id,
            form_encounter.c.pos_code,
            _primary_insurance_id().label("insurance_id"),
        )
        .where(*_in_window(start, end))
        .subquery("billable")
    )
    # One work number per company (the first entered), so a second one cannot double the lines.
    work_phone = (
        sa.select(
            phone_numbers.c.foreign_id,
            sa.func.min(phone_numbers.c.id).label("phone_id"),
        )
        .where(phone_numbers.c.type == WORK_PHONE)
        .group_by(phone_numbers.c.foreign_id)
        .subquery("work_phone")
    )
    encounter_provider = users.alias("encounter_provider")
    line_provider = users.alias("line_provider")
    service_facility = facility.alias("service_facility")
    billing_facility = facility.alias("billing_facility")
    statement = sa.select(
        billable.c.date.label("encounter_date"),
        billable.c.pid,
        billable.c.encounter,
        billable.c.pos_code.label("encounter_pos"),
        service_facility.c.pos_code.label("facility_pos"),
        patient_data.c.fname.label("patient_fname"),
        patient_data.c.lname.label("patient_lname"),
        patient_data.c.DOB.label("patient_dob"),
        patient_data.c.sex.label("patient_sex"),
        insurance_data.c.provider.label("insurance_provider"),
        insurance_data.c.policy_number,
        insurance_companies.c.name.label("payer_name"),
        phone_numbers.c.area_code,
        phone_numbers.c.prefix,
        phone_numbers.c.number,
        encounter_provider.c.fname.label("provider_fname"),
        encounter_provider.c.lname.label("provider_lname"),
        encounter_provider.c.npi.label("provider_npi"),
        billing.c.provider_id.label("line_provider_id"),
        line_provider.c.fname.label("line_provider_fname"),
        line_provider.c.lname.label("line_provider_lname"),
        line_provider.c.npi.label("line_provider_npi"),
        billing_facility.c.street,
        billing_facility.c.city,
        billing_facility.c.state,
        billing_facility.c.postal_code,
        billing.c.code_type,
        billing.c.code,
        billing.c.modifier,
        billing.c.units,
        billing.c.fee,
        billing.c.justify,
    ).select_from(
        # Outer joins throughout: an encounter whose patient, provider or facility row is
        # missing, or that has no billing rows, still comes out and is rejected with a reason.
        billable.outerjoin(patient_data, patient_data.c.pid == billable.c.pid)
        .outerjoin(insurance_data, insurance_data.c.id == billable.c.insurance_id)
        # insurance_data.provider is a VARCHAR holding the company id: compare as text, which
        # every dialect can do (PostgreSQL has no varchar = integer operator).
        .outerjoin(
            insurance_companies,
            sa.cast(insurance_companies.c.id, String(255)) == insurance_data.c.provider,
        )
        .outerjoin(work_phone, work_phone.c.foreign_id == insurance_companies.c.id)
        .outerjoin(phone_numbers, phone_numbers.c.id == work_phone.c.phone_id)
        .outerjoin(encounter_provider, encounter_provider.c.id == billable.c.provider_id)
        .outerjoin(service_facility, service_facility.c.id == billable.c.facility_id)
        .outerjoin(billing_facility, billing_facility.c.id == billable.c.billing_facility)
        .outerjoin(
            billing,
            sa.and_(
                billing.c.pid == billable.c.pid,
                billing.c.encounter == billable.c.encounter,
                billing.c.activity == 1,
                billing.c.code_type.in_(DIAGNOSIS_CODE_TYPES + PROCEDURE_CODE_TYPES),
            ),
        )
        .outerjoin(line_provider, line_provider.c.id == billing.c.provider_id)
    )
    return statement.order_by(
        billable.c.date, billable.c.pid, billable.c.encounter, billing.c.date, billing.c.id
    )


def _read_columns(statement: sa.Select[Any]) -> dict[str, tuple[str, ...]]:
    """Every OpenEMR table.column the statement reads, found by walking it (so the schema
    check can never drift from the query)."""
    found: dict[str, set[str]] = {}
    for element in visitors.iterate(statement):
        if not isinstance(element, sa.ColumnClause):
            continue
        for base in element.base_columns:
            table = getattr(base, "table", None)
            if isinstance(table, Table) and table.metadata is metadata:
                found.setdefault(table.name, set()).add(base.name)
    return {
        table.name: tuple(c.name for c in table.columns if c.name in found.get(table.name, ()))
        for table in metadata.sorted_tables
        if table.name in found
    }


#: What :meth:`OpenEmrSource.check` requires: every column the extract reads, per table.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = _read_columns(
    _extract_statement(date(2000, 1, 1), date(2000, 1, 2))
)


def _joined(*parts: Any) -> str | None:
    words = [text for text in map(as_text, parts) if text]
    return " ".join(words) or None


def _nonzero(value: Any) -> bool:
    """OpenEMR's "empty": NULL, 0, '' and '0' all mean "not set"."""
    text = as_text(value)
    return text is not None and text != "0"


def justify_codes(justify: Any) -> str | None:
    """The diagnosis codes a ``billing.justify`` value points at, comma-separated, in order:
    ``ICD10|M54.50:ICD10|G89.29:`` -> ``M54.50,G89.29``. Entries of other code types (a
    SNOMED justification) are not diagnoses on a claim and are left out; untyped legacy
    entries (``M54.50:``) are kept."""
    text = as_text(justify)
    if text is None:
        return None
    codes = []
    for entry in _JUSTIFY_ENTRY.split(text):
        code_type, separator, code = entry.partition("|")
        if not separator:
            code_type, code = "", code_type
        if code.strip() and (not code_type or code_type.upper() in DIAGNOSIS_CODE_TYPES):
            codes.append(code.strip())
    return ",".join(codes) or None


def _units(value: Any) -> str | None:
    # OpenEMR's own claim writes 1 when units are empty, and empty includes 0 in PHP.
    return as_text(value) if _nonzero(value) else None


def _place_of_service(encounter_pos: Any, facility_pos: Any) -> str | None:
    for value in (encounter_pos, facility_pos):
        if _nonzero(value):
            return as_text(value)
    return None


def _payer_phone(area_code: Any, prefix: Any, number: Any) -> str | None:
    return "".join(as_text(part) or "" for part in (area_code, prefix, number)) or None


_DIAGNOSIS = 0
_PROCEDURE = 1
_OTHER = 2


def _kind(code_type: Any) -> int:
    """What a billing row of this ``code_type`` is on a claim."""
    code_type = (code_type or "").upper()
    if code_type in DIAGNOSIS_CODE_TYPES:
        return _DIAGNOSIS
    return _PROCEDURE if code_type in PROCEDURE_CODE_TYPES else _OTHER


def _line_batch(block: RowBlock) -> pa.RecordBatch:
    """The LINE_SCHEMA lines of a block of whole encounters (their joined billing rows are
    contiguous), column by column. An encounter's diagnosis rows become its
    claim_diagnosis_codes and its procedure rows its lines, in billing order; an encounter
    without procedures is one line with null line columns, so that it is counted (and
    rejected) rather than lost. The claim-level columns are computed once per encounter, from
    its first row, and spread over its lines by index; every line of an encounter names the
    unreadable source columns of all its rows."""
    columns = block.columns
    kinds = convert_each(_kind, columns["code_type"])
    codes = convert_each(as_text, columns["code"])
    first_rows: list[int] = []  # per encounter: its first row
    diagnoses: list[list[int]] = []  # per encounter: its diagnosis rows
    procedures: list[list[int]] = []  # per encounter: its procedure rows
    previous: Any = object()
    for row, (key, kind) in enumerate(
        zip(zip(columns["pid"], columns["encounter"], strict=True), kinds, strict=True)
    ):
        if key != previous:
            previous = key
            first_rows.append(row)
            diagnoses.append([])
            procedures.append([])
        if kind == _DIAGNOSIS:
            diagnoses[-1].append(row)
        elif kind == _PROCEDURE:
            procedures[-1].append(row)
    lines: list[int | None] = []  # per line: its procedure row (None: the encounter has none)
    line_numbers: list[int | None] = []
    line_encounters: list[int] = []  # per line: its encounter's number
    for number, rows in enumerate(procedures):
        if rows:
            lines += rows
            line_numbers += range(1, len(rows) + 1)
            line_encounters += [number] * len(rows)
        else:
            lines.append(None)
            line_numbers.append(None)
            line_encounters.append(number)
    unreadable: dict[int, list[str]] = {}  # per encounter number: of all its rows
    for row, names in block.unreadable.items():
        unreadable.setdefault(bisect_right(first_rows, row) - 1, []).extend(names)

    def first(name: str) -> list[Any]:  # per encounter
        column = columns[name]
        return [column[row] for row in first_rows]

    def line(name: str) -> list[Any]:  # per line
        column = columns[name]
        return [None if row is None else column[row] for row in lines]

    encounter_keys = [
        f"{pid}-{number}" for pid, number in zip(first("pid"), first("encounter"), strict=True)
    ]
    # A primary row with no company ("" or 0) is how OpenEMR records "uninsured from this
    # date": the encounter goes out with no payer and no member id, and is rejected as
    # uninsured. A company id that matches no company is different: the member id is kept
    # and the missing payer name is reported as such.
    insured = convert_each(_nonzero, first("insurance_provider"))

    def if_insured(values: Iterable[Any]) -> list[Any]:
        return [value if covered else None for covered, value in zip(insured, values, strict=True)]

    encounter: dict[str, list[Any]] = {
        "service_date": list(map(as_date, first("encounter_date"))),
        "encounter_id": encounter_keys,
        "claim_submitter_identifier": encounter_keys,
        "visit_number": convert_each(as_text, first("encounter")),
        "patient_name": convert_each(_joined, first("patient_fname"), first("patient_lname")),
        "patient_dob": list(map(as_date, first("patient_dob"))),
        "patient_gender": convert_each(as_text, first("patient_sex")),
        "patient_member_id": if_insured(convert_each(as_text, first("policy_number"))),
        "payer_name": if_insured(convert_each(as_text, first("payer_name"))),
        "payer_phone": if_insured(
            convert_each(_payer_phone, first("area_code"), first("prefix"), first("number"))
        ),
        "place_of_service": convert_each(
            _place_of_service, first("encounter_pos"), first("facility_pos")
        ),
        "claim_diagnosis_codes": [
            ",".join(code for row in rows if (code := codes[row])) or None for rows in diagnoses
        ],
        "provider_street": convert_each(as_text, first("street")),
        "provider_city": convert_each(as_text, first("city")),
        "provider_state": convert_each(as_text, first("state")),
        "provider_postal_code": convert_each(as_text, first("postal_code")),
        "unreadable_columns": [
            unreadable_columns(unreadable[number]) if number in unreadable else None
            for number in range(len(first_rows))
        ],
    }
    # A line's own rendering provider wins, even when its users row is missing: billing it
    # under the encounter provider's NPI would be wrong. A line-less encounter's provider is
    # the encounter's, from its first row.
    provider_rows = [
        first_rows[number] if row is None else row
        for row, number in zip(lines, line_encounters, strict=True)
    ]
    by_line = convert_each(_nonzero, line("line_provider_id"))

    def provider(part: str) -> list[Any]:
        own, of_encounter = columns["line_provider_" + part], columns["provider_" + part]
        return [
            own[row] if mine else of_encounter[row]
            for mine, row in zip(by_line, provider_rows, strict=True)
        ]

    line_values: dict[str, list[Any]] = {
        "provider_name": convert_each(_joined, provider("fname"), provider("lname")),
        "provider_npi": convert_each(as_text, provider("npi")),
        "line_number": line_numbers,
        "hcpcs_code": [None if row is None else codes[row] for row in lines],
        "modifiers": convert_each(as_text, line("modifier")),
        "units": convert_each(_units, line("units")),
        "line_amount": list(map(as_text, line("fee"))),  # already price x units
        # OpenEMR dates every service of an encounter on the encounter's date.
        "line_service_date_from": [None] * len(lines),
        "line_service_date_to": [None] * len(lines),
        "line_diagnosis_codes": convert_each(justify_codes, line("justify")),
    }
    return spread_lines(encounter, line_values, line_encounters)


def _schema_problems(conn: Connection, required: Mapping[str, Sequence[str]]) -> list[str]:
    inspector = sa.inspect(conn)
    present = {
        name.lower(): name for name in inspector.get_table_names() + inspector.get_view_names()
    }
    problems: list[str] = []
    for table_name, needed in required.items():
        actual = present.get(table_name.lower())
        if actual is None:
            problems.append(
                f"table '{table_name}' is missing: point EHR_DATABASE_URL at the OpenEMR "
                f"database and grant the user SELECT on {table_name}."
            )
            continue
        columns = {column["name"].lower() for column in inspector.get_columns(actual)}
        for name in needed:
            if name.lower() not in columns:
                problems.append(
                    f"table '{table_name}' has no column '{name}': point EHR_DATABASE_URL at "
                    f"OpenEMR's own database (5.0 or later); if it is a copy or a view, add "
                    f"{table_name}.{name} to it (docs/sources.md)."
                )
    return problems


class OpenEmrSource(BatchSource):
    """Adapter for an OpenEMR database (``EHR_SCHEMA=openemr``)."""

    name = "openemr"

    def check(self, conn: Connection) -> list[str]:
        """Each OpenEMR table or column the extract reads that the live database lacks, named
        with its fix; empty when the extract can run. Views count as tables."""
        return _schema_problems(conn, REQUIRED_COLUMNS)

    def extract_batches(
        self,
        conn: Connection,
        window_start: date,
        window_end: date,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        processes: int = 1,
    ) -> Iterator[pa.RecordBatch]:
        """Charge lines of the encounters dated ``window_start <= date < window_end``
        (``form_encounter.date`` from midnight to midnight), as Arrow batches in LINE_SCHEMA
        (built column by column) of about ``chunk_rows`` rows that never split an encounter,
        ordered by encounter date and time, pid, encounter, then OpenEMR's line order. Every
        row has exactly the keys of LINE_SCHEMA; an encounter without procedure lines is one
        row with null line columns. Rows stream from one server-side cursor (see
        ``stream_batches``), converted by ``processes`` worker processes in a long read."""
        statement = _extract_statement(window_start, window_end)
        # Blocks never split a run of equal encounter numbers, so never an encounter (a run
        # of equal pid and encounter).
        yield from stream_batches(conn, statement, "encounter", chunk_rows, _line_batch, processes)

    def count_encounters(self, conn: Connection, window_start: date, window_end: date) -> int:
        """Encounters dated ``window_start <= date < window_end``: every one is billable."""
        statement = (
            sa.select(sa.func.count())
            .select_from(form_encounter)
            .where(*_in_window(window_start, window_end))
        )
        return int(conn.execute(statement).scalar_one())
