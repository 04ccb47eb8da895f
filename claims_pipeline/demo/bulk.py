"""Bulk synthetic EHR data: exactly N billable charge lines, fast, in the reference or OpenEMR
tables (the benchmarks, the OpenEMR practice of `claims-pipeline demo --practices`, tests).

``claims_pipeline.demo.seed.seed_demo`` draws a realistic practice visit by visit and inserts
through SQLAlchemy (about 15,000 encounters/s here); it is the right tool for the 365-day
backfill, but it takes encounters, not lines, and averages 1.8 lines per encounter. This module
writes exactly ``lines`` billable charge lines (1 to 5 per encounter, 3 on average, so about
N/3 encounters), plus a few non-billable encounters that the extract must skip, straight into
the tables:

- ``reference`` schema (``claims_pipeline.sources.reference.metadata``) or ``openemr`` schema
  (``claims_pipeline.sources.openemr.OPENEMR_TABLES``);
- SQLite: one transaction of ``executemany`` with the journal off; PostgreSQL: ``COPY`` through
  psycopg, then ``ANALYZE``.

About 2 % of billable encounters carry one defect (a retired diagnosis code or zero units) so
the rejection path runs too. Every value comes from one seeded ``random.Random``: the same
arguments give the same rows.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from stdnum import luhn

from claims_pipeline.demo import catalog

SCHEMAS = ("reference", "openemr")
LINE_COUNT_WEIGHTS = ((1, 15), (2, 20), (3, 30), (4, 20), (5, 15))  # mean 3.0
NON_BILLABLE_SHARE = 0.05  # extra draft/cancelled (reference) encounters the extract skips
DEFECT_SHARE = 0.02
PROVIDERS = 40
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DateTime on SQLite


def _diagnosis_pool() -> tuple[str, ...]:
    codes: dict[str, None] = {}
    for kind in catalog.VISIT_KINDS:
        for problem in kind.problems:
            codes[problem.icd10_code] = None
        codes.update(dict.fromkeys(kind.other_diagnoses))
    codes.pop(catalog.RETIRED_ICD10, None)
    return tuple(codes)


DIAGNOSES = _diagnosis_pool()
PROCEDURES = tuple(catalog.FEES)
MODIFIERS = (None,) * 17 + ("25", "59", "59:LT")


@dataclass(frozen=True)
class Generated:
    """What :func:`generate` wrote."""

    schema: str
    url: str
    lines: int  # billable charge lines: what the extract yields
    encounters: int  # billable encounters: claims + rejections
    defective_encounters: int
    non_billable_encounters: int
    first_day: date
    last_day: date
    seconds: float


def _line_counts(rng: random.Random, lines: int) -> list[int]:
    values, weights = zip(*LINE_COUNT_WEIGHTS, strict=True)
    counts: list[int] = []
    total = 0
    while total < lines:
        draw = rng.choices(values, weights, k=4096)
        for count in draw:
            count = min(count, lines - total)
            counts.append(count)
            total += count
            if total == lines:
                break
    return counts


def _npi(rng: random.Random) -> str:
    digits = rng.choice("12") + "".join(rng.choices("0123456789", k=8))
    return digits + luhn.calc_check_digit("80840" + digits)


def _member_id(rng: random.Random) -> str:
    return "MEM" + "".join(rng.choices("0123456789", k=9))


def _phone_digits(phone: str) -> str:
    digits = "".join(ch for ch in phone if ch.isdigit())
    return digits[-10:]


#: One table row, in the table's column order.
Row = tuple[Any, ...]


@dataclass
class _Plan:
    """The draws shared by both schemas: people, encounters, their diagnoses and lines."""

    patients: list[Row]  # (id, first, last, dob, sex, payer index, member id)
    providers: list[Row]  # (id, first, last, credential, npi)
    encounters: list[Row]  # (id, patient, provider, facility, day, status, number, created)
    diagnoses: list[list[str]]  # per encounter
    lines: list[list[Row]]  # per encounter: (code, modifiers, units, amount, pointer codes)
    defective: int
    non_billable: int


def _plan(rng: random.Random, lines: int, days: Sequence[date]) -> _Plan:
    counts = _line_counts(rng, lines)
    billable = len(counts)
    non_billable = round(billable * NON_BILLABLE_SHARE)
    patient_count = max(50, billable // 3)
    names = catalog.FEMALE_NAMES + catalog.MALE_NAMES
    patients = [
        (
            pid,
            rng.choice(names),
            rng.choice(catalog.LAST_NAMES),
            days[0] - timedelta(days=rng.randint(2 * 365, 90 * 365)),
            rng.choice(("Female", "Male", "Female", "Male", "Unknown")),
            rng.randrange(len(catalog.PAYERS)),
            _member_id(rng),
        )
        for pid in range(1, patient_count + 1)
    ]
    npis: set[str] = set()
    providers = []
    for provider_id in range(1, PROVIDERS + 1):
        npi = _npi(rng)
        while npi in npis:
            npi = _npi(rng)
        npis.add(npi)
        providers.append(
            (
                provider_id,
                rng.choice(names),
                rng.choice(catalog.LAST_NAMES),
                rng.choice(("MD", "DO", "NP", "PA-C")),
                npi,
            )
        )
    # Billable and non-billable encounters interleaved, each day's in id order.
    total = billable + non_billable
    statuses = ["finalized"] * billable + ["draft"] * non_billable
    rng.shuffle(statuses)
    defective = set(rng.sample(range(billable), round(billable * DEFECT_SHARE)))
    encounters, diagnoses, line_rows = [], [], []
    billable_index = 0
    per_day = -(-total // len(days))
    for index, status in enumerate(statuses):
        day = days[min(index // per_day, len(days) - 1)]
        created = datetime.combine(day, datetime.min.time()) + timedelta(
            minutes=8 * 60 + rng.randrange(9 * 60)
        )
        encounters.append(
            (
                index + 1,
                rng.randint(1, patient_count),
                rng.randint(1, PROVIDERS),
                rng.choice(catalog.OFFICE_FACILITIES),
                day,
                status,
                index % per_day + 1,
                created,
            )
        )
        codes = rng.sample(DIAGNOSES, rng.randint(1, 4))
        if status == "finalized":
            count = counts[billable_index]
            defect = billable_index in defective
            billable_index += 1
        else:
            count, defect = 2, False
        if defect and rng.random() < 0.5:
            codes[0] = catalog.RETIRED_ICD10
        encounter_lines = []
        for number in range(count):
            code = rng.choice(PROCEDURES)
            units = 1 if not code.startswith("J") else rng.choice((1, 2, 4))
            pointers = codes[: rng.randint(1, len(codes))] if number == 0 else codes[:1]
            encounter_lines.append(
                (code, rng.choice(MODIFIERS), units, catalog.FEES[code] * units, pointers)
            )
        if defect and codes[0] != catalog.RETIRED_ICD10:
            code, modifiers, _, amount, pointers = encounter_lines[-1]
            encounter_lines[-1] = (code, modifiers, 0, amount, pointers)
        diagnoses.append(codes)
        line_rows.append(encounter_lines)
    return _Plan(
        patients, providers, encounters, diagnoses, line_rows, len(defective), non_billable
    )


# --- the reference schema ------------------------------------------------------------------


def _reference_rows(plan: _Plan) -> dict[str, Iterator[Row]]:
    from claims_pipeline.sources import reference as ref

    facilities = (
        (i, f.name, f.street, f.city, f.state, f.postal_code, f.place_of_service)
        for i, f in enumerate(catalog.FACILITIES, start=1)
    )
    payers = ((i, p.name, p.phone) for i, p in enumerate(catalog.PAYERS, start=1))
    patients = (
        (pid, first, last, dob, sex, "100 Oak St", "Austin", "TX", "78701")
        for pid, first, last, dob, sex, _, _ in plan.patients
    )
    coverages = (
        (pid, pid, payer + 1, member, "primary", date(2000, 1, 1), None)
        for pid, _, _, _, _, payer, member in plan.patients
    )
    encounters = (
        (
            eid,
            patient,
            provider,
            facility + 1,
            day,
            status,
            f"V{day:%y%m%d}{number:06d}",
            None,
            created,
            created + timedelta(minutes=30),
        )
        for eid, patient, provider, facility, day, status, number, created in plan.encounters
    )
    diagnoses = (
        (encounter[0], sequence, code)
        for encounter, codes in zip(plan.encounters, plan.diagnoses, strict=True)
        for sequence, code in enumerate(codes, start=1)
    )

    def charges() -> Iterator[Row]:
        charge_id = 0
        for encounter, lines in zip(plan.encounters, plan.lines, strict=True):
            for number, (code, modifiers, units, amount, pointers) in enumerate(lines, start=1):
                charge_id += 1
                yield (
                    charge_id,
                    encounter[0],
                    number,
                    code,
                    modifiers,
                    Decimal(units),
                    amount,
                    None,
                    None,
                    ",".join(pointers),
                    None,
                )

    columns = {
        ref.facilities: facilities,
        ref.payers: payers,
        ref.providers: iter(plan.providers),
        ref.patients: patients,
        ref.coverages: coverages,
        ref.encounters: encounters,
        ref.diagnoses: diagnoses,
        ref.charges: charges(),
    }
    return {table.name: rows for table, rows in columns.items()}


# --- the OpenEMR schema --------------------------------------------------------------------


def _openemr_rows(plan: _Plan) -> dict[str, Iterator[Row]]:
    facilities = (
        (i, f.name, f.street, f.city, f.state, f.postal_code, int(f.place_of_service), None)
        for i, f in enumerate(catalog.FACILITIES, start=1)
    )
    users = ((pid, first, last, npi) for pid, first, last, _, npi in plan.providers)
    companies = ((i, p.name, None) for i, p in enumerate(catalog.PAYERS, start=1))
    phones = (
        (i, digits[:3], digits[3:6], digits[6:], 2, i)
        for i, p in enumerate(catalog.PAYERS, start=1)
        for digits in (_phone_digits(p.phone),)
    )
    patients = (
        (pid, first, last, "", dob, sex, f"P{pid}", pid)
        for pid, first, last, dob, sex, _, _ in plan.patients
    )
    insurance = (
        (pid, "primary", str(payer + 1), member, date(2000, 1, 1), pid)
        for pid, _, _, _, _, payer, member in plan.patients
    )
    billable = [
        (encounter, codes, lines)
        for encounter, codes, lines in zip(plan.encounters, plan.diagnoses, plan.lines, strict=True)
        if encounter[5] == "finalized"  # every OpenEMR encounter in the window is billable
    ]
    encounters = (
        (eid, created, facility + 1, patient, eid, provider, facility + 1, None, None)
        for (eid, patient, provider, facility, _, _, _, created), _, _ in billable
    )

    def billing() -> Iterator[Row]:
        billing_id = 0
        for (eid, patient, _, _, _, _, _, created), codes, lines in billable:
            for code in codes:
                billing_id += 1
                yield (billing_id, created, "ICD10", code, patient, None, eid, 0, 1, None,
                       None, None, None)  # fmt: skip
            for code, modifiers, units, amount, pointers in lines:
                billing_id += 1
                justify = "".join(f"ICD10|{p}:" for p in pointers)
                yield (billing_id, created, "CPT4", code, patient, None, eid, 0, 1,
                       modifiers, units, amount, justify)  # fmt: skip

    return {
        "facility": facilities,
        "users": users,
        "insurance_companies": companies,
        "phone_numbers": phones,
        "patient_data": patients,
        "insurance_data": insurance,
        "form_encounter": encounters,
        "billing": billing(),
    }


def _metadata(schema: str) -> sa.MetaData:
    if schema == "reference":
        from claims_pipeline.sources.reference import metadata

        return metadata
    from claims_pipeline.sources.openemr import metadata

    return metadata


# --- loading -------------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime(_SQLITE_DATETIME)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _load_sqlite(path: str, metadata: sa.MetaData, rows: dict[str, Iterator[Row]]) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN")
        for table in metadata.sorted_tables:
            names = [column.name for column in table.columns]
            statement = (
                f"INSERT INTO {table.name} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})"
            )
            connection.executemany(
                statement, (tuple(map(_sqlite_value, row)) for row in rows[table.name])
            )
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
    finally:
        connection.close()


def _load_postgres(url: sa.URL, metadata: sa.MetaData, rows: dict[str, Iterator[Row]]) -> None:
    import psycopg

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        with connection.cursor() as cursor:
            for table in metadata.sorted_tables:
                names = ", ".join(f'"{column.name}"' for column in table.columns)
                with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                    for row in rows[table.name]:
                        copy.write_row(row)
        connection.commit()
        connection.autocommit = True
        connection.execute("ANALYZE")


def recreate_postgres_database(url: str) -> None:
    """Drop and create the database named in ``url`` (on the same server)."""
    target = sa.make_url(url)
    admin = sa.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    finally:
        admin.dispose()


def generate(
    url: str,
    lines: int,
    *,
    schema: str = "reference",
    days: int = 1,
    last_day: date | None = None,
    seed: int = 7,
) -> Generated:
    """Create ``schema``'s tables in the empty database at ``url`` and write exactly ``lines``
    billable charge lines on ``days`` dates of service ending ``last_day`` (default
    yesterday), spread evenly."""
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}")
    started = time.perf_counter()
    last_day = last_day or date.today() - timedelta(days=1)
    service_days = [last_day - timedelta(days=days - 1 - n) for n in range(days)]
    rng = random.Random(seed)
    plan = _plan(rng, lines, service_days)
    metadata = _metadata(schema)
    rows = _reference_rows(plan) if schema == "reference" else _openemr_rows(plan)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _load_sqlite(parsed.database or "", metadata, rows)
    elif parsed.get_backend_name() == "postgresql":
        _load_postgres(parsed, metadata, rows)
    else:
        raise ValueError("the bulk generator loads SQLite and PostgreSQL only")
    return Generated(
        schema=schema,
        url=parsed.render_as_string(hide_password=True),
        lines=lines,
        encounters=len(plan.lines) - plan.non_billable,
        defective_encounters=plan.defective,
        non_billable_encounters=plan.non_billable if schema == "reference" else 0,
        first_day=service_days[0],
        last_day=service_days[-1],
        seconds=time.perf_counter() - started,
    )
