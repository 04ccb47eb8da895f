"""The delivery ledger: for every encounter of a tenant, what the billing service holds.

One row per tenant + claim_submitter_identifier (one encounter is one claim whatever its NPI):
the NPI the service holds it under, its date of service, the content hash and extraction time
of the version the API acknowledged, its claim_id and its :class:`ClaimState`. Rows change only
after the API answered, except the states that record what the EHR did (``held``,
``withdrawn``). Beside it: one row per synced date of service with the fingerprint of the EHR
rows it was built from (to find edits of any age), and a per-tenant delivery lock (so
overlapping runs, on any Dagster instance, deliver one after the other).

The schema is versioned here and migrated in place (a version 1 ledger, keyed by NPI too, is
copied into version 2 on first use, nothing re-sent). On MySQL/MariaDB the tables are utf8mb4
with a binary collation, so keys compare exactly (``abc-1`` is not ``ABC-1``) on every
database. A SQLite ledger file (and its WAL/SHM) is owner-only; the ledger holds claim keys,
NPIs, dates, hashes and claim_ids, no PHI, and a purge of stored payloads keeps it whole.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from claims_pipeline.errors import ConfigurationError, DeliveryError
from claims_pipeline.storage import private_file

SCHEMA_VERSION = 2

# Exact, case-sensitive key comparison on MySQL/MariaDB (their default collations ignore case).
_MYSQL_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
# Extraction times order versions of a claim: keep microseconds on MySQL/MariaDB too.
_INSTANT = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = MetaData()


class ClaimState(StrEnum):
    """What the billing service holds for an encounter, as far as the ledger knows."""

    DELIVERED = "delivered"  # the service holds content_hash under provider_npi
    HELD = "held"  # the EHR moved it to another NPI (held_npi); not sent until released
    WITHDRAWN = "withdrawn"  # the service holds it; the EHR no longer supports it
    RESOLVED = "resolved"  # was withdrawn; an operator dealt with it at the service


_STATES = {state.value: state for state in ClaimState}


claim_ledger = Table(
    "claim_ledger",
    metadata,
    Column("tenant_id", BigInteger, primary_key=True, autoincrement=False),
    Column("claim_submitter_identifier", String(20), primary_key=True),
    Column("provider_npi", String(10), nullable=False),
    Column("service_date", Date),
    Column("content_hash", String(64), nullable=False),
    Column("extracted_at", _INSTANT),
    Column("claim_id", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("held_npi", String(10)),  # the EHR's new NPI while held
    Column("released_npi", String(10)),  # an operator allowed sending under this NPI
    Column("note", String(200)),  # why it is held or withdrawn (PHI-free)
    Column("run_id", String(64)),
    Column("first_sent_at", DateTime(timezone=True), nullable=False),
    Column("last_sent_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The end-of-run checks read a ledger one date of service at a time.
    Index("ix_claim_ledger_day", "tenant_id", "service_date"),
    **_MYSQL_OPTIONS,
)

synced_days = Table(
    "claim_ledger_days",
    metadata,
    Column("tenant_id", BigInteger, primary_key=True, autoincrement=False),
    Column("service_date", Date, primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("run_id", String(64)),
    Column("synced_at", DateTime(timezone=True), nullable=False),
    **_MYSQL_OPTIONS,
)

delivery_locks = Table(
    "claim_ledger_locks",
    metadata,
    Column("tenant_id", BigInteger, primary_key=True, autoincrement=False),
    Column("holder", String(100), nullable=False),
    Column("expires_at", _INSTANT, nullable=False),
    **_MYSQL_OPTIONS,
)

claim_attempts = Table(
    "claim_ledger_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", BigInteger, nullable=False),
    Column("claim_submitter_identifier", String(20), nullable=False),
    Column("attempted_at", _INSTANT, nullable=False),
    Column("run_id", String(64)),
    Column("service_date", Date),
    Column("outcome", String(16), nullable=False),  # rejected | pending | resolved
    Column("reason", String(300)),  # scrubbed of PHI
    Column("payer_name", String(100)),
    Column("provider_npi", String(10)),
    Column("billed_amount", String(20)),  # decimal text: exact money
    Index("ix_claim_ledger_attempts_key", "tenant_id", "claim_submitter_identifier"),
    **_MYSQL_OPTIONS,
)

schema_table = Table(
    "claims_delivery_ledger_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Version 1 (keyed by tenant + NPI + key): read once by the migration, then left for audit.
_V1_TABLE = "claims_delivery_ledger"

_LOOKUP_CHUNK = 400  # keeps IN lists under every dialect's bind-parameter limit


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    claim_submitter_identifier: str
    provider_npi: str
    service_date: date | None
    content_hash: str
    extracted_at: datetime | None
    claim_id: int
    state: ClaimState
    held_npi: str | None = None
    released_npi: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A delivery that did not end at the service (refused or pending), or an operator's
    resolution of such a claim."""

    claim_submitter_identifier: str
    service_date: date | None
    outcome: str  # rejected | pending | resolved
    reason: str | None = None
    payer_name: str | None = None
    provider_npi: str | None = None
    billed_amount: Decimal | None = None
    run_id: str | None = None
    attempted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UnsentClaim:
    """A claim whose latest delivery was refused or stayed pending, and is not resolved."""

    claim_submitter_identifier: str
    service_date: date | None
    outcome: str
    attempts: int
    reason: str | None
    payer_name: str | None
    billed_amount: Decimal | None


