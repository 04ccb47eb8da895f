"""Idempotent delivery of claims, reconciled with the ledger: send what the service does not hold
yet or holds in another version, hold what moved to another NPI, skip what is unchanged or was
superseded by a newer extraction, post the rest in batches (several in flight), isolate refused
claims by bisecting, and record every acknowledged batch in the ledger. Never loses a claim (each
ends with one :class:`Outcome`) and never records one the API did not acknowledge. The caller
holds the tenant's delivery lock, so no other run reads or writes these ledger rows meanwhile.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from itertools import islice
from typing import TypeVar

import httpx

from claims_pipeline.delivery.client import (
    ApiEndpointError,
    BatchRejectedError,
    ImportApiClient,
    TransientApiError,
    batch_body,
)
from claims_pipeline.delivery.ledger import Acknowledgement, ClaimState, DeliveryLedger, LedgerEntry
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.phi import scrub, sensitive_values

T = TypeVar("T")


class Outcome(StrEnum):
    SENT = "sent"  # new at the service
    UPDATED = "updated"  # replaced the version the service held
    UNCHANGED = "unchanged"  # the service holds exactly this
    SUPERSEDED = "superseded"  # a newer extraction of it was delivered by another run
    HELD = "held"  # its rendering NPI changed: a person must act before it is sent
    REJECTED = "rejected"  # refused by the API, with its (scrubbed) reason
    PENDING = "pending"  # not acknowledged after retries: a re-run sends it
    DRY_RUN = "dry_run"  # would have been sent


#: Outcomes after which the service holds the claim's current content.
DELIVERED = frozenset({Outcome.SENT, Outcome.UPDATED, Outcome.UNCHANGED})


@dataclass(frozen=True, slots=True)
class OutgoingClaim:
    service_date: date
    provider_npi: str
    claim_submitter_identifier: str
    content_hash: str
    payload: str  # the claim's JSON text, exactly as posted
    extracted_at: datetime | None = None  # when the EHR rows it was built from were read


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


def reconcile(
    claim: OutgoingClaim, entry: LedgerEntry | None, force_resend: bool = False
) -> tuple[Outcome, str | None] | None:
    """What to do with a claim given what the ledger says the service holds: None to send it,
    else the outcome without sending (and why)."""
    if entry is None:
        return None
    if claim.provider_npi != entry.provider_npi and entry.released_npi != claim.provider_npi:
        return Outcome.HELD, (
            f"rendering provider changed from NPI {entry.provider_npi} to "
            f"{claim.provider_npi}; the service holds claim_id {entry.claim_id} under the old NPI"
        )
    if entry.extracted_at and claim.extracted_at and claim.extracted_at < entry.extracted_at:
        return Outcome.SUPERSEDED, "a newer extraction of this claim was already delivered"
    if force_resend:
        return None
    if entry.content_hash == claim.content_hash and entry.provider_npi == claim.provider_npi:
        return Outcome.UNCHANGED, None
    return None


def deliver(
    claims: Iterable[OutgoingClaim],
    *,
    ledger: DeliveryLedger,
    tenant_id: int,
    run_id: str,
    client: ImportApiClient | None,
    options: DeliveryOptions = DeliveryOptions(),
    dry_run_sink: Callable[[bytes], None] | None = None,
    still_locked: Callable[[], None] = lambda: None,
) -> Iterator[DeliveryResult]:
    """One result per input claim, streamed. Batches follow input order; up to
    ``max_in_flight`` are posted at once after the first one has been answered. Raises
    AuthenticationError on 401/403 and ApiEndpointError on answers that are not about claims
    (batches already in flight settle first). ``still_locked`` raises when the caller lost the
    delivery lock; it is called before each batch is posted."""
    batcher = _Batcher(ledger, tenant_id, run_id, client)
    executor = ThreadPoolExecutor(max_workers=max(1, options.max_in_flight))
    in_flight: set[Future[list[DeliveryResult]]] = set()
    settled = False
    try:
        for chunk in _chunks(claims, options.lookup_chunk):
            known = ledger.lookup(tenant_id, [c.claim_submitter_identifier for c in chunk])
            to_send = []
            for claim in chunk:
                entry = known.get(claim.claim_submitter_identifier)
                decision = reconcile(claim, entry, options.force_resend)
                if decision is None:
                    to_send.append(claim)
                    continue
                outcome, reason = decision
                if not options.dry_run and entry is not None:
                    _note_ehr_state(ledger, tenant_id, claim, entry, outcome, reason)
                yield DeliveryResult(claim, outcome, entry.claim_id if entry else None, reason)
            for batch in _chunks(to_send, options.batch_size):
                if options.dry_run:
                    if dry_run_sink is not None:
                        dry_run_sink(batch_body([c.payload for c in batch]))
                    for claim in batch:
                        yield DeliveryResult(claim, Outcome.DRY_RUN)
                    continue
                # The first batch goes alone: a wrong key or URL costs one request, not a volley.
                while in_flight and len(in_flight) >= (options.max_in_flight if settled else 1):
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    settled = True
                    for future in done:
                        yield from future.result()
                still_locked()
                in_flight.add(executor.submit(batcher.send, batch, known))
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    finally:
        batcher.abort.set()
        executor.shutdown(wait=True, cancel_futures=True)


def _note_ehr_state(
    ledger: DeliveryLedger,
    tenant_id: int,
    claim: OutgoingClaim,
    entry: LedgerEntry,
    outcome: Outcome,
    reason: str | None,
) -> None:
    """Keep the ledger's state in step with what the EHR says of a claim that was not sent."""
    key = claim.claim_submitter_identifier
    if outcome is Outcome.HELD and (
        entry.state is not ClaimState.HELD or entry.held_npi != claim.provider_npi
    ):
        ledger.mark(tenant_id, key, ClaimState.HELD, note=reason, held_npi=claim.provider_npi)
    elif outcome is Outcome.UNCHANGED and entry.state is not ClaimState.DELIVERED:
        # held and moved back to the old NPI, or withdrawn and billable again
        ledger.mark(tenant_id, key, ClaimState.DELIVERED)


