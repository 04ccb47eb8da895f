"""The delivery ledger: per tenant + provider_npi + claim_submitter_identifier, the content hash
the API last acknowledged and the claim_id it gave. It is what makes delivery idempotent.

Rows are written in one transaction per acknowledged batch and never before the API answered.
The schema is created and versioned here so that upgrading the project keeps the ledger.
A SQLite ledger file (and its WAL/SHM files) is owner-only (``0600``); it holds claim keys,
content hashes and claim_ids, no PHI, and a purge of stored payloads keeps it whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    event,
    insert,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert

from claims_pipeline.errors import ConfigurationError
from claims_pipeline.storage import private_file

SCHEMA_VERSION = 1

metadata = MetaData()

ledger_table = Table(
    "claims_delivery_ledger",
    metadata,
    Column("tenant_id", BigInteger, primary_key=True, autoincrement=False),
    Column("provider_npi", String(10), primary_key=True),
    Column("claim_submitter_identifier", String(20), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("claim_id", BigInteger, nullable=False),
    Column("partition_key", String(32)),
    Column("run_id", String(64)),
    Column("first_sent_at", DateTime(timezone=True), nullable=False),
    Column("last_sent_at", DateTime(timezone=True), nullable=False),
)

schema_table = Table(
    "claims_delivery_ledger_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

ClaimKey = tuple[str, str]  # (provider_npi, claim_submitter_identifier)

_LOOKUP_CHUNK = 400  # keeps IN lists under every dialect's bind-parameter limit


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    content_hash: str
    claim_id: int


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """One claim the API acknowledged: what to write into the ledger."""

    provider_npi: str
    claim_submitter_identifier: str
    content_hash: str
    claim_id: int
    partition_key: str


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database)
        if not database.parent.exists():
            database.parent.mkdir(mode=0o700, parents=True)
        private_file(database)  # before SQLite creates it, and its WAL/SHM, world-readable
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record):  # readers never block the writer
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
        self._migrate()

    def _migrate(self) -> None:
        metadata.create_all(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            versions = [row.version for row in conn.execute(select(schema_table.c.version))]
            current = max(versions, default=0)
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"The delivery ledger (CLAIMS_LEDGER_URL) has schema version {current}, newer "
                    f"than this release understands ({SCHEMA_VERSION}): upgrade claims_pipeline."
                )
            # Future migrations go here, one `if current < N:` block each, never dropping rows.
            if current < SCHEMA_VERSION:
                conn.execute(
                    insert(schema_table), {"version": SCHEMA_VERSION, "applied_at": _now()}
                )

    def lookup(self, tenant_id: int, keys: Iterable[ClaimKey]) -> dict[ClaimKey, LedgerEntry]:
        """What the ledger holds for these claims (absent keys were never acknowledged)."""
        c = ledger_table.c
        found: dict[ClaimKey, LedgerEntry] = {}
        with self.engine.connect() as conn:
            for where in _key_filters(tenant_id, keys):
                query = select(
                    c.provider_npi, c.claim_submitter_identifier, c.content_hash, c.claim_id
                ).where(where)
                for npi, key, content_hash, claim_id in conn.execute(query):
                    found[(npi, key)] = LedgerEntry(content_hash, claim_id)
        return found

    def record(self, tenant_id: int, acks: Sequence[Acknowledgement], run_id: str) -> None:
        """Write one acknowledged batch in one transaction: an upsert that keeps each claim's
        first_sent_at."""
        if not acks:
            return
        now = _now()
        rows = [
            {
                "tenant_id": tenant_id,
                "provider_npi": a.provider_npi,
                "claim_submitter_identifier": a.claim_submitter_identifier,
                "content_hash": a.content_hash,
                "claim_id": a.claim_id,
                "partition_key": a.partition_key,
                "run_id": run_id,
                "first_sent_at": now,
                "last_sent_at": now,
            }
            for a in acks
        ]
        with self.engine.begin() as conn:
            statement = _upsert(conn.dialect.name)
            if statement is not None:
                conn.execute(statement, rows)
                return
            # Any other dialect: read first_sent_at, replace the rows, in the same transaction.
            c = ledger_table.c
            first_sent = {}
            for where in _key_filters(
                tenant_id, [(r["provider_npi"], r["claim_submitter_identifier"]) for r in rows]
            ):
                for npi, key, sent in conn.execute(
                    select(c.provider_npi, c.claim_submitter_identifier, c.first_sent_at).where(
                        where
                    )
                ):
                    first_sent[(npi, key)] = sent
                conn.execute(delete(ledger_table).where(where))
            for row in rows:
                row["first_sent_at"] = first_sent.get(
                    (row["provider_npi"], row["claim_submitter_identifier"]), now
                )
            conn.execute(insert(ledger_table), rows)

    def count(self, tenant_id: int) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(ledger_table.c.tenant_id == tenant_id)
            ).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


_UPDATED_ON_CONFLICT = ("content_hash", "claim_id", "partition_key", "run_id", "last_sent_at")


def _upsert(dialect: str) -> Insert | None:
    """INSERT .. ON CONFLICT/DUPLICATE KEY UPDATE (all but first_sent_at) where the dialect has
    one; None elsewhere."""
    if dialect in ("sqlite", "postgresql"):
        module = sqlite if dialect == "sqlite" else postgresql
        statement = module.insert(ledger_table)
        return statement.on_conflict_do_update(
            index_elements=[column.name for column in ledger_table.primary_key],
            set_={name: statement.excluded[name] for name in _UPDATED_ON_CONFLICT},
        )
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(ledger_table)
        return statement.on_duplicate_key_update(
            {name: statement.inserted[name] for name in _UPDATED_ON_CONFLICT}
        )
    return None


def _key_filters(tenant_id: int, keys: Iterable[ClaimKey]) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses covering ``keys``, each for one provider and at most _LOOKUP_CHUNK claim
    identifiers, so every dialect answers from the primary key (a row-value IN makes SQLite
    scan the tenant's rows for each query: quadratic in the ledger's size)."""
    by_npi: dict[str, list[str]] = defaultdict(list)
    for npi, key in dict.fromkeys(keys):
        by_npi[npi].append(key)
    c = ledger_table.c
    for npi, identifiers in by_npi.items():
        for start in range(0, len(identifiers), _LOOKUP_CHUNK):
            yield and_(
                c.tenant_id == tenant_id,
                c.provider_npi == npi,
                c.claim_submitter_identifier.in_(identifiers[start : start + _LOOKUP_CHUNK]),
            )


def _now() -> datetime:
    return datetime.now(UTC)
