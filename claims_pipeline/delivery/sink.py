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
from contextlib import suppress
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
    delivery lock; it is called before each batch is posted.

    Acknowledgements are recorded here, not in the posting threads: every batch answered since
    the last look, in one transaction, before any further batch is posted. So the batches the
    API may hold without the ledger knowing are never more than those in flight, and a result
    is yielded only once its acknowledgement is recorded."""
    batcher = _Batcher(client)
    executor = ThreadPoolExecutor(max_workers=max(1, options.max_in_flight))
    in_flight: set[Future[_Settled]] = set()
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
                answered: list[DeliveryResult] = []
                while in_flight and len(in_flight) >= (options.max_in_flight if settled else 1):
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    settled = True
                    answered += _record(done, ledger, tenant_id, run_id)
                still_locked()
                in_flight.add(executor.submit(batcher.send, batch, known))
                yield from answered  # while the batch just posted is in flight
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            yield from _record(done, ledger, tenant_id, run_id)
    finally:
        # A run stopped early (an error, a lost lock, a consumer that stopped reading) lets
        # the batches in flight settle and records what the API acknowledged of them; the
        # error that stopped it is the one raised.
        batcher.abort.set()
        executor.shutdown(wait=True, cancel_futures=True)
        with suppress(Exception):
            _record(in_flight, ledger, tenant_id, run_id)


def _record(
    answered: Iterable[Future[_Settled]], ledger: DeliveryLedger, tenant_id: int, run_id: str
) -> list[DeliveryResult]:
    """Record what the API acknowledged of these answered batches, in one transaction; their
    results, or the first error that stopped one of them (raised once the others' are
    recorded)."""
    settled = [future.result() for future in answered if not future.cancelled()]
    ledger.record(tenant_id, [ack for batch in settled for ack in batch.acks], run_id)
    for batch in settled:
        if batch.error is not None:
            raise batch.error
    return [result for batch in settled for result in batch.results]


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


@dataclass(frozen=True, slots=True)
class _Settled:
    """What became of a batch: its results, what the API acknowledged of it (for the ledger
    to record before the results are reported), and the error that stopped the run, if one
    did (the parts of a bisected batch acknowledged before it are recorded all the same)."""

    results: list[DeliveryResult]
    acks: list[Acknowledgement]
    error: Exception | None = None


class _Batcher:
    """Posts a batch (in a worker thread) and bisects a refused one; writes nothing."""

    def __init__(self, client: ImportApiClient | None):
        self.client = client
        self.abort = threading.Event()

    def send(self, batch: list[OutgoingClaim], known: dict[str, LedgerEntry]) -> _Settled:
        acks: list[Acknowledgement] = []
        try:
            return _Settled(self._settle(batch, self._post(batch), known, acks), acks)
        except Exception as error:  # re-raised by the consuming thread once acks are recorded
            return _Settled([], acks, error)

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
        acks: list[Acknowledgement],
    ) -> list[DeliveryResult]:
        """The batch's results; what the API acknowledged is added to ``acks``."""
        if isinstance(answer, BatchRejectedError):
            return self._isolate(batch, answer, known, acks)
        if isinstance(answer, _Unsent):
            return answer.results
        results = []
        for claim, claim_id in zip(batch, answer, strict=True):
            key = claim.claim_submitter_identifier
            outcome = Outcome.UPDATED if key in known else Outcome.SENT
            results.append(DeliveryResult(claim, outcome, claim_id))
            acks.append(
                Acknowledgement(
                    claim.provider_npi,
                    key,
                    claim.content_hash,
                    claim_id,
                    claim.service_date,
                    claim.extracted_at,
                )
            )
        return results

    def _isolate(
        self,
        batch: list[OutgoingClaim],
        refusal: BatchRejectedError,
        known: dict[str, LedgerEntry],
        acks: list[Acknowledgement],
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
            for result in self._settle(half, answer, known, acks)
        ]


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
