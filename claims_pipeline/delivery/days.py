"""Delivery of a range of dates of service: read the stored claims, deliver them through the
ledger (the caller holds the tenant's lock), write each day's delivery results, find the claims
the EHR withdrew, remember refused and pending attempts and the synced days' fingerprints.
Plain code, called by the ``claims_import`` asset."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from claims_pipeline.delivery.client import ImportApiClient
from claims_pipeline.delivery.ledger import Attempt, ClaimState, DeliveryLedger, LedgerEntry
from claims_pipeline.delivery.sink import (
    DeliveryOptions,
    DeliveryResult,
    Outcome,
    OutgoingClaim,
    deliver,
)
from claims_pipeline.names import CLAIMS, DRY_RUN_DIR, IMPORT, REJECTIONS
from claims_pipeline.storage import (
    DELIVERY_SCHEMA,
    EXTRACTED_AT,
    FINGERPRINT,
    PartitionStore,
    RowBuffer,
    parse_instant,
)

PROGRESS_EVERY_CLAIMS = 10_000
#: Outcomes after which the ledger must hold the claim's content.
ACKNOWLEDGED = frozenset({Outcome.SENT, Outcome.UPDATED, Outcome.UNCHANGED})


def outgoing_claims(store: PartitionStore, days: list[str]) -> Iterator[OutgoingClaim]:
    """The stored claims of these days, in stored (deterministic) order, each with the instant
    its EHR rows were read."""
    columns = ["provider_npi", "claim_submitter_identifier", "content_hash", "payload"]
    for day in days:
        service_date = date.fromisoformat(day)
        extracted_at = parse_instant(store.facts(CLAIMS, day).get(EXTRACTED_AT))
        for batch in store.read_batches(CLAIMS, day, columns=columns):
            values = [batch.column(name).to_pylist() for name in columns]
            for npi, key, content_hash, payload in zip(*values, strict=True):
                yield OutgoingClaim(service_date, npi, key, content_hash, payload, extracted_at)


def count_rows(store: PartitionStore, asset: str, day: str) -> int:
    return sum(batch.num_rows for batch in store.read_batches(asset, day, columns=["service_date"]))


def rejected_keys(store: PartitionStore, days: list[str]) -> dict[str, str]:
    """Claim keys this run held back by validation, with their reason codes."""
    found: dict[str, str] = {}
    for day in days:
        columns = ["claim_submitter_identifier", "reason_codes"]
        for batch in store.read_batches(REJECTIONS, day, columns=columns):
            keys, reasons = (column.to_pylist() for column in batch.columns)
            found.update((k, r) for k, r in zip(keys, reasons, strict=True) if k)
    return found


def withdrawn_claims(
    ledger: DeliveryLedger,
    tenant_id: int,
    days: list[str],
    seen: set[str],
    rejected: dict[str, str],
) -> list[LedgerEntry]:
    """Claims the service holds on these days that the EHR no longer supports: marked
    ``withdrawn`` in the ledger (with why) and returned with those withdrawn before."""
    states = ledger.states_on_days(tenant_id, [date.fromisoformat(d) for d in days])
    gone = [k for k, state in states.items() if k not in seen and state is not ClaimState.RESOLVED]
    entries = ledger.lookup(tenant_id, gone)
    open_claims = []
    for key in gone:
        if (entry := entries.get(key)) is None:  # gone since: nothing to withdraw
            continue
        if entry.state is not ClaimState.WITHDRAWN:
            note = (
                f"no longer billable ({rejected[key]})"
                if key in rejected
                else "voided, deleted, or moved to a date of service outside this run"
            )
            ledger.mark(tenant_id, key, ClaimState.WITHDRAWN, note=note)
            entry = replace(entry, state=ClaimState.WITHDRAWN, note=note)
        open_claims.append(entry)
    return open_claims


@dataclass
class RunReport:
    """What a delivery of several days did, per day."""

    tenant_id: int
    outcomes: dict[str, Counter[str]]
    id_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    held: list[dict[str, str]] = field(default_factory=list)
    withdrawn: list[LedgerEntry] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


def deliver_days(
    store: PartitionStore,
    ledger: DeliveryLedger,
    client: ImportApiClient,
    days: list[str],
    options: DeliveryOptions,
    run_id: str,
    still_locked: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = lambda message: None,
) -> RunReport:
    """Deliver the days' claims under the tenant's lock, write each day's delivery results,
    find withdrawn claims and remember the synced days' fingerprints."""
    report = RunReport(client.tenant_id, {day: Counter() for day in days})
    seen: set[str] = set()
    with ExitStack() as files:
        results_out = {
            day: RowBuffer(
                files.enter_context(store.writer(IMPORT, day, DELIVERY_SCHEMA)), DELIVERY_SCHEMA
            )
            for day in days
        }
        results = deliver(
            outgoing_claims(store, days),
            ledger=ledger,
            tenant_id=client.tenant_id,
            run_id=run_id,
            client=client,
            options=options,
            still_locked=still_locked,
        )
        for done, result in enumerate(results, start=1):
            claim = result.claim
            day = claim.service_date.isoformat()
            seen.add(claim.claim_submitter_identifier)
            report.outcomes[day][result.outcome.value] += 1
            if result.claim_id is not None and result.outcome in ACKNOWLEDGED:
                low, high = report.id_ranges.get(day, (result.claim_id,) * 2)
                report.id_ranges[day] = (min(low, result.claim_id), max(high, result.claim_id))
            if result.outcome in (Outcome.REJECTED, Outcome.PENDING):
                report.attempts.append(attempt_of(result))
            if result.outcome is Outcome.HELD:
                report.held.append(
                    {"claim": claim.claim_submitter_identifier, "new_npi": claim.provider_npi}
                )
            results_out[day].append(
                {
                    "service_date": claim.service_date,
                    "provider_npi": claim.provider_npi,
                    "claim_submitter_identifier": claim.claim_submitter_identifier,
                    "outcome": result.outcome.value,
                    "claim_id": result.claim_id,
                    "content_hash": claim.content_hash,
                    "reason": result.reason,
                }
            )
            if done % PROGRESS_EVERY_CLAIMS == 0:
                log(f"claims_import: {done} claims processed so far")
        for out in results_out.values():
            out.flush()
    ledger.record_attempts(client.tenant_id, report.attempts, run_id)
    report.withdrawn = withdrawn_claims(
        ledger, client.tenant_id, days, seen, rejected_keys(store, days)
    )
    synced = {
        date.fromisoformat(day): fingerprint
        for day in days
        if not report.outcomes[day][Outcome.PENDING]
        and (fingerprint := store.facts(CLAIMS, day).get(FINGERPRINT))
    }
    ledger.record_days(client.tenant_id, synced, run_id)
    return report