#: Outcomes of an attempt that leave a claim open (retried on later nights).
UNSENT = ("rejected", "pending")


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """One claim the API acknowledged: what to write into the ledger."""

    provider_npi: str
    claim_submitter_identifier: str
    content_hash: str
    claim_id: int
    service_date: date
    extracted_at: datetime | None = None


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database)
        if not database.parent.exists():
            database.parent.mkdir(mode=0o700, parents=True)
        private_file(database)  # before SQLite creates it, and its WAL/SHM, world-readable
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:  # readers never block the writer
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

        return engine
    return create_engine(url, pool_pre_ping=True)


class DeliveryLedger:
    """A ledger in the database at ``url`` (SQLite file, PostgreSQL, MySQL ...)."""

    def __init__(self, url: str):
        try:
            self.engine = _engine(url)
        except Exception as error:  # a malformed URL names only the setting, not its value
            raise ConfigurationError(
                f"CLAIMS_LEDGER_URL is not a usable database URL: {type(error).__name__}"
            ) from None
        self._upsert: _DriverUpsert | None = None
        self._upsert_compiled = False
        self._upsert_lock = threading.Lock()
        self._migrate()

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the schema. Two processes opening a new ledger at once race on
        CREATE TABLE and the version row: the loser tries again and finds it done."""
        for attempt in range(3):
            try:
                self._migrate_once()
                return
            except DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _migrate_once(self) -> None:
        metadata.create_all(self.engine, checkfirst=True)
        for index in claim_ledger.indexes:  # added to ledgers created before it
            index.create(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            versions = [row.version for row in conn.execute(select(schema_table.c.version))]
            current = max(versions, default=0)
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"The delivery ledger (CLAIMS_LEDGER_URL) has schema version {current}, newer "
                    f"than this release understands ({SCHEMA_VERSION}): upgrade claims_pipeline."
                )
            if current < 2 and inspect(conn).has_table(_V1_TABLE):
                _copy_version_1(conn)
            if current < SCHEMA_VERSION:
                conn.execute(
                    insert(schema_table), {"version": SCHEMA_VERSION, "applied_at": _now()}
                )

    # -- claims ---------------------------------------------------------------------------

    def lookup(self, tenant_id: int, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """What the ledger holds for these claim keys (absent keys were never acknowledged)."""
        with self.engine.connect() as conn:
            return {
                entry.claim_submitter_identifier: entry
                for where in _key_filters(tenant_id, keys)
                for entry in _entries(conn, where)
            }

    def states_on_days(self, tenant_id: int, days: Sequence[date]) -> dict[str, ClaimState]:
        """The state of every claim the ledger places on one of these dates of service."""
        c = claim_ledger.c
        query = select(c.claim_submitter_identifier, c.state).where(
            c.tenant_id == tenant_id, c.service_date.in_(list(days))
        )
        with self.engine.connect() as conn:
            rows: Sequence[Any] = conn.execute(query).all()
        return {key: _STATES.get(state) or ClaimState(state) for key, state in rows}

    def hashes_on_days(self, tenant_id: int, days: Sequence[date]) -> dict[str, str]:
        """The content hash of what the service holds, for every claim the ledger places on
        one of these dates of service."""
        c = claim_ledger.c
        query = select(c.claim_submitter_identifier, c.content_hash).where(
            c.tenant_id == tenant_id, c.service_date.in_(list(days))
        )
        with self.engine.connect() as conn:
            rows: Sequence[Any] = conn.execute(query).all()
        return dict(rows)

    def open_entries(self, tenant_id: int) -> list[LedgerEntry]:
        """Claims held or withdrawn: each needs a person."""
        c = claim_ledger.c
        states = [ClaimState.HELD.value, ClaimState.WITHDRAWN.value]
        with self.engine.connect() as conn:
            return list(_entries(conn, and_(c.tenant_id == tenant_id, c.state.in_(states))))

    def record(self, tenant_id: int, acks: Sequence[Acknowledgement], run_id: str) -> None:
        """Write acknowledged claims in one transaction: each claim becomes ``delivered``
        under the acknowledged NPI and content; first_sent_at is kept."""
        if not acks:
            return
        now = _now()
        with self.engine.begin() as conn:
            upsert = self._upsert_for(conn)
            if upsert is not None:
                upsert.execute(conn, tenant_id, acks, run_id, now)
                return
            # Any other dialect (SQL Server): keep first_sent_at, replace the rows.
            rows = _acknowledged_rows(tenant_id, acks, run_id, now)
            keys = [a.claim_submitter_identifier for a in acks]
            first_sent: dict[str, datetime] = {
                key: sent
                for where in _key_filters(tenant_id, keys)
                for key, sent in conn.execute(
                    select(
                        claim_ledger.c.claim_submitter_identifier, claim_ledger.c.first_sent_at
                    ).where(where)
                ).tuples()
            }
            for where in _key_filters(tenant_id, first_sent):
                conn.execute(delete(claim_ledger).where(where))
            for row, a in zip(rows, acks, strict=True):
                row["first_sent_at"] = first_sent.get(a.claim_submitter_identifier, now)
            conn.execute(insert(claim_ledger), rows)

    def _upsert_for(self, conn: Connection) -> _DriverUpsert | None:
        """The acknowledgement upsert of this ledger's database, compiled on first use."""
        with self._upsert_lock:
            if not self._upsert_compiled:
                statement = _upsert(conn.dialect.name)
                if statement is not None:
                    self._upsert = _DriverUpsert.compile(statement, conn.dialect)
                self._upsert_compiled = True
            return self._upsert

    def mark(
        self,
        tenant_id: int,
        key: str,
        state: ClaimState,
        *,
        note: str | None = None,
        held_npi: str | None = None,
        expected: Sequence[ClaimState] | None = None,
    ) -> bool:
        """Set a claim's state (and why); with ``expected``, only from one of those states.
        True when a row changed."""
        c = claim_ledger.c
        where = and_(c.tenant_id == tenant_id, c.claim_submitter_identifier == key)
        if expected is not None:
            where = and_(where, c.state.in_([s.value for s in expected]))
        values: dict[str, Any] = {"state": state.value, "note": note, "updated_at": _now()}
        if state is ClaimState.HELD:
            values["held_npi"] = held_npi
        else:
            values["held_npi"] = None
        with self.engine.begin() as conn:
            return conn.execute(update(claim_ledger).where(where).values(values)).rowcount > 0

    def release(self, tenant_id: int, key: str) -> LedgerEntry:
        """Allow a held claim to be sent under its new NPI (the operator has dealt with the
        claim the service holds under the old one). Raises DeliveryError if it is not held."""
        c = claim_ledger.c
        where = and_(
            c.tenant_id == tenant_id,
            c.claim_submitter_identifier == key,
            c.state == ClaimState.HELD.value,
        )
        with self.engine.begin() as conn:
            entry = next(_entries(conn, where), None)
            if entry is None or entry.held_npi is None:
                raise DeliveryError(f"Claim {key} of tenant {tenant_id} is not held.")
            conn.execute(
                update(claim_ledger)
                .where(where)
                .values(released_npi=entry.held_npi, updated_at=_now())
            )
        return entry

    def resolve(self, tenant_id: int, key: str, run_id: str = "operator") -> None:
        """Mark a withdrawn claim as dealt with at the service, or stop retrying a refused or
        pending one (it stops being reported)."""
        if self.mark(
            tenant_id,
            key,
            ClaimState.RESOLVED,
            note="resolved by an operator",
            expected=[ClaimState.WITHDRAWN],
        ):
            return
        unsent = next(
            (u for u in self.unsent(tenant_id) if u.claim_submitter_identifier == key), None
        )
        if unsent is None:
            raise DeliveryError(
                f"Claim {key} of tenant {tenant_id} is not withdrawn, refused or pending."
            )
        self.record_attempts(
            tenant_id,
            [Attempt(key, unsent.service_date, "resolved", "resolved by an operator")],
            run_id,
        )

    def count(self, tenant_id: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(claim_ledger.c.tenant_id == tenant_id)
            ).scalar_one()

    # -- claims not delivered ---------------------------------------------------------------

    def record_attempts(self, tenant_id: int, attempts: Sequence[Attempt], run_id: str) -> None:
        """Remember refused and pending deliveries (and resolutions): each is one row."""
        if not attempts:
            return
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                insert(claim_attempts),
                [
                    {
                        "tenant_id": tenant_id,
                        "claim_submitter_identifier": a.claim_submitter_identifier,
                        "attempted_at": now,
                        "run_id": run_id,
                        "service_date": a.service_date,
                        "outcome": a.outcome,
                        "reason": (a.reason or "")[:300] or None,
                        "payer_name": (a.payer_name or "")[:100] or None,
                        "provider_npi": a.provider_npi,
                        "billed_amount": None if a.billed_amount is None else str(a.billed_amount),
                    }
                    for a in attempts
                ],
            )

    def attempts(self, tenant_id: int, key: str) -> list[Attempt]:
        """Every recorded attempt of one claim, oldest first."""
        c = claim_attempts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(claim_attempts)
                .where(c.tenant_id == tenant_id, c.claim_submitter_identifier == key)
                .order_by(c.attempted_at, c.id)
            ).all()
        return [_attempt(row) for row in rows]

    def unsent(self, tenant_id: int) -> list[UnsentClaim]:
        """Claims whose latest attempt was refused or pending, with no delivery or resolution
        since, oldest date of service first."""
        c = claim_attempts.c
        latest: dict[str, Any] = {}
        failures: dict[str, int] = defaultdict(int)
        with self.engine.connect() as conn:
            for row in conn.execute(
                select(claim_attempts)
                .where(c.tenant_id == tenant_id)
                .order_by(c.attempted_at, c.id)
            ):
                key = row.claim_submitter_identifier
                if row.outcome == "resolved":
                    failures[key] = 0
                else:
                    failures[key] += 1
                latest[key] = row
            open_rows = {k: r for k, r in latest.items() if r.outcome in UNSENT}
            delivered_since: set[str] = {
                key
                for where in _key_filters(tenant_id, open_rows)
                for key, sent in conn.execute(
                    select(
                        claim_ledger.c.claim_submitter_identifier, claim_ledger.c.last_sent_at
                    ).where(where)
                ).tuples()
                if _aware(sent) >= _aware(open_rows[key].attempted_at)  # type: ignore[operator]
            }
        found = [
            UnsentClaim(
                key,
                row.service_date,
                row.outcome,
                failures[key],
                row.reason,
                row.payer_name,
                None if row.billed_amount is None else Decimal(row.billed_amount),
            )
            for key, row in open_rows.items()
            if key not in delivered_since
        ]
        return sorted(
            found, key=lambda u: (u.service_date or date.min, u.claim_submitter_identifier)
        )

    # -- synced days ----------------------------------------------------------------------

    def record_days(self, tenant_id: int, fingerprints: dict[date, str], run_id: str) -> None:
        """Remember the EHR fingerprint each of these days was last synced from."""
        if not fingerprints:
            return
        c = synced_days.c
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                delete(synced_days).where(
                    c.tenant_id == tenant_id, c.service_date.in_(list(fingerprints))
                )
            )
            conn.execute(
                insert(synced_days),
                [
                    {
                        "tenant_id": tenant_id,
                        "service_date": day,
                        "fingerprint": fingerprint,
                        "run_id": run_id,
                        "synced_at": now,
                    }
                    for day, fingerprint in fingerprints.items()
                ],
            )

    def synced_fingerprints(self, tenant_id: int, before: date) -> dict[date, str]:
        """The fingerprint of every synced day before ``before``."""
        c = synced_days.c
        with self.engine.connect() as conn:
            return {
                day: fingerprint
                for day, fingerprint in conn.execute(
                    select(c.service_date, c.fingerprint).where(
                        c.tenant_id == tenant_id, c.service_date < before
                    )
                ).tuples()
            }

    # -- the per-tenant delivery lock -----------------------------------------------------

    def lock(
        self,
        tenant_id: int,
        holder: str,
        *,
        wait_seconds: float = 3600.0,
        lease_seconds: float = 120.0,
        poll_seconds: float = 1.0,
        on_wait: Any = None,
    ) -> DeliveryLock:
        """Take the tenant's delivery lock, waiting up to ``wait_seconds`` for another run to
        finish. A holder that stops renewing (a killed run) loses it after ``lease_seconds``."""
        return DeliveryLock(
            self, tenant_id, holder, wait_seconds, lease_seconds, poll_seconds, on_wait
        )

    def dispose(self) -> None:
        self.engine.dispose()


