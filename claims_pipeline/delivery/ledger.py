"""The delivery ledger: per tenant + provider_npi + claim_submitter_identifier, the content hash
the API last acknowledged and the claim_id it gave. It is what makes delivery idempotent.

Rows are written in one transaction per acknowledged batch and never before the API answered.
The schema is created and versioned here so that upgrading the project keeps the ledger.
A SQLite ledger file (and its WAL/SHM files) is owner-only (``0600``); it holds claim keys,
content hashes and claim_ids, no PHI, and a purge of stored payloads keeps it whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    tuple_,
)
from sqlalchemy.engine import make_url

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
        found: dict[ClaimKey, LedgerEntry] = {}
        keys = list(dict.fromkeys(keys))
        c = ledger_table.c
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                query = select(
                    c.provider_npi, c.claim_submitter_identifier, c.content_hash, c.claim_id
                ).where(
                    and_(
                        c.tenant_id == tenant_id,
                        tuple_(c.provider_npi, c.claim_submitter_identifier).in_(chunk),
                    )
                )
                for row in conn.execute(query):
                    found[(row.provider_npi, row.claim_submitter_identifier)] = LedgerEntry(
                        row.content_hash, row.claim_id
                    )
        return found

    def record(self, tenant_id: int, acks: Sequence[Acknowledgement], run_id: str) -> None:
        """Write one acknowledged batch in one transaction (keeps each claim's first_sent_at)."""
        if not acks:
            return
        now = _now()
        keys = [(a.provider_npi, a.claim_submitter_identifier) for a in acks]
        c = ledger_table.c
        with self.engine.begin() as conn:
            first_sent = {
                (row.provider_npi, row.claim_submitter_identifier): row.first_sent_at
                for row in conn.execute(
                    select(c.provider_npi, c.claim_submitter_identifier, c.first_sent_at).where(
                        c.tenant_id == tenant_id,
                        tuple_(c.provider_npi, c.claim_submitter_identifier).in_(keys),
                    )
                )
            }
            if first_sent:
                conn.execute(
                    delete(ledger_table).where(
                        c.tenant_id == tenant_id,
                        tuple_(c.provider_npi, c.claim_submitter_identifier).in_(list(first_sent)),
                    )
                )
            conn.execute(
                insert(ledger_table),
                [
                    {
                        "tenant_id": tenant_id,
                        "provider_npi": a.provider_npi,
                        "claim_submitter_identifier": a.claim_submitter_identifier,
                        "content_hash": a.content_hash,
                        "claim_id": a.claim_id,
                        "partition_key": a.partition_key,
                        "run_id": run_id,
                        "first_sent_at": first_sent.get(
                            (a.provider_npi, a.claim_submitter_identifier), now
                        ),
                        "last_sent_at": now,
                    }
                    for a in acks
                ],
            )

    def count(self, tenant_id: int) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(ledger_table.c.tenant_id == tenant_id)
            ).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC)
