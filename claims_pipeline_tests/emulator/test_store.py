"""The SQLite store on its own: ids, versions, idempotency keys, one transaction per request."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from claims_pipeline.contract import canonical_json, content_hash
from claims_pipeline.emulator.store import ClaimStore, IdempotencyConflict, IncomingClaim
from claims_pipeline_tests.emulator.factories import make_claim

TENANT = 7


def _incoming(key: str, **overrides: object) -> IncomingClaim:
    claim = make_claim(key, **overrides)
    return IncomingClaim("1234567893", key, canonical_json(claim), content_hash(claim))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClaimStore]:
    store = ClaimStore(tmp_path / "store.sqlite")
    yield store
    store.close()


def test_ids_follow_request_order_and_survive_updates(store: ClaimStore) -> None:
    assert store.import_claims(TENANT, [_incoming("A"), _incoming("B")]).claim_ids == [1, 2]
    assert store.import_claims(TENANT, [_incoming("C"), _incoming("A")]).claim_ids == [3, 1]
    assert [(c["id"], c["version"]) for c in store.list_claims(TENANT)] == [(1, 2), (2, 1), (3, 1)]


def test_tenants_do_not_share_claims(store: ClaimStore) -> None:
    store.import_claims(TENANT, [_incoming("A")])
    store.import_claims(TENANT + 1, [_incoming("A")])

    assert len(store.list_claims(TENANT)) == len(store.list_claims(TENANT + 1)) == 1


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = ClaimStore(tmp_path / "s.sqlite")
    first.import_claims(TENANT, [_incoming("A")], ("k", "h"))
    first.close()

    reopened = ClaimStore(tmp_path / "s.sqlite")

    assert reopened.list_claims(TENANT)[0]["content"] == make_claim("A")
    assert reopened.counters() == {"claims_received": 1}
    assert reopened.import_claims(TENANT, [_incoming("B")], ("k", "h")).replayed


def test_idempotency_key_is_bound_to_its_body(store: ClaimStore) -> None:
    store.import_claims(TENANT, [_incoming("A")], ("key-1", "hash-a"))

    assert store.find_idempotent(TENANT, "key-1", "hash-a").claim_ids == [1]  # type: ignore[union-attr]
    assert store.find_idempotent(TENANT + 1, "key-1", "hash-a") is None
    with pytest.raises(IdempotencyConflict):
        store.import_claims(TENANT, [_incoming("B")], ("key-1", "hash-b"))
    assert len(store.list_claims(TENANT)) == 1


def test_a_failing_request_leaves_nothing_behind(store: ClaimStore) -> None:
    broken = IncomingClaim("1234567893", "B", None, "x")  # type: ignore[arg-type]

    with pytest.raises(sqlite3.IntegrityError):
        store.import_claims(TENANT, [_incoming("A"), broken], ("key", "hash"))

    assert store.list_claims(TENANT) == []
    assert store.counters() == {}
    assert store.find_idempotent(TENANT, "key", "hash") is None