class DeliveryLock:
    """A lease row in ``claim_ledger_locks``: taken by insert (or by a compare-and-set over an
    expired lease), renewed by a background thread every third of the lease, dropped on exit.
    :meth:`check` raises once the lease was lost (a stalled process another run took over)."""

    def __init__(
        self,
        ledger: DeliveryLedger,
        tenant_id: int,
        holder: str,
        wait_seconds: float,
        lease_seconds: float,
        poll_seconds: float,
        on_wait: Any,
    ):
        self.ledger = ledger
        self.tenant_id = tenant_id
        self.holder = f"{holder[:60]}:{uuid.uuid4().hex[:12]}"
        self.wait_seconds = wait_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.on_wait = on_wait
        self.waited = 0.0
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> DeliveryLock:
        started = time.monotonic()
        told = False
        while not self._try_take():
            self.waited = time.monotonic() - started
            if self.waited >= self.wait_seconds:
                raise DeliveryError(
                    f"Another run ({self.current_holder()}) has held the delivery lock of tenant "
                    f"{self.tenant_id} for over {self.wait_seconds:.0f} s; try again when it ends."
                )
            if not told and self.on_wait is not None:
                self.on_wait(self.current_holder())
                told = True
            time.sleep(self.poll_seconds)
        self.waited = time.monotonic() - started
        self._renewer = threading.Thread(target=self._keep, name="ledger-lock", daemon=True)
        self._renewer.start()
        return self

    def _keep(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            try:
                self.renew()
            except DeliveryError:
                self._lost.set()
                return
            except Exception:  # noqa: S112 - a blip of the ledger database: try again
                continue

    def check(self) -> None:
        """Raise DeliveryError if this run no longer holds the lock."""
        if self._lost.is_set():
            raise DeliveryError(
                f"The delivery lock of tenant {self.tenant_id} expired and was taken over: "
                "this run stops so two runs never deliver at once."
            )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        c = delivery_locks.c
        with self.ledger.engine.begin() as conn:
            conn.execute(
                delete(delivery_locks).where(c.tenant_id == self.tenant_id, c.holder == self.holder)
            )

    def renew(self) -> None:
        """Extend the lease; raises DeliveryError if another run took it over meanwhile."""
        c = delivery_locks.c
        with self.ledger.engine.begin() as conn:
            changed = conn.execute(
                update(delivery_locks)
                .where(c.tenant_id == self.tenant_id, c.holder == self.holder)
                .values(expires_at=_now() + self.lease)
            ).rowcount
        if not changed:
            raise DeliveryError(
                f"The delivery lock of tenant {self.tenant_id} expired and was taken over: "
                "this run stops so two runs never deliver at once."
            )

    def current_holder(self) -> str:
        c = delivery_locks.c
        with self.ledger.engine.connect() as conn:
            holder = conn.execute(
                select(c.holder).where(c.tenant_id == self.tenant_id)
            ).scalar_one_or_none()
        return str(holder).rsplit(":", 1)[0] if holder else "none"

    def _try_take(self) -> bool:
        c = delivery_locks.c
        now = _now()
        values = {
            "tenant_id": self.tenant_id,
            "holder": self.holder,
            "expires_at": now + self.lease,
        }
        try:
            with self.ledger.engine.begin() as conn:
                conn.execute(insert(delivery_locks), values)
            return True
        except IntegrityError:
            pass
        with self.ledger.engine.begin() as conn:  # take over an expired lease, atomically
            return (
                conn.execute(
                    update(delivery_locks)
                    .where(c.tenant_id == self.tenant_id, c.expires_at < now)
                    .values(holder=self.holder, expires_at=now + self.lease)
                ).rowcount
                > 0
            )


#: Columns an acknowledgement overwrites: all but the key and first_sent_at.
_ACKNOWLEDGED_COLUMNS = tuple(
    c.name
    for c in claim_ledger.columns
    if c.name not in ("tenant_id", "claim_submitter_identifier", "first_sent_at")
)


def _upsert(dialect: str) -> Any:
    """INSERT .. ON CONFLICT / ON DUPLICATE KEY UPDATE of an acknowledged batch, one statement,
    where the dialect has one; None elsewhere."""
    if dialect in ("sqlite", "postgresql"):
        module = sqlite if dialect == "sqlite" else postgresql
        statement = module.insert(claim_ledger)
        return statement.on_conflict_do_update(
            index_elements=["tenant_id", "claim_submitter_identifier"],
            set_={name: statement.excluded[name] for name in _ACKNOWLEDGED_COLUMNS},
        )
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(claim_ledger)
        return statement.on_duplicate_key_update(
            {name: statement.inserted[name] for name in _ACKNOWLEDGED_COLUMNS}
        )
    return None


def _acknowledged_values(tenant_id: int, run_id: str, now: datetime) -> dict[str, Any]:
    """What an acknowledgement writes into every row of one write (the rest of a row is
    :func:`_claim_values`)."""
    return {
        "tenant_id": tenant_id,
        "state": ClaimState.DELIVERED.value,
        "held_npi": None,
        "released_npi": None,
        "note": None,
        "run_id": run_id,
        "first_sent_at": now,
        "last_sent_at": now,
        "updated_at": now,
    }


#: What an acknowledgement writes into its claim's row, in the order of :func:`_claim_values`.
_CLAIM_COLUMNS = (
    "claim_submitter_identifier",
    "provider_npi",
    "service_date",
    "content_hash",
    "extracted_at",
    "claim_id",
)


def _claim_values(ack: Acknowledgement) -> tuple[Any, ...]:
    return (
        ack.claim_submitter_identifier,
        ack.provider_npi,
        ack.service_date,
        ack.content_hash,
        ack.extracted_at,
        ack.claim_id,
    )


def _acknowledged_rows(
    tenant_id: int, acks: Sequence[Acknowledgement], run_id: str, now: datetime
) -> list[dict[str, Any]]:
    shared = _acknowledged_values(tenant_id, run_id, now)
    return [shared | dict(zip(_CLAIM_COLUMNS, _claim_values(a), strict=True)) for a in acks]


@dataclass(frozen=True)
class _DriverUpsert:
    """The acknowledgement upsert compiled once for a dialect and run by the driver itself.
    Each value is converted by its column's own SQLAlchemy bind processor (so it is stored
    exactly as SQLAlchemy would store it), once per distinct value of a write rather than
    once per row and column: recording a batch costs a fraction of a compiled execution."""

    sql: str
    positions: tuple[str, ...] | None  # parameter order, for positional paramstyles
    processors: dict[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, statement: Any, dialect: Dialect) -> _DriverUpsert:
        compiled = statement.compile(dialect=dialect)
        processors: dict[str, Callable[[Any], Any]] = {
            column.name: processor
            for column in claim_ledger.columns
            if (processor := column.type.dialect_impl(dialect).bind_processor(dialect))
        }
        positions = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(compiled.string, positions, processors)

    def execute(
        self,
        conn: Connection,
        tenant_id: int,
        acks: Sequence[Acknowledgement],
        run_id: str,
        now: datetime,
    ) -> None:
        shared = _acknowledged_values(tenant_id, run_id, now)
        head = tuple(self._bind(name, [value])[0] for name, value in shared.items())
        claims = zip(*map(_claim_values, acks), strict=True)  # column by column
        columns = [
            self._bind(name, values) for name, values in zip(_CLAIM_COLUMNS, claims, strict=True)
        ]
        rows = [head + values for values in zip(*columns, strict=True)]
        names = (*shared, *_CLAIM_COLUMNS)
        if self.positions is None:
            conn.exec_driver_sql(self.sql, [dict(zip(names, row, strict=True)) for row in rows])
        else:
            ordered = itemgetter(*(names.index(name) for name in self.positions))
            conn.exec_driver_sql(self.sql, [ordered(row) for row in rows])

    def _bind(self, name: str, values: Sequence[Any]) -> Sequence[Any]:
        """Values as the column's bind processor makes them, each distinct value converted
        once (equal instants in two time zones are two values to a processor)."""
        processor = self.processors.get(name)
        if processor is None:
            return values
        converted: dict[tuple[Any, Any], Any] = {}
        bound = []
        for value in values:
            key = (value, getattr(value, "tzinfo", None))
            if key not in converted:
                converted[key] = processor(value)
            bound.append(converted[key])
        return bound


def _entries(conn: Connection, where: Any) -> Iterator[LedgerEntry]:
    c = claim_ledger.c
    query = select(
        c.claim_submitter_identifier,
        c.provider_npi,
        c.service_date,
        c.content_hash,
        c.extracted_at,
        c.claim_id,
        c.state,
        c.held_npi,
        c.released_npi,
        c.note,
    ).where(where)
    # Fetched at once and unpacked (not row by row, by name): a look-up of every claim of a
    # day builds hundreds of thousands of entries.
    rows: Sequence[Any] = conn.execute(query).all()
    for (
        key,
        npi,
        service_date,
        content_hash,
        extracted_at,
        claim_id,
        state,
        held_npi,
        released_npi,
        note,
    ) in rows:
        yield LedgerEntry(
            key,
            npi,
            service_date,
            content_hash,
            _aware(extracted_at),
            claim_id,
            _STATES.get(state) or ClaimState(state),
            held_npi,
            released_npi,
            note,
        )


def _copy_version_1(conn: Connection) -> None:
    """Copy a version 1 ledger (one row per tenant + NPI + key) into ``claim_ledger``: per
    encounter the most recently acknowledged row, as ``delivered``; its date of service from
    the partition it was delivered for. Rows already copied are left alone."""
    legacy = Table(_V1_TABLE, MetaData(), autoload_with=conn)
    latest: dict[tuple[int, str], Any] = {}
    for row in conn.execute(select(legacy)):
        identity = (row.tenant_id, row.claim_submitter_identifier)
        held = latest.get(identity)
        if held is None or row.last_sent_at > held.last_sent_at:
            latest[identity] = row
    now = _now()
    rows = [
        {
            "tenant_id": row.tenant_id,
            "claim_submitter_identifier": row.claim_submitter_identifier,
            "provider_npi": row.provider_npi,
            "service_date": _partition_date(row.partition_key),
            "content_hash": row.content_hash,
            "extracted_at": None,
            "claim_id": row.claim_id,
            "state": ClaimState.DELIVERED.value,
            "run_id": row.run_id,
            "first_sent_at": row.first_sent_at,
            "last_sent_at": row.last_sent_at,
            "updated_at": now,
        }
        for row in latest.values()
    ]
    for start in range(0, len(rows), 1000):
        conn.execute(insert(claim_ledger), rows[start : start + 1000])


def _attempt(row: Any) -> Attempt:
    return Attempt(
        row.claim_submitter_identifier,
        row.service_date,
        row.outcome,
        row.reason,
        row.payer_name,
        row.provider_npi,
        None if row.billed_amount is None else Decimal(row.billed_amount),
        row.run_id,
        _aware(row.attempted_at),
    )


def _partition_date(partition_key: str | None) -> date | None:
    try:
        return date.fromisoformat(partition_key or "")
    except ValueError:
        return None


def _key_filters(tenant_id: int, keys: Iterable[str]) -> Iterator[Any]:
    """WHERE clauses covering ``keys``, at most _LOOKUP_CHUNK each, answered from the primary
    key on every dialect."""
    unique = list(dict.fromkeys(keys))
    c = claim_ledger.c
    for start in range(0, len(unique), _LOOKUP_CHUNK):
        yield and_(
            c.tenant_id == tenant_id,
            c.claim_submitter_identifier.in_(unique[start : start + _LOOKUP_CHUNK]),
        )


def _aware(value: datetime | None) -> datetime | None:
    """SQLite and MySQL hand back naive datetimes: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _now() -> datetime:
    return datetime.now(UTC)
