"""The emulator's SQLite state: claims upserted by key, committed idempotency keys, counters.

One connection behind one lock: SQLite takes one writer at a time anyway, and a batch of a
hundred claims is a single ``executemany`` plus a single lookup, so requests queue for
milliseconds. WAL with ``synchronous=NORMAL`` keeps every commit when the process is killed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from claims_pipeline.errors import ClaimsPipelineError

_UPSERT = """
INSERT INTO claims (
    tenant_id, provider_npi, claim_submitter_identifier, content, content_hash, version,
    created_at, updated_at
)
VALUES (?, ?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (tenant_id, provider_npi, claim_submitter_identifier) DO UPDATE SET
    content = excluded.content,
    content_hash = excluded.content_hash,
    version = claims.version + 1,
    updated_at = excluded.updated_at
"""

# One statement for the ids of a whole batch, in request order: the keys travel as one JSON
# array, so there is no placeholder list to build and no bound-variable limit to respect.
_IDS_IN_ORDER = """
SELECT claims.id
FROM json_each(?) AS wanted
JOIN claims
    ON claims.tenant_id = ?
    AND claims.provider_npi = json_extract(wanted.value, '$[0]')
    AND claims.claim_submitter_identifier = json_extract(wanted.value, '$[1]')
ORDER BY wanted.key
"""

_ADD_TO_COUNTER = """
INSERT INTO counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value
"""

_LIST_CLAIMS = """
SELECT id, provider_npi, claim_submitter_identifier, content, content_hash, version,
    created_at, updated_at
FROM claims
WHERE tenant_id = ? AND id > ?
ORDER BY id
LIMIT ?
"""


class IdempotencyConflict(ClaimsPipelineError):
    """An Idempotency-Key was already committed with a different request body."""


@dataclass(frozen=True)
class IncomingClaim:
    """One claim of an accepted request, ready to store: its key and its canonical JSON."""

    provider_npi: str
    claim_submitter_identifier: str
    content: str
    content_hash: str


@dataclass(frozen=True)
class ImportOutcome:
    """The ids of a request's claims in request order; ``replayed`` if nothing was applied."""

    claim_ids: list[int]
    replayed: bool = False


class ClaimStore:
    """Claims by (tenant_id, provider_npi, claim_submitter_identifier) in one SQLite file."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: transactions are begun and ended explicitly, below.
        self._connection = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode = WAL")
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute("PRAGMA busy_timeout = 5000")
        schema = resources.files(__package__).joinpath("schema.sql").read_text()
        with self._lock:
            self._connection.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def find_idempotent(self, tenant_id: int, key: str, body_hash: str) -> ImportOutcome | None:
        """The committed outcome of ``key`` if its body hash matches, None if ``key`` is new.

        Raises :class:`IdempotencyConflict` if ``key`` was committed with another body.
        """
        with self._lock:
            return self._find_idempotent(tenant_id, key, body_hash)

    def import_claims(
        self,
        tenant_id: int,
        claims: Sequence[IncomingClaim],
        idempotency: tuple[str, str] | None = None,
    ) -> ImportOutcome:
        """Upsert ``claims`` in one transaction; a new key gets the next id, a known one keeps it.

        ``idempotency`` is ``(key, body_hash)``: if that key was committed already, nothing is
        applied and its outcome is returned with ``replayed=True``.
        """
        now = datetime.now(UTC).isoformat()
        with self._lock, self._transaction() as connection:
            if idempotency is not None:
                # Checked again inside the write transaction: two concurrent requests with the
                # same key must not both apply.
                committed = self._find_idempotent(tenant_id, *idempotency)
                if committed is not None:
                    return committed
            connection.executemany(
                _UPSERT,
                (
                    (
                        tenant_id,
                        claim.provider_npi,
                        claim.claim_submitter_identifier,
                        claim.content,
                        claim.content_hash,
                        now,
                        now,
                    )
                    for claim in claims
                ),
            )
            keys = json.dumps([[c.provider_npi, c.claim_submitter_identifier] for c in claims])
            claim_ids = [row[0] for row in connection.execute(_IDS_IN_ORDER, (keys, tenant_id))]
            if idempotency is not None:
                connection.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                    (tenant_id, idempotency[0], idempotency[1], json.dumps(claim_ids), now),
                )
            connection.execute(_ADD_TO_COUNTER, ("claims_received", len(claims)))
            return ImportOutcome(claim_ids=claim_ids)

    def list_claims(
        self, tenant_id: int, after_id: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored claims of ``tenant_id`` by id: content as posted, version = 1 + updates."""
        with self._lock:
            rows = self._connection.execute(
                _LIST_CLAIMS, (tenant_id, after_id, -1 if limit is None else limit)
            ).fetchall()
        return [
            {
                "id": row[0],
                "provider_npi": row[1],
                "claim_submitter_identifier": row[2],
                "content": json.loads(row[3]),
                "content_hash": row[4],
                "version": row[5],
                "created_at": row[6],
                "updated_at": row[7],
            }
            for row in rows
        ]

    def add_to_counters(self, amounts: Mapping[str, int]) -> None:
        """Add each amount to its named counter (created at zero)."""
        with self._lock, self._transaction() as connection:
            connection.executemany(_ADD_TO_COUNTER, amounts.items())

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._connection.execute("SELECT name, value FROM counters"))

    def claim_count(self) -> int:
        """How many distinct claims are stored, over all tenants."""
        with self._lock:
            count: int = self._connection.execute("SELECT count(*) FROM claims").fetchone()[0]
            return count

    def _find_idempotent(self, tenant_id: int, key: str, body_hash: str) -> ImportOutcome | None:
        row = self._connection.execute(
            "SELECT body_hash, claim_ids FROM idempotency_keys"
            " WHERE tenant_id = ? AND idempotency_key = ?",
            (tenant_id, key),
        ).fetchone()
        if row is None:
            return None
        if row[0] != body_hash:
            raise IdempotencyConflict("the Idempotency-Key was already used with another body")
        return ImportOutcome(claim_ids=json.loads(row[1]), replayed=True)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a transaction never fails half-way on
        # a lock upgrade.
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield self._connection
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
