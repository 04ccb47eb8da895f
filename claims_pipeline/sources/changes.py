"""Fingerprints of the EHR rows behind each date of service, to find edits of any age.

A day's fingerprint covers every row a claim of that day is built from at the encounter and
line level, billable or not (a void or a status change counts): for ``reference`` the
``encounters``, ``charges`` and ``diagnoses`` rows, for ``openemr`` the ``form_encounter`` and
``billing`` rows. Each row is hashed on its own and the hashes are added up, so the result does
not depend on row order and one streamed pass over narrow rows is enough. Patient, payer and
provider tables are not covered: a change there reaches claims inside the look-back window or
through a backfill. The ``sql`` adapter has no fingerprint (its query is the user's own).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from claims_pipeline.sources.base import STREAMING
from claims_pipeline.storage import EXTRACTED_AT, FINGERPRINT, format_instant

_MASK = (1 << 64) - 1


def supports_fingerprints(schema: str) -> bool:
    return schema in ("reference", "openemr")


def day_fingerprints(conn: Connection, schema: str, start: date, end: date) -> dict[date, str]:
    """``{day: fingerprint}`` for every day in ``[start, end)`` with at least one row; a day
    without rows has none (its fingerprint is :data:`EMPTY`)."""
    count: dict[date, int] = defaultdict(int)
    total: dict[date, int] = defaultdict(int)
    for label, statement in _statements(schema, start, end):
        result = conn.execute(statement, execution_options=STREAMING)
        try:
            for row in result:
                day = _as_day(row[0])
                if day is None:
                    continue
                digest = hashlib.blake2b(f"{label}{row[1:]!r}".encode(), digest_size=8).digest()
                count[day] += 1
                total[day] = (total[day] + int.from_bytes(digest, "big")) & _MASK
        finally:
            result.close()
    return {day: f"{count[day]}:{total[day]:016x}" for day in count}


#: The fingerprint of a day without rows.
EMPTY = "0:0000000000000000"


def fingerprints_for(conn: Connection, schema: str, days: list[date]) -> dict[date, str]:
    """Fingerprints of exactly these days (EMPTY for a day without rows)."""
    if not days or not supports_fingerprints(schema):
        return {}
    found = day_fingerprints(conn, schema, min(days), max(days) + timedelta(days=1))
    return {day: found.get(day, EMPTY) for day in days}


def _statements(schema: str, start: date, end: date) -> Iterator[tuple[str, sa.Select[Any]]]:
    if schema == "reference":
        from claims_pipeline.sources.reference import charges, diagnoses, encounters

        window = [encounters.c.service_date >= start, encounters.c.service_date < end]
        day = encounters.c.service_date
        yield "e", sa.select(day, *encounters.c).where(*window)
        for label, table in (("c", charges), ("d", diagnoses)):
            yield (
                label,
                sa.select(day, *table.c)
                .select_from(table.join(encounters, table.c.encounter_id == encounters.c.id))
                .where(*window),
            )
    elif schema == "openemr":
        from claims_pipeline.sources.openemr import billing, form_encounter

        fe = form_encounter.c
        window = [
            fe.date >= datetime.combine(start, time.min),
            fe.date < datetime.combine(end, time.min),
        ]
        yield "e", sa.select(fe.date, *form_encounter.c).where(*window)
        yield (
            "b",
            sa.select(fe.date, *billing.c)
            .select_from(
                billing.join(
                    form_encounter,
                    sa.and_(billing.c.pid == fe.pid, billing.c.encounter == fe.encounter),
                )
            )
            .where(*window),
        )


def _as_day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def extraction_facts(conn: Connection, schema: str, days: list[date]) -> dict[str, dict[str, str]]:
    """Per day (ISO key) the facts stored with its extracted file: the instant of reading and,
    where the adapter has one, the day's fingerprint. Call it before extracting the lines."""
    instant = format_instant(datetime.now(UTC))
    fingerprints = fingerprints_for(conn, schema, days)
    facts = {}
    for day in days:
        facts[day.isoformat()] = {EXTRACTED_AT: instant}
        if day in fingerprints:
            facts[day.isoformat()][FINGERPRINT] = fingerprints[day]
    return facts


def changed_days(
    conn: Connection, schema: str, synced: dict[date, str], before: date
) -> list[date]:
    """The synced days (``{day: fingerprint when synced}``) whose EHR rows differ now: one
    pass over the rows from the oldest synced day up to ``before``."""
    if not synced or not supports_fingerprints(schema):
        return []
    current = day_fingerprints(conn, schema, min(synced), before)
    return sorted(
        day for day, fingerprint in synced.items() if current.get(day, EMPTY) != fingerprint
    )


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days as (first, last) runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges
