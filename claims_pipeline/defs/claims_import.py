"""``claims_import``: deliver each day's claims to the import API, idempotently, and record for
every claim its claim_id and whether it was sent, unchanged, rejected by the API or pending."""

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext

from claims_pipeline.defs.claims import CLAIMS, REJECTIONS, count_encounters
from claims_pipeline.defs.partitions import daily_partitions, partition_days
from claims_pipeline.defs.reporting import (
    ASSET_DEFAULTS,
    column_schema,
    markdown_table,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.defs.resources import ClaimsApi, ClaimsStorage, QualityGates
from claims_pipeline.defs.tables import RowBuffer
from claims_pipeline.delivery.client import ApiEndpointError, ImportApiClient
from claims_pipeline.delivery.filing import deadlines_ahead, load_filing_limits
from claims_pipeline.delivery.ledger import (
    Attempt,
    ClaimState,
    DeliveryLedger,
    DeliveryLock,
    LedgerEntry,
    UnsentClaim,
)
from claims_pipeline.delivery.sink import (
    DeliveryOptions,
    DeliveryResult,
    Outcome,
    OutgoingClaim,
    deliver,
)
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.storage import (
    DELIVERY_SCHEMA,
    EXTRACTED_AT,
    FINGERPRINT,
    PartitionStore,
    parse_instant,
)

ASSET = "claims_import"
ACKED_CHECK = "valid_claims_acknowledged"
CONSERVED_CHECK = "encounters_conserved"
PROVIDER_CHECK = "no_provider_changes_held"
WITHDRAWN_CHECK = "no_withdrawn_claims"
FILING_CHECK = "filing_deadlines_ahead"
PROGRESS_EVERY_CLAIMS = 10_000
DRY_RUN_DIR = f"{ASSET}_dry_run"
#: Outcomes after which the ledger must hold the claim's content.
_ACKNOWLEDGED = frozenset({Outcome.SENT, Outcome.UPDATED, Outcome.UNCHANGED})


class ImportConfig(dg.Config):
    """Run options of the delivery step."""

    force_resend: bool = False  # re-send every claim (the remote side lost data)
    dry_run: bool = False  # send nothing; write the exact payloads that would be posted


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


def _count_rows(store: PartitionStore, asset: str, day: str) -> int:
    return sum(batch.num_rows for batch in store.read_batches(asset, day, columns=["service_date"]))


def _rejected_keys(store: PartitionStore, days: list[str]) -> dict[str, str]:
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
    open_claims = []
    for entry in ledger.entries_for_days(tenant_id, [date.fromisoformat(d) for d in days]):
        key = entry.claim_submitter_identifier
        if key in seen or entry.state is ClaimState.RESOLVED:
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


# A multi-asset that may be subset, so a dry run can end without materializing or evaluating
# its checks (an @asset's check outputs are required).
@dg.multi_asset(
    name=ASSET,
    specs=[
        dg.AssetSpec(
            ASSET,
            deps=[CLAIMS],
            partitions_def=daily_partitions,
            kinds={"api", "parquet"},
            metadata={"dagster/column_schema": column_schema(DELIVERY_SCHEMA)},
            freshness_policy=dg.FreshnessPolicy.time_window(
                warn_window=timedelta(hours=26), fail_window=timedelta(hours=50)
            ),
            description=(
                "Delivery result of each date of service: for every claim its claim_id and "
                "outcome (sent, updated, unchanged, superseded, held, rejected by the API with "
                "its reason, pending). Stored under CLAIMS_DATA_DIR/claims_import/; the "
                "delivery ledger (CLAIMS_LEDGER_URL) mirrors what the service holds. See "
                "docs/claim-lifecycle.md."
            ),
            **ASSET_DEFAULTS,
        )
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="claims_api",
    can_subset=True,
    check_specs=[
        dg.AssetCheckSpec(
            ACKED_CHECK,
            asset=ASSET,
            description="Every claim reported delivered is in the ledger with its content.",
        ),
        dg.AssetCheckSpec(
            CONSERVED_CHECK,
            asset=ASSET,
            description="encounters = claims with a delivery outcome + rejected by validation.",
        ),
        dg.AssetCheckSpec(
            PROVIDER_CHECK,
            asset=ASSET,
            description="No claim is held because its rendering provider (NPI) changed after "
            "delivery. A held claim needs a person: see docs/claim-lifecycle.md.",
        ),
        dg.AssetCheckSpec(
            WITHDRAWN_CHECK,
            asset=ASSET,
            description="The service holds no claim of these days that the EHR voided, "
            "deleted, stopped billing or moved out of the run.",
        ),
        dg.AssetCheckSpec(
            FILING_CHECK,
            asset=ASSET,
            description="No claim refused by the service or pending (of any day) is within "
            "CLAIMS_FILING_WARN_DAYS of its payer's timely-filing deadline, or past it.",
        ),
    ],
)
def claims_import(
    context: AssetExecutionContext,
    config: ImportConfig,
    claims_api: ClaimsApi,
    claims_storage: ClaimsStorage,
    quality_gates: QualityGates,
) -> Iterator[Any]:
    store = claims_storage.store()
    ledger = claims_storage.ledger()
    days = [day.isoformat() for day in partition_days(context)]
    options = DeliveryOptions(
        batch_size=claims_api.batch_size,
        max_in_flight=claims_api.max_in_flight,
        force_resend=config.force_resend,
        dry_run=config.dry_run,
    )
    if config.dry_run:
        _dry_run(context, store, ledger, claims_api.tenant_id, days, options)
        return
    try:
        with (
            ledger.lock(
                claims_api.tenant_id,
                context.run.run_id,
                on_wait=lambda holder: context.log.info(
                    f"claims_import: waiting for run {holder} to finish delivering"
                ),
            ) as lock,
            claims_api.client() as client,
        ):
            report = _deliver(context, store, ledger, client, lock, days, options)
    except (AuthenticationError, ApiEndpointError) as error:
        # Not transient: fail now, by name, and tell the run-retry daemon (dagster.yaml
        # run_retries) not to try again with the same settings.
        context.instance.add_run_tags(
            context.run.run_id, {"dagster/retry_on_asset_or_op_failure": "false"}
        )
        raise dg.Failure(description=str(error), allow_retries=False) from None
    yield from _report(context, store, ledger, quality_gates, days, report, client)


@dataclass
class _RunReport:
    outcomes: dict[str, Counter[str]]
    id_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    held: list[dict[str, str]] = field(default_factory=list)
    withdrawn: list[LedgerEntry] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


def _deliver(
    context: AssetExecutionContext,
    store: PartitionStore,
    ledger: DeliveryLedger,
    client: ImportApiClient,
    lock: DeliveryLock,
    days: list[str],
    options: DeliveryOptions,
) -> _RunReport:
    """Deliver the days' claims under the tenant's lock, write each day's delivery results,
    find withdrawn claims and remember the synced days' fingerprints."""
    report = _RunReport({day: Counter() for day in days})
    seen: set[str] = set()
    with ExitStack() as files:
        results_out = {
            day: RowBuffer(
                files.enter_context(store.writer(ASSET, day, DELIVERY_SCHEMA)), DELIVERY_SCHEMA
            )
            for day in days
        }
        results = deliver(
            outgoing_claims(store, days),
            ledger=ledger,
            tenant_id=client.tenant_id,
            run_id=context.run.run_id,
            client=client,
            options=options,
            still_locked=lock.check,
        )
        for done, result in enumerate(results, start=1):
            claim = result.claim
            day = claim.service_date.isoformat()
            seen.add(claim.claim_submitter_identifier)
            report.outcomes[day][result.outcome.value] += 1
            if result.claim_id is not None and result.outcome in _ACKNOWLEDGED:
                low, high = report.id_ranges.get(day, (result.claim_id,) * 2)
                report.id_ranges[day] = (min(low, result.claim_id), max(high, result.claim_id))
            if result.outcome in (Outcome.REJECTED, Outcome.PENDING):
                report.attempts.append(_attempt(result))
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
                context.log.info(f"claims_import: {done} claims processed so far")
        for out in results_out.values():
            out.flush()
    ledger.record_attempts(client.tenant_id, report.attempts, context.run.run_id)
    report.withdrawn = withdrawn_claims(
        ledger, client.tenant_id, days, seen, _rejected_keys(store, days)
    )
    synced = {
        date.fromisoformat(day): fingerprint
        for day in days
        if not report.outcomes[day][Outcome.PENDING]
        and (fingerprint := store.facts(CLAIMS, day).get(FINGERPRINT))
    }
    ledger.record_days(client.tenant_id, synced, context.run.run_id)
    return report


def _attempt(result: DeliveryResult) -> Attempt:
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


def _report(
    context: AssetExecutionContext,
    store: PartitionStore,
    ledger: DeliveryLedger,
    gates: QualityGates,
    days: list[str],
    report: _RunReport,
    client: ImportApiClient,
) -> Iterator[Any]:
    tenant_id = client.tenant_id
    figures: dict[str, dict[str, Any]] = {}
    unbalanced = []
    withdrawn_by_day = Counter(
        e.service_date.isoformat() for e in report.withdrawn if e.service_date
    )
    for day in days:
        counts = report.outcomes[day]
        encounters = count_encounters(store, day)
        rejected_by_us = _count_rows(store, REJECTIONS, day)
        ids = report.id_ranges.get(day)
        figures[day] = {
            "dagster/row_count": sum(counts.values()),
            "encounters": encounters,
            "sent": counts[Outcome.SENT] + counts[Outcome.UPDATED],
            "new": counts[Outcome.SENT],
            "updated": counts[Outcome.UPDATED],
            "unchanged": counts[Outcome.UNCHANGED],
            "superseded": counts[Outcome.SUPERSEDED],
            "held": counts[Outcome.HELD],
            "withdrawn": withdrawn_by_day[day],
            "rejected_by_api": counts[Outcome.REJECTED],
            "rejected_by_validation": rejected_by_us,
            "pending": counts[Outcome.PENDING],
            "claim_id_range": f"{ids[0]}-{ids[1]}" if ids else "none",
        }
        figures[day]["summary"] = dg.MetadataValue.md(
            f"**{day}**: {encounters} encounters: {figures[day]['sent']} sent "
            f"({counts[Outcome.UPDATED]} of them updates), {counts[Outcome.UNCHANGED]} "
            f"unchanged, {counts[Outcome.HELD]} held (provider changed), "
            f"{withdrawn_by_day[day]} withdrawn, {counts[Outcome.REJECTED]} rejected by the API, "
            f"{rejected_by_us} held back by validation, {counts[Outcome.PENDING]} pending."
        )
        if encounters != sum(counts.values()) + rejected_by_us:
            unbalanced.append(day)
    totals = range_totals(figures)
    stats = client.stats
    totals |= {
        "requests": stats.requests,
        "retries": stats.retries,
        "http_status_counts": dict(sorted(stats.statuses.items())),
        "latency_p50_ms": round(stats.percentile(0.5) or 0, 1),
        "latency_p95_ms": round(stats.percentile(0.95) or 0, 1),
    }
    summary = (
        f"{totals.get('sent', 0)} sent ({totals.get('updated', 0)} updates), "
        f"{totals.get('unchanged', 0)} unchanged, {totals.get('held', 0)} held, "
        f"{totals.get('withdrawn', 0)} withdrawn, "
        f"{totals.get('rejected_by_api', 0)} rejected by the API, "
        f"{totals.get('pending', 0)} pending"
    )
    context.log.info(f"claims_import: {summary}")
    if totals.get("pending"):
        raise dg.Failure(
            description=(
                f"claims_import did not deliver every claim: {summary}. Pending claims were not "
                "acknowledged after retries; re-run these partitions to send only them."
            ),
            metadata={k: v for k, v in totals.items() if isinstance(v, int | str)},
        )
    acknowledged, expected = _acknowledged(store, ledger, tenant_id, days)
    unsent = ledger.unsent(tenant_id)
    totals["open_unsent"] = len(unsent)
    totals["open_unsent_claims"] = markdown_table(
        [
            {
                "claim": u.claim_submitter_identifier,
                "service_date": str(u.service_date),
                "last_outcome": u.outcome,
                "attempts": u.attempts,
                "payer": u.payer_name or "",
                "billed": str(u.billed_amount or ""),
            }
            for u in unsent[:MAX_LISTED]
        ]
    )
    yield dg.MaterializeResult(
        asset_key=ASSET,
        metadata=totals,
        check_results=[
            dg.AssetCheckResult(
                check_name=ACKED_CHECK,
                passed=acknowledged == expected,
                metadata={"acknowledged": acknowledged, "expected": expected},
            ),
            dg.AssetCheckResult(
                check_name=CONSERVED_CHECK,
                passed=not unbalanced,
                metadata={"unbalanced_days": ", ".join(unbalanced) or "none"},
            ),
            _held_check(ledger, tenant_id, report.held),
            _filing_check(unsent, gates),
            dg.AssetCheckResult(
                check_name=WITHDRAWN_CHECK,
                passed=not report.withdrawn,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "withdrawn": len(report.withdrawn),
                    "claims": markdown_table(
                        [
                            {
                                "claim": e.claim_submitter_identifier,
                                "service_date": str(e.service_date),
                                "claim_id": e.claim_id,
                                "provider_npi": e.provider_npi,
                                "why": e.note or "",
                            }
                            for e in report.withdrawn[:MAX_LISTED]
                        ]
                    ),
                },
            ),
        ],
    )
    per_day_materializations(context, ASSET, figures)


MAX_LISTED = 200  # claims listed by key in a check's metadata


def _held_check(
    ledger: DeliveryLedger, tenant_id: int, held: list[dict[str, str]]
) -> dg.AssetCheckResult:
    entries = ledger.lookup(tenant_id, [h["claim"] for h in held[:MAX_LISTED]])
    rows = [
        {
            "claim": h["claim"],
            "old_npi": entries[h["claim"]].provider_npi if h["claim"] in entries else "",
            "new_npi": h["new_npi"],
            "claim_id": entries[h["claim"]].claim_id if h["claim"] in entries else "",
        }
        for h in held[:MAX_LISTED]
    ]
    return dg.AssetCheckResult(
        check_name=PROVIDER_CHECK,
        passed=not held,
        metadata={
            "held": len(held),
            "claims": markdown_table(rows),
            "what_to_do": "Void or correct the claim_id at the billing service, then "
            "`claims-pipeline claim release KEY` (docs/claim-lifecycle.md).",
        },
    )


def _filing_check(unsent: list[UnsentClaim], gates: QualityGates) -> dg.AssetCheckResult:
    limits = load_filing_limits(gates.filing_limits_file)
    today = datetime.now(ZoneInfo(daily_partitions.timezone)).date()
    due = deadlines_ahead(unsent, limits, today, gates.filing_warn_days)
    at_risk = sum((d.billed_amount or Decimal(0) for d in due), Decimal(0))
    return dg.AssetCheckResult(
        check_name=FILING_CHECK,
        passed=not due,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "claims_near_deadline": len(due),
            "missed": sum(1 for d in due if d.days_left < 0),
            "dollars_at_risk": float(at_risk),
            "claims": markdown_table(
                [
                    {
                        "claim": d.claim_submitter_identifier,
                        "days_left": d.days_left,
                        "deadline": str(d.deadline),
                        "billed": str(d.billed_amount or ""),
                        "payer": d.payer_name or "",
                        "last_outcome": d.outcome,
                    }
                    for d in due[:MAX_LISTED]
                ]
            ),
        },
    )


