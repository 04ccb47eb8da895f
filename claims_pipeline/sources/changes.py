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
import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import BIT

from claims_pipeline.errors import SourceError
from claims_pipeline.sources.base import STREAMING
from claims_pipeline.storage import EXTRACTED_AT, FINGERPRINT
from claims_pipeline.subprocesses import exit_with_parent, start_module

_MASK = (1 << 64) - 1

#: The fingerprint of a day without rows.
EMPTY = "none"


def supports_fingerprints(schema: str) -> bool:
    return schema in ("reference", "openemr")


def day_fingerprints(conn: Connection, schema: str, start: date, end: date) -> dict[date, str]:
    """``{day: fingerprint}`` for every day in ``[start, end)`` with at least one row (a day
    without rows is :data:`EMPTY`). On PostgreSQL and MySQL/MariaDB the rows are hashed and
    summed by the server, which sends one row per day and table; elsewhere they are streamed
    and hashed here. Either way a fingerprint is compared only with one from the same
    database."""
    parts: dict[date, list[str]] = defaultdict(list)
    in_server = conn.dialect.name in ("postgresql", "mysql", "mariadb")
    for label, day, columns, source, window in _row_sets(schema, start, end):
        if in_server:
            statement = (
                sa.select(
                    sa.cast(day, sa.Date), sa.func.count(), sa.func.sum(_row_hash(conn, columns))
                )
                .select_from(source)
                .where(*window)
                .group_by(sa.cast(day, sa.Date))
            )
            for value, count, total in conn.execute(statement):
                if (service_date := _as_day(value)) is not None:
                    parts[service_date].append(f"{label}{count}:{total}")
            continue
        # Per day value as the driver gives it: [day, rows, sum of row hashes]. The sum is
        # reduced modulo 2**64 once at the end (the same number as reducing at every row).
        tallies: dict[Any, list[Any]] = {}
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes
        statement = sa.select(day, *columns).select_from(source).where(*window)
        result = conn.execute(statement, execution_options=STREAMING)
        try:
            for row in result:
                tally = tallies.get(row[0])
                if tally is None:
                    tally = tallies[row[0]] = [_as_day(row[0]), 0, 0]
                tally[1] += 1
                tally[2] += from_bytes(
                    blake2b(repr(tuple(row[1:])).encode(), digest_size=8).digest(), "big"
                )
        finally:
            result.close()
        counts: dict[date, int] = defaultdict(int)
        sums: dict[date, int] = defaultdict(int)
        for service_date, rows, total in tallies.values():
            if service_date is not None:  # several driver values may name one day
                counts[service_date] += rows
                sums[service_date] = (sums[service_date] + total) & _MASK
        for service_date in counts:
            parts[service_date].append(f"{label}{counts[service_date]}:{sums[service_date]}")
    return {
        service_date: hashlib.sha256(";".join(sorted(found)).encode()).hexdigest()
        for service_date, found in parts.items()
    }


def _row_hash(conn: Connection, columns: list[Any]) -> Any:
    """A 60-bit number from the MD5 of one row's values, computed by the server."""
    if conn.dialect.name == "postgresql":
        # a row's text form: NULL stays distinct
        text: sa.ColumnElement[str] = sa.cast(sa.tuple_(*columns), sa.Text)
        hexa = sa.literal("x") + sa.func.substr(sa.func.md5(text), 1, 15)
        return sa.cast(sa.cast(hexa, BIT(60)), sa.BigInteger)
    text = sa.func.concat_ws("|", *[sa.func.coalesce(sa.cast(c, sa.CHAR), "\\N") for c in columns])
    return sa.cast(sa.func.conv(sa.func.substr(sa.func.md5(text), 1, 15), 16, 10), sa.Integer)


def fingerprints_for(conn: Connection, schema: str, days: list[date]) -> dict[date, str]:
    """Fingerprints of exactly these days (EMPTY for a day without rows)."""
    if not days or not supports_fingerprints(schema):
        return {}
    found = day_fingerprints(conn, schema, min(days), max(days) + timedelta(days=1))
    return {day: found.get(day, EMPTY) for day in days}


def _row_sets(
    schema: str, start: date, end: date
) -> Iterator[tuple[str, Any, list[Any], Any, list[Any]]]:
    """(label, day expression, columns, FROM, WHERE) of each kind of row behind a day."""
    if schema == "reference":
        from claims_pipeline.sources.reference import charges, diagnoses, encounters

        day = encounters.c.service_date
        window = [day >= start, day < end]
        yield "e", day, list(encounters.c), encounters, window
        for label, table in (("c", charges), ("d", diagnoses)):
            joined = table.join(encounters, table.c.encounter_id == encounters.c.id)
            yield label, day, list(table.c), joined, window
    elif schema == "openemr":
        from claims_pipeline.sources.openemr import billing, form_encounter

        fe = form_encounter.c
        window = [
            fe.date >= datetime.combine(start, time.min),
            fe.date < datetime.combine(end, time.min),
        ]
        yield "e", fe.date, list(form_encounter.c), form_encounter, window
        joined = billing.join(
            form_encounter, sa.and_(billing.c.pid == fe.pid, billing.c.encounter == fe.encounter)
        )
        yield "b", fe.date, list(billing.c), joined, window


