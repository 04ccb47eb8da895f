"""``claims_import``: deliver each day's claims to the import API, idempotently, and record for
every claim its claim_id and outcome (claims_pipeline/delivery/days.py does the work); the
checks a person reads after the run (docs/claim-lifecycle.md)."""

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import dagster as dg

from claims_pipeline.claim_days import stored_encounters
from claims_pipeline.defs.claims_sync.partitions import partition_days
from claims_pipeline.defs.resources import (
    ClaimsApi,
    ClaimsStorage,
    QualityGates,
    practice_resource,
    required_keys,
)
from claims_pipeline.delivery.client import ApiEndpointError, ClientStats
from claims_pipeline.delivery.days import (
    RunReport,
    acknowledged,
    count_rows,
    deliver_days,
    dry_run_days,
)
from claims_pipeline.delivery.filing import deadlines_ahead, load_filing_limits
from claims_pipeline.delivery.ledger import DeliveryLedger, UnsentClaim
from claims_pipeline.delivery.sink import DeliveryOptions, Outcome
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.names import (
    ACKED_CHECK,
    CLAIMS,
    CONSERVED_CHECK,
    FILING_CHECK,
    IMPORT,
    PROVIDER_CHECK,
    REJECTIONS,
    WITHDRAWN_CHECK,
)
from claims_pipeline.practices import Practice
from claims_pipeline.reporting import (
    OWNERS,
    column_schema,
    markdown_table,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.storage import DELIVERY_SCHEMA, PartitionStore


class ImportConfig(dg.Config):
    """Run options of the delivery step."""

    force_resend: bool = False  # re-send every claim (the remote side lost data)
    dry_run: bool = False  # send nothing; write the exact payloads that would be posted


def claims_import_asset(
    practice: Practice, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    key = dg.AssetKey(practice.key_path(IMPORT))

    # A multi-asset that may be subset, so a dry run can end without materializing or evaluating
    # its checks (an @asset's check outputs are required).
    @dg.multi_asset(
        name=practice.named(IMPORT),
        specs=[
            dg.AssetSpec(
                key,
                deps=[dg.AssetKey(practice.key_path(CLAIMS))],
                partitions_def=partitions,
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
                owners=OWNERS,
                group_name=practice.group,
            )
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=practice.pool,
        can_subset=True,
        check_specs=[
            dg.AssetCheckSpec(
                ACKED_CHECK,
                asset=key,
                description="Every claim reported delivered is in the ledger with its content.",
            ),
            dg.AssetCheckSpec(
                CONSERVED_CHECK,
                asset=key,
                description="encounters = claims with a delivery outcome + rejected by validation.",
            ),
            dg.AssetCheckSpec(
                PROVIDER_CHECK,
                asset=key,
                description="No claim is held because its rendering provider (NPI) changed after "
                "delivery. A held claim needs a person: see docs/claim-lifecycle.md.",
            ),
            dg.AssetCheckSpec(
                WITHDRAWN_CHECK,
                asset=key,
                description="The service holds no claim of these days that the EHR voided, "
                "deleted, stopped billing or moved out of the run.",
            ),
            dg.AssetCheckSpec(
                FILING_CHECK,
                asset=key,
                description="No claim refused by the service or pending (of any day) is within "
                "CLAIMS_FILING_WARN_DAYS of its payer's timely-filing deadline, or past it.",
            ),
        ],
        required_resource_keys=required_keys(practice, ClaimsApi, ClaimsStorage, QualityGates),
    )
    def claims_import(context: dg.AssetExecutionContext, config: ImportConfig) -> Iterator[Any]:
        claims_api = practice_resource(context, practice, ClaimsApi)
        claims_storage = practice_resource(context, practice, ClaimsStorage)
        quality_gates = practice_resource(context, practice, QualityGates)
        store = claims_storage.store()
        days = [day.isoformat() for day in partition_days(context)]
        options = DeliveryOptions(
            batch_size=claims_api.batch_size,
            max_in_flight=claims_api.max_in_flight,
            force_resend=config.force_resend,
            dry_run=config.dry_run,
        )
        with claims_storage.open_ledger() as ledger:
            if config.dry_run:
                _dry_run(context, store, ledger, claims_api.tenant_id, days, options)
                return
            report, stats = _deliver(context, store, ledger, claims_api, days, options)
            yield from _report(
                context, key, practice, store, ledger, quality_gates, days, report, stats
            )

    return claims_import


def _dry_run(
    context: dg.AssetExecutionContext,
    store: PartitionStore,
    ledger: DeliveryLedger,
    tenant_id: int,
    days: list[str],
    options: DeliveryOptions,
) -> None:
    counts, path = dry_run_days(store, ledger, tenant_id, days, options, context.run.run_id)
    context.log.info(
        f"{IMPORT}: dry run, {counts[Outcome.DRY_RUN]} claims would be sent "
        f"({dict(counts)}); payloads in {path}. Nothing was materialized or recorded."
    )


def _deliver(
    context: dg.AssetExecutionContext,
    store: PartitionStore,
    ledger: DeliveryLedger,
    claims_api: ClaimsApi,
    days: list[str],
    options: DeliveryOptions,
) -> tuple[RunReport, ClientStats]:
    """Deliver under the tenant's lock; a failure that no retry can fix fails the run now."""
    run_id = context.run.run_id
    try:
        with (
            ledger.lock(
                claims_api.tenant_id,
                run_id,
                on_wait=lambda holder: context.log.info(
                    f"{IMPORT}: waiting for run {holder} to finish delivering"
                ),
            ) as lock,
            claims_api.client() as client,
        ):
            report = deliver_days(
                store, ledger, client, days, options, run_id, lock.check, context.log.info
            )
            return report, client.stats
    except (AuthenticationError, ApiEndpointError) as error:
        # Not transient: tell the run-retry daemon (dagster.yaml run_retries) not to try
        # again with the same settings.
        context.instance.add_run_tags(run_id, {"dagster/retry_on_asset_or_op_failure": "false"})
        raise dg.Failure(description=str(error), allow_retries=False) from None


def _report(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    practice: Practice,
    store: PartitionStore,
    ledger: DeliveryLedger,
    gates: QualityGates,
    days: list[str],
    report: RunReport,
    stats: ClientStats,
) -> Iterator[Any]:
    tenant_id = report.tenant_id
    figures: dict[str, dict[str, Any]] = {}
    unbalanced = []
    withdrawn_by_day = Counter(
        e.service_date.isoformat() for e in report.withdrawn if e.service_date
    )
    for day in days:
        counts = report.outcomes[day]
        encounters = stored_encounters(store, day)
        rejected_by_us = count_rows(store, REJECTIONS, day)
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
    acked, expected = acknowledged(store, ledger, tenant_id, days)
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
        asset_key=key,
        metadata=totals,
        check_results=[
            dg.AssetCheckResult(
                check_name=ACKED_CHECK,
                passed=acked == expected,
                metadata={"acknowledged": acked, "expected": expected},
            ),
            dg.AssetCheckResult(
                check_name=CONSERVED_CHECK,
                passed=not unbalanced,
                metadata={"unbalanced_days": ", ".join(unbalanced) or "none"},
            ),
            _held_check(ledger, tenant_id, report.held),
            _filing_check(unsent, gates, practice),
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
    per_day_materializations(context, key, figures)


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


def _filing_check(
    unsent: list[UnsentClaim], gates: QualityGates, practice: Practice
) -> dg.AssetCheckResult:
    limits = load_filing_limits(gates.filing_limits_file)
    today = practice.today()
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