def attempt_of(result: DeliveryResult) -> Attempt:
    """A refused or pending claim as the ledger remembers it: payer and billed amount, no
    PHI."""
    claim = json.loads(result.claim.payload)
    amount = sum(
        (Decimal(str(line.get("monetary_amount", 0))) for line in claim.get("charge_lines", [])),
        Decimal(0),
    )
    return Attempt(
        result.claim.claim_submitter_identifier,
        result.claim.service_date,
        result.outcome.value,
        result.reason,
        claim.get("payer_name"),
        result.claim.provider_npi,
        amount,
    )


def dry_run_days(
    store: PartitionStore,
    ledger: DeliveryLedger,
    tenant_id: int,
    days: list[str],
    options: DeliveryOptions,
    run_id: str,
) -> tuple[Counter[str], str]:
    """Write the payloads a delivery would post, and change nothing else: the outcome counts,
    and where the payloads are."""
    payload_dir, payload_name = DRY_RUN_DIR, f"{run_id}.jsonl"
    with store.private_output(payload_dir, payload_name) as payload_file:
        counts = Counter(
            result.outcome.value
            for result in deliver(
                outgoing_claims(store, days),
                ledger=ledger,
                tenant_id=tenant_id,
                run_id=run_id,
                client=None,
                options=options,
                dry_run_sink=lambda body: payload_file.write(body + b"\n"),
            )
        )
    return counts, f"{store.root}/{payload_dir}/{payload_name}"


def acknowledged(
    store: PartitionStore, ledger: DeliveryLedger, tenant_id: int, days: list[str]
) -> tuple[int, int]:
    """(claims reported delivered whose content the ledger holds, claims reported
    delivered), re-read from the stored delivery results and the ledger: the ledger's hashes
    of each day in one query, a look-up by key only for a claim it places on another day."""
    acknowledged = expected = 0
    columns = ["claim_submitter_identifier", "content_hash", "outcome"]
    for day in days:
        held = ledger.hashes_on_days(tenant_id, [date.fromisoformat(day)])
        for batch in store.read_batches(IMPORT, day, columns=columns):
            keys, hashes, outcomes = (column.to_pylist() for column in batch.columns)
            wanted = {
                key: content_hash
                for key, content_hash, outcome in zip(keys, hashes, outcomes, strict=True)
                if outcome in ACKNOWLEDGED
            }
            elsewhere = [key for key in wanted if key not in held]
            held.update(
                (key, entry.content_hash)
                for key, entry in ledger.lookup(tenant_id, elsewhere).items()
            )
            expected += len(wanted)
            acknowledged += sum(
                1
                for key, content_hash in wanted.items()
                if key in held and held[key] == content_hash
            )
    return acknowledged, expected
