"""Peak memory of extracting one big partition: ``python -m benchmarks.extract_memory --lines
500000`` (``--schema openemr`` for the OpenEMR adapter).

Writes a SQLite EHR with ``--lines`` charge lines (3 per encounter, 2 diagnoses each) on one
date of service, then extracts that day in a fresh Python process exactly as the
``ehr_encounters`` asset does (adapter ``extract`` -> ``to_record_batch`` -> a zstd Parquet
writer) and reports wall time, lines/s and the process's peak RSS (``ru_maxrss``). Generating
the data happens in this process, so it does not count. The target is a peak under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from claims_pipeline.sources.base import DEFAULT_CHUNK_ROWS

DAY = date(2026, 3, 2)
LINES_PER_ENCOUNTER = 3
PATIENTS = 20_000
PROVIDERS = 40
_BATCH = 20_000
_PROCEDURES = [("99213", "150.00"), ("85025", "18.00"), ("36415", "12.00"), ("96372", "40.00")]
_DIAGNOSES = ["I10", "E11.9", "M54.50", "J06.9", "E78.5", "Z00.00"]


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _npi(n: int) -> str:
    from stdnum import luhn

    base = f"1{n:08d}"
    return base + luhn.calc_check_digit("80840" + base)


def generate_reference(url: str, lines: int) -> int:
    """Fill a reference-schema database; returns the number of encounters."""
    import sqlalchemy as sa

    from claims_pipeline.sources import reference as ref

    engine = sa.create_engine(url)
    ref.metadata.create_all(engine)
    encounters = -(-lines // LINES_PER_ENCOUNTER)
    with engine.begin() as conn:
        conn.execute(
            ref.facilities.insert(),
            [
                dict(
                    id=1,
                    name="Main",
                    street="2100 Mission St",
                    city="San Francisco",
                    state="CA",
                    postal_code="94110",
                    place_of_service="11",
                )
            ],
        )
        conn.execute(
            ref.providers.insert(),
            [
                dict(id=i, first_name="Pat", last_name=f"Provider{i}", credential="MD", npi=_npi(i))
                for i in range(1, PROVIDERS + 1)
            ],
        )
        conn.execute(ref.payers.insert(), [dict(id=1, name="Aetna", phone="(800) 555-0123")])
        for batch in _batches(
            dict(
                id=i,
                first_name="Alex",
                last_name=f"Patient{i}",
                date_of_birth=date(1960 + i % 50, 1 + i % 12, 1 + i % 28),
                sex="Female" if i % 2 else "Male",
            )
            for i in range(1, PATIENTS + 1)
        ):
            conn.execute(ref.patients.insert(), batch)
        for batch in _batches(
            dict(
                id=i,
                patient_id=i,
                payer_id=1,
                member_id=f"MEM{i:07d}",
                priority="primary",
                effective_from=date(2024, 1, 1),
            )
            for i in range(1, PATIENTS + 1)
        ):
            conn.execute(ref.coverages.insert(), batch)
        for batch in _batches(
            dict(
                id=e,
                patient_id=1 + e % PATIENTS,
                provider_id=1 + e % PROVIDERS,
                facility_id=1,
                service_date=DAY,
                status="finalized",
                visit_number=f"V{e:08d}",
            )
            for e in range(1, encounters + 1)
        ):
            conn.execute(ref.encounters.insert(), batch)
        for batch in _batches(
            dict(encounter_id=e, sequence=s, icd10_code=_DIAGNOSES[(e + s) % len(_DIAGNOSES)])
            for e in range(1, encounters + 1)
            for s in (1, 2)
        ):
            conn.execute(ref.diagnoses.insert(), batch)
        for batch in _batches(
            dict(
                id=n,
                encounter_id=1 + (n - 1) // LINES_PER_ENCOUNTER,
                line_number=1 + (n - 1) % LINES_PER_ENCOUNTER,
                hcpcs_code=_PROCEDURES[n % len(_PROCEDURES)][0],
                modifiers="25" if n % 7 == 0 else None,
                units=Decimal(1),
                line_amount=Decimal(_PROCEDURES[n % len(_PROCEDURES)][1]),
                diagnosis_codes=_DIAGNOSES[(1 + (n - 1) // LINES_PER_ENCOUNTER) % 6],
            )
            for n in range(1, lines + 1)
        ):
            conn.execute(ref.charges.insert(), batch)
    engine.dispose()
    return encounters


def generate_openemr(url: str, lines: int) -> int:
    """Fill an OpenEMR-tables database; returns the number of encounters."""
    import sqlalchemy as sa

    from claims_pipeline.sources import openemr as oe

    engine = sa.create_engine(url)
    oe.metadata.create_all(engine)
    encounters = -(-lines // LINES_PER_ENCOUNTER)
    start = datetime.combine(DAY, datetime.min.time())
    with engine.begin() as conn:
        conn.execute(
            oe.facility.insert(),
            [
                dict(
                    id=1,
                    name="Main",
                    street="2100 Mission St",
                    city="San Francisco",
                    state="CA",
                    postal_code="94110",
                    pos_code=11,
                )
            ],
        )
        conn.execute(
            oe.users.insert(),
            [
                dict(id=i, fname="Pat", lname=f"Provider{i}", npi=_npi(i))
                for i in range(1, PROVIDERS + 1)
            ],
        )
        conn.execute(oe.insurance_companies.insert(), [dict(id=1, name="Aetna")])
        conn.execute(
            oe.phone_numbers.insert(),
            [dict(id=1, area_code="800", prefix="555", number="0123", type=2, foreign_id=1)],
        )
        for batch in _batches(
            dict(
                id=i,
                pid=i,
                fname="Alex",
                lname=f"Patient{i}",
                DOB=date(1960 + i % 50, 1 + i % 12, 1 + i % 28),
                sex="Female" if i % 2 else "Male",
            )
            for i in range(1, PATIENTS + 1)
        ):
            conn.execute(oe.patient_data.insert(), batch)
        for batch in _batches(
            dict(
                id=i,
                pid=i,
                type="primary",
                provider="1",
                policy_number=f"MEM{i:07d}",
                date=date(2024, 1, 1),
            )
            for i in range(1, PATIENTS + 1)
        ):
            conn.execute(oe.insurance_data.insert(), batch)
        for batch in _batches(
            dict(
                id=e,
                pid=1 + e % PATIENTS,
                encounter=e,
                date=start + timedelta(seconds=e % 86_400),
                facility_id=1,
                billing_facility=1,
                provider_id=1 + e % PROVIDERS,
            )
            for e in range(1, encounters + 1)
        ):
            conn.execute(oe.form_encounter.insert(), batch)

        def billing_rows() -> Iterator[dict[str, Any]]:
            row_id = 0
            for e in range(1, encounters + 1):
                pid = 1 + e % PATIENTS
                when = start + timedelta(seconds=e % 86_400)
                codes = [_DIAGNOSES[(e + s) % len(_DIAGNOSES)] for s in (1, 2)]
                for code in codes:
                    row_id += 1
                    yield dict(
                        id=row_id, date=when, code_type="ICD10", code=code, pid=pid,
                        provider_id=0, encounter=e, activity=1, modifier="", units=None,
                        fee=None, justify="",
                    )  # fmt: skip
                for line in range(min(LINES_PER_ENCOUNTER, lines - (e - 1) * LINES_PER_ENCOUNTER)):
                    row_id += 1
                    code, fee = _PROCEDURES[(e + line) % len(_PROCEDURES)]
                    yield dict(
                        id=row_id, date=when, code_type="CPT4", code=code, pid=pid,
                        provider_id=0, encounter=e, activity=1, modifier="25:59" if line else "",
                        units=1, fee=Decimal(fee), justify=f"ICD10|{codes[0]}:",
                    )  # fmt: skip

        for batch in _batches(billing_rows()):
            conn.execute(oe.billing.insert(), batch)
    engine.dispose()
    return encounters


def measure(url: str, schema: str, chunk_rows: int, output: str, release: bool) -> dict[str, Any]:
    """Extract DAY with the loop of the ``ehr_encounters`` asset (per-day filter, Parquet
    writer, encounter count); runs in its own process (see main). ``release`` drops each chunk
    as soon as it is converted, which the asset's loop does not do."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from claims_pipeline.sources import get_source
    from claims_pipeline.sources.base import to_record_batch
    from claims_pipeline.sources.lines import LINE_SCHEMA

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    source = get_source(schema)
    engine = sa.create_engine(url)
    lines = chunks = encounters = 0
    previous = None
    started = time.perf_counter()
    with engine.connect() as conn, pq.ParquetWriter(output, LINE_SCHEMA, compression="zstd") as out:
        for chunk in source.extract(conn, DAY, DAY + timedelta(days=1), chunk_rows):
            batch = to_record_batch(chunk)
            if release:
                del chunk
            for day in pc.unique(batch.column("service_date")).to_pylist():
                part = batch.filter(pc.equal(batch.column("service_date"), day))
                out.write_batch(part)
                lines += part.num_rows
                for encounter_id in part.column("encounter_id").to_pylist():
                    if encounter_id != previous:
                        encounters += 1
                        previous = encounter_id
            chunks += 1
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "lines": lines,
        "encounters": encounters,
        "chunks": chunks,
        "seconds": seconds,
        "baseline_rss_mb": baseline_kb / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000, help="charge lines on the day")
    parser.add_argument("--schema", choices=("reference", "openemr"), default="reference")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows per chunk (default {DEFAULT_CHUNK_ROWS:,}, the adapters' default)",
    )
    parser.add_argument("--db", help="SQLite file to create (default: a temporary one)")
    parser.add_argument("--limit-mb", type=float, default=300.0, help="fail above this peak")
    parser.add_argument(
        "--release-chunks",
        action="store_true",
        help="drop each chunk once converted (del chunk), unlike the asset's loop today",
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        db = Path(args.db) if args.db else Path(scratch) / "ehr.sqlite"
        url = f"sqlite:///{db}"
        if args.measure:
            parquet = str(Path(scratch) / "day.parquet")
            result = measure(url, args.schema, args.chunk_rows, parquet, args.release_chunks)
            print(json.dumps(result))
            return 0

        if db.exists():
            db.unlink()
        started = time.perf_counter()
        generate = generate_reference if args.schema == "reference" else generate_openemr
        encounters = generate(url, args.lines)
        print(
            f"generated {args.lines:,} {args.schema} charge lines ({encounters:,} encounters) "
            f"on {DAY} in {time.perf_counter() - started:.1f} s ({db.stat().st_size / 2**20:.0f}"
            " MB SQLite file)"
        )
        command = [
            sys.executable, "-m", "benchmarks.extract_memory", "--measure", "--db", str(db),
            "--schema", args.schema, "--chunk-rows", str(args.chunk_rows),
        ] + (["--release-chunks"] if args.release_chunks else [])  # fmt: skip
        # Our own module and arguments, in a fresh interpreter so generation is not counted.
        completed = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
        result = json.loads(completed.stdout.strip().splitlines()[-1])

    print(
        f"extracted {result['lines']:,} lines of {result['encounters']:,} encounters in "
        f"{result['chunks']} chunks of <= "
        f"{args.chunk_rows:,} rows: {result['seconds']:.1f} s, "
        f"{result['lines'] / result['seconds']:,.0f} lines/s"
    )
    print(
        f"peak RSS {result['peak_rss_mb']:.0f} MB (of which {result['baseline_rss_mb']:.0f} MB "
        f"is the interpreter and imports); limit {args.limit_mb:.0f} MB"
    )
    if result["lines"] != args.lines:
        print(f"FAIL: expected {args.lines:,} lines")
        return 1
    if result["peak_rss_mb"] > args.limit_mb:
        print("FAIL: peak RSS over the limit")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
