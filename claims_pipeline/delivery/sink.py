"""Idempotent delivery of claims: skip what the ledger says the API already holds, post the
rest in batches (several in flight), isolate refused claims by bisecting, and record every
acknowledged batch in the ledger. Never loses a claim (each ends sent, unchanged, rejected or
pending) and never records one the API did not acknowledge.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

import httpx

from claims_pipeline.delivery.client import (
    BatchRejectedError,
    ImportApiClient,
    TransientApiError,
    batch_body,
)
from claims_pipeline.delivery.ledger import Acknowledgement, DeliveryLedger
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.phi import scrub, sensitive_values


class Outcome(StrEnum):
    SENT = "sent"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"  # refused by the API, with its (scrubbed) reason
    PENDING = "pending"  # not acknowledged after retries: a re-run sends it
    DRY_RUN = "dry_run"  # would have been sent


@dataclass(frozen=True, slots=True)
class OutgoingClaim:
    partition_key: str
    provider_npi: str
    claim_submitter_identifier: str
    content_hash: str
    payload: str  # the claim's JSON text, exactly as posted


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    claim: OutgoingClaim
    outcome: Outcome
    claim_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeliveryOptions:
    batch_size: int = 100
    max_in_flight: int = 4
    force_resend: bool = False
    dry_run: bool = False
    lookup_chunk: int = 5_000


def deliver(
    claims: Iterable[OutgoingClaim],
    *,
    ledger: DeliveryLedger,
    tenant_id: int,
    run_id: str,
    client: ImportApiClient | None,
    options: DeliveryOptions = DeliveryOptions(),
    dry_run_sink: Callable[[bytes], None] | None = None,
) -> Iterator[DeliveryResult]:
    """One result per input claim, streamed. Batches follow input order; up to
    ``max_in_flight`` are posted at once after the first one has been answered. Raises
    AuthenticationError on 401/403 (batches already in flight settle first)."""
    batcher = _Batcher(ledger, tenant_id, run_id, client)
    executor = ThreadPoolExecutor(max_workers=max(1, options.max_in_flight))
    in_flight: set[Future] = set()
    settled = False
    try:
        for chunk in _chunks(claims, options.lookup_chunk):
            known = (
                {}
                if options.force_resend
                else ledger.lookup(
                    tenant_id, [(c.provider_npi, c.claim_submitter_identifier) for c in chunk]
                )
            )
            to_send = []
            for claim in chunk:
                entry = known.get((claim.provider_npi, claim.claim_submitter_identifier))
                if entry is not None and entry.content_hash == claim.content_hash:
                    yield DeliveryResult(claim, Outcome.UNCHANGED, entry.claim_id)
                else:
                    to_send.append(claim)
            for batch in _chunks(to_send, options.batch_size):
                if options.dry_run:
                    if dry_run_sink is not None:
                        dry_run_sink(batch_body([c.payload for c in batch]))
                    for claim in batch:
                        yield DeliveryResult(claim, Outcome.DRY_RUN)
                    continue
                # The first batch goes alone: a wrong key costs one request, not a volley.
                while in_flight and len(in_flight) >= (options.max_in_flight if settled else 1):
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    settled = True
                    for future in done:
                        yield from future.result()
                in_flight.add(executor.submit(batcher.send, batch))
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    finally:
        batcher.abort.set()
        executor.shutdown(wait=True, cancel_futures=True)


class _Batcher:
    def __init__(self, ledger, tenant_id, run_id, client):
        self.ledger = ledger
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.client = client
        self.abort = threading.Event()

    def send(self, batch: list[OutgoingClaim]) -> list[DeliveryResult]:
        if self.abort.is_set():
            return [DeliveryResult(c, Outcome.PENDING, reason="run stopped") for c in batch]
        try:
            claim_ids = self.client.post_batch(
                [c.payload for c in batch],
                secrets=lambda: sensitive_values(json.loads(c.payload) for c in batch),
            )
        except AuthenticationError:
            self.abort.set()
            raise
        except BatchRejectedError as error:
            if len(batch) == 1:
                reason = scrub(error.reason, sensitive_values([json.loads(batch[0].payload)]))
                return [DeliveryResult(batch[0], Outcome.REJECTED, reason=reason)]
            middle = len(batch) // 2  # bisect until the refused claims stand alone
            return self.send(batch[:middle]) + self.send(batch[middle:])
        except (TransientApiError, httpx.TransportError) as error:
            reason = str(error) if isinstance(error, TransientApiError) else type(error).__name__
            return [DeliveryResult(c, Outcome.PENDING, reason=reason) for c in batch]
        self.ledger.record(
            self.tenant_id,
            [
                Acknowledgement(
                    c.provider_npi,
                    c.claim_submitter_identifier,
                    c.content_hash,
                    cid,
                    c.partition_key,
                )
                for c, cid in zip(batch, claim_ids, strict=True)
            ],
            self.run_id,
        )
        return [
            DeliveryResult(c, Outcome.SENT, cid) for c, cid in zip(batch, claim_ids, strict=True)
        ]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