def _dry_run(
    context: AssetExecutionContext,
    store: PartitionStore,
    ledger: DeliveryLedger,
    tenant_id: int,
    days: list[str],
    options: DeliveryOptions,
) -> None:
    """Write the payloads a delivery would post; change nothing else."""
    payload_dir, payload_name = DRY_RUN_DIR, f"{context.run.run_id}.jsonl"
    with store.private_output(payload_dir, payload_name) as payload_file:
        counts = Counter(
            result.outcome.value
            for result in deliver(
                outgoing_claims(store, days),
                ledger=ledger,
                tenant_id=tenant_id,
                run_id=context.run.run_id,
                client=None,
                options=options,
                dry_run_sink=lambda body: payload_file.write(body + b"\n"),
            )
        )
    context.log.info(
        f"claims_import: dry run, {counts[Outcome.DRY_RUN]} claims would be sent "
        f"({dict(counts)}); payloads in {store.root}/{payload_dir}/{payload_name}. Nothing "
        "was materialized or recorded."
    )


def _acknowledged(
    store: PartitionStore, ledger: DeliveryLedger, tenant_id: int, days: list[str]
) -> tuple[int, int]:
    """(claims reported delivered whose content the ledger holds, claims reported
    delivered), re-read from the stored delivery results and the ledger."""
    acknowledged = expected = 0
    columns = ["claim_submitter_identifier", "content_hash", "outcome"]
    for day in days:
        for batch in store.read_batches(ASSET, day, columns=columns):
            keys, hashes, outcomes = (column.to_pylist() for column in batch.columns)
            wanted = {
                key: content_hash
                for key, content_hash, outcome in zip(keys, hashes, outcomes, strict=True)
                if outcome in _ACKNOWLEDGED
            }
            known = ledger.lookup(tenant_id, wanted)
            expected += len(wanted)
            acknowledged += sum(
                1
                for key, content_hash in wanted.items()
                if (entry := known.get(key)) and entry.content_hash == content_hash
            )
    return acknowledged, expected
