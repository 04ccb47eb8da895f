"""Cost of finding edits of any age: two years of a busy practice on PostgreSQL.

    python -m benchmarks.detect_edits --url postgresql+psycopg://postgres@127.0.0.1:5432/claims_bench_edits

For each schema (reference, OpenEMR): generate ``--days`` days x ``--encounters-per-day``
encounters (3 lines each on average) into a fresh database, fingerprint every day as a synced
deployment would have, edit one charge line ``--edit-days-back`` days back, then time what the
nightly schedule does (one streamed pass over the encounter and line rows of every synced day)
and check it names exactly the edited day.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta

import sqlalchemy as sa

from claims_pipeline.demo.bulk import generate, recreate_postgres_database
from claims_pipeline.sources.changes import changed_days, day_fingerprints


def measure(url: str, schema: str, days: int, per_day: int, back: int, repeat: int) -> dict:
    recreate_postgres_database(url)
    last = date.today() - timedelta(days=1)
    generated = generate(url, days * per_day * 3, schema=schema, days=days, last_day=last)
    engine = sa.create_engine(url)
    first = generated.first_day
    with engine.connect() as conn:
        synced = day_fingerprints(conn, schema, first, last + timedelta(days=1))
    edited = last - timedelta(days=back)
    with engine.begin() as conn:
        if schema == "reference":
            conn.execute(
                sa.text(
                    "UPDATE charges SET line_amount = line_amount + 1 WHERE id = (SELECT min(c.id) "
                    "FROM charges c JOIN encounters e ON e.id = c.encounter_id "
                    "WHERE e.service_date = :d)"
                ),
                {"d": edited},
            )
        else:
            conn.execute(
                sa.text(
                    "UPDATE billing SET fee = fee + 1 WHERE id = (SELECT min(b.id) FROM billing b "
                    "JOIN form_encounter f ON f.pid = b.pid AND f.encounter = b.encounter "
                    "WHERE f.date >= :d AND f.date < :n AND b.code_type <> 'ICD10')"
                ),
                {"d": edited, "n": edited + timedelta(days=1)},
            )
    before = last - timedelta(days=7)  # the nightly window re-reads the last days anyway
    synced = {day: fingerprint for day, fingerprint in synced.items() if day < before}
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        with engine.connect() as conn:
            found = changed_days(conn, schema, synced, before)
        timings.append(time.perf_counter() - started)
    engine.dispose()
    assert found == [edited], found
    return {
        "schema": schema,
        "days": days,
        "encounters": generated.encounters,
        "lines": generated.lines,
        "best_s": min(timings),
        "found": [d.isoformat() for d in found],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="PostgreSQL URL of a scratch database")
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--encounters-per-day", type=int, default=500)
    parser.add_argument("--edit-days-back", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for schema in ("reference", "openemr"):
        result = measure(
            args.url, schema, args.days, args.encounters_per_day, args.edit_days_back, args.repeat
        )
        print(
            f"{schema}: {result['days']} days, {result['encounters']} encounters, "
            f"{result['lines']} lines: edit detection {result['best_s']:.2f} s "
            f"(best of {args.repeat}); changed days found: {result['found']}"
        )


if __name__ == "__main__":
    main()