def _as_day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def facts_of(
    days: list[date], instant: str, fingerprints: dict[date, str]
) -> dict[str, dict[str, str]]:
    """Per day (ISO key): the instant of reading and, if there is one, the fingerprint."""
    facts = {}
    for day in days:
        facts[day.isoformat()] = {EXTRACTED_AT: instant}
        if day in fingerprints:
            facts[day.isoformat()][FINGERPRINT] = fingerprints[day]
    return facts


@contextmanager
def fingerprints_alongside(
    conn: Connection, schema: str, days: list[date]
) -> Iterator[Callable[[], dict[date, str]]]:
    """:func:`fingerprints_for` of ``days``, for a caller that reads the lines inside the
    block and calls the yielded function for the fingerprints when it needs them.

    The fingerprint must never cover an edit the lines miss (the edit would never show as a
    change): it is read from a snapshot taken before the block starts, while the lines are
    read. On PostgreSQL and MySQL/MariaDB the server hashes, on a second connection in a
    REPEATABLE READ transaction, waited for by a thread. On a SQLite file the rows are hashed
    in Python, which would cost this process as much as a third of the extract: another
    process hashes them, in a read transaction. Elsewhere (an in-memory SQLite database,
    another dialect) they are computed here, first."""
    url = conn.engine.url
    in_memory = (url.database or "") in ("", ":memory:") or url.query.get("mode") == "memory"
    if not days or not supports_fingerprints(schema):
        yield lambda: {}
    elif conn.dialect.name in _HASHED_BY_SERVER:
        with _FingerprintThread(conn.engine, schema, days) as thread:
            # The lines' snapshot must not predate the fingerprint's: a transaction of this
            # connection may have taken one already (MySQL's default is REPEATABLE READ).
            if conn.in_transaction():
                conn.rollback()
            yield thread.result
    elif conn.dialect.name == "sqlite" and not in_memory:
        with _FingerprintProcess(url, schema, days) as process:
            yield process.result
    else:
        found = fingerprints_for(conn, schema, days)
        yield lambda: found


_HASHED_BY_SERVER = ("postgresql", "mysql", "mariadb")


class _FingerprintThread:
    """:func:`fingerprints_for` on a second connection whose REPEATABLE READ snapshot is taken
    (by reading one of the fingerprinted tables) before the block starts, in a thread that
    mostly waits for the server."""

    def __init__(self, engine: sa.Engine, schema: str, days: list[date]):
        self.engine, self.schema, self.days = engine, schema, days
        self.found: dict[date, str] = {}
        self.error: BaseException | None = None

    def __enter__(self) -> _FingerprintThread:
        self.conn = self.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        try:
            _, _, _, source, _ = next(_row_sets(self.schema, self.days[0], self.days[0]))
            self.conn.execute(sa.select(sa.literal(1)).select_from(source).limit(1)).all()
        except BaseException:
            self.conn.close()
            raise
        self.thread = threading.Thread(target=self._run, name="day-fingerprints", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.found = fingerprints_for(self.conn, self.schema, self.days)
        except BaseException as error:  # re-raised by result(), in the caller's thread
            self.error = error
        finally:
            self.conn.close()

    def result(self) -> dict[date, str]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.found

    def __exit__(self, *exc: object) -> None:
        self.thread.join()  # a server query cannot be called back; its connection closes


class _FingerprintProcess:
    """``python -m claims_pipeline.sources.changes``: given the request on its stdin, it opens
    a read transaction, answers ``ready``, then the fingerprints as one JSON line."""

    def __init__(self, url: sa.URL, schema: str, days: list[date]):
        self.request = {
            "url": url.render_as_string(hide_password=False),
            "schema": schema,
            "days": [day.isoformat() for day in days],
        }

    def __enter__(self) -> _FingerprintProcess:
        self.process = start_module("claims_pipeline.sources.changes")
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(self.request) + "\n")
            self.process.stdin.close()
            self._answer(expect="ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _answer(self, expect: str) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        try:
            answer = json.loads(line)
        except ValueError:
            answer = {"error": f"the fingerprint process ended (exit code {self.process.poll()})"}
        if "error" in answer:
            raise SourceError(f"Fingerprinting the EHR rows failed: {answer['error']}")
        return answer[expect]

    def result(self) -> dict[date, str]:
        found = self._answer(expect="fingerprints")
        return {date.fromisoformat(day): value for day, value in found.items()}

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _serve_fingerprints() -> None:
    """The fingerprint process (see :class:`_FingerprintProcess`)."""
    from claims_pipeline.phi import describe_error
    from claims_pipeline.sources.connection import read_only_engine

    def say(answer: dict[str, Any]) -> None:
        print(json.dumps(answer), flush=True)

    exit_with_parent()
    try:
        request = json.loads(sys.stdin.readline())
        days = [date.fromisoformat(day) for day in request["days"]]
        engine = read_only_engine(request["url"])
        with engine.connect() as conn:
            # One read transaction for every statement, its snapshot taken now.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("BEGIN")
            cursor.execute("SELECT count(*) FROM sqlite_master").fetchall()
            cursor.close()
            say({"ready": True})
            found = fingerprints_for(conn, request["schema"], days)
        say({"fingerprints": {day.isoformat(): value for day, value in found.items()}})
    except Exception as error:
        say({"error": describe_error(error)})


if __name__ == "__main__":
    _serve_fingerprints()


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