@dataclass(frozen=True, slots=True)
class _Unsent:
    results: list[DeliveryResult]


class _Batcher:
    def __init__(
        self,
        ledger: DeliveryLedger,
        tenant_id: int,
        run_id: str,
        client: ImportApiClient | None,
    ):
        self.ledger = ledger
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.client = client
        self.abort = threading.Event()

    def send(
        self, batch: list[OutgoingClaim], known: dict[str, LedgerEntry]
    ) -> list[DeliveryResult]:
        return self._settle(batch, self._post(batch), known)

    def _post(self, batch: list[OutgoingClaim]) -> list[int] | BatchRejectedError | _Unsent:
        """The claim_ids the API gave, its refusal, or the batch left pending."""
        if self.abort.is_set() or self.client is None:
            return _Unsent(
                [DeliveryResult(c, Outcome.PENDING, reason="run stopped") for c in batch]
            )
        try:
            return self.client.post_batch(
                [c.payload for c in batch],
                secrets=lambda: sensitive_values(json.loads(c.payload) for c in batch),
            )
        except (AuthenticationError, ApiEndpointError):
            self.abort.set()
            raise
        except BatchRejectedError as error:
            return error
        except (TransientApiError, httpx.TransportError) as error:
            reason = str(error) if isinstance(error, TransientApiError) else type(error).__name__
            return _Unsent([DeliveryResult(c, Outcome.PENDING, reason=reason) for c in batch])

    def _settle(
        self,
        batch: list[OutgoingClaim],
        answer: list[int] | BatchRejectedError | _Unsent,
        known: dict[str, LedgerEntry],
    ) -> list[DeliveryResult]:
        if isinstance(answer, BatchRejectedError):
            return self._isolate(batch, answer, known)
        if isinstance(answer, _Unsent):
            return answer.results
        return self._acknowledge(batch, answer, known)

    def _isolate(
        self,
        batch: list[OutgoingClaim],
        refusal: BatchRejectedError,
        known: dict[str, LedgerEntry],
    ) -> list[DeliveryResult]:
        """Bisect a refused batch until the refused claims stand alone. When both halves are
        refused exactly as the whole was, the refusal is not about claims: stop the run."""
        if len(batch) == 1:
            reason = scrub(refusal.reason, sensitive_values([json.loads(batch[0].payload)]))
            return [DeliveryResult(batch[0], Outcome.REJECTED, reason=reason)]
        middle = len(batch) // 2
        halves = [batch[:middle], batch[middle:]]
        answers = [self._post(half) for half in halves]
        if all(
            isinstance(a, BatchRejectedError)
            and (a.status, a.reason) == (refusal.status, refusal.reason)
            for a in answers
        ):
            self.abort.set()
            raise ApiEndpointError(
                f"The claims-import API refused every part of a batch the same way (HTTP "
                f"{refusal.status}) without naming a claim: check CLAIMS_API_URL and the API's "
                "status. Nothing was recorded as delivered."
            )
        return [
            result
            for half, answer in zip(halves, answers, strict=True)
            for result in self._settle(half, answer, known)
        ]

    def _acknowledge(
        self, batch: list[OutgoingClaim], claim_ids: list[int], known: dict[str, LedgerEntry]
    ) -> list[DeliveryResult]:
        pairs = list(zip(batch, claim_ids, strict=True))
        self.ledger.record(
            self.tenant_id,
            [
                Acknowledgement(
                    c.provider_npi,
                    c.claim_submitter_identifier,
                    c.content_hash,
                    cid,
                    c.service_date,
                    c.extracted_at,
                )
                for c, cid in pairs
            ],
            self.run_id,
        )
        return [
            DeliveryResult(
                c,
                Outcome.UPDATED if c.claim_submitter_identifier in known else Outcome.SENT,
                cid,
            )
            for c, cid in pairs
        ]


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
