"""``claims_import``: deliver each day's claims to the import API, idempotently, and record for
every claim its claim_id and whether it was sent, unchanged, rejected by the API or pending."""

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from claims_pipeline.defs.claims import CLAIMS, REJECTIONS, count_encounters
from claims_pipeline.defs.partitions import daily_partitions, partition_days
from claims_pipeline.defs.reporting import (
    ASSET_DEFAULTS,
    column_schema,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.defs.resources import ClaimsApi, ClaimsStorage
from claims_pipeline.defs.tables import RowBuffer
from claims_pipeline.delivery.ledger import DeliveryLedger
from claims_pipeline.delivery.sink import DeliveryOptions, Outcome, OutgoingClaim, deliver
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.storage import DELIVERY_SCHEMA, PartitionStore

ASSET = "claims_import"
ACKED_CHECK = "valid_claims_acknowledged"
CONSERVED_CHECK = "encounters_conserved"
PROGRESS_EVERY_CLAIMS = 10_000


class ImportConfig(dg.Config):
    """Run options of the delivery step."""

    force_resend: bool = False  # re-send every claim (the remote side lost data)
    dry_run: bool = False  # send nothing; write the exact payloads that would be posted


def outgoing_claims(store: PartitionStore, days: list[str]) -> Iterator[OutgoingClaim]:
    """The stored claims of these days, in stored (deterministic) order."""
    columns = ["provider_npi", "claim_submitter_identifier", "content_hash", "payload"]
    for day in days:
        for batch in store.read_batches(CLAIMS, day, columns=columns):
            values = [batch.column(name).to_pylist() for name in columns]
            for npi, key, content_hash, payload in zip(*values, strict=True):
                yield OutgoingClaim(day, npi, key, content_hash, payload)


def _count_rows(store: PartitionStore, asset: str, day: str) -> int:
    return sum(batch.num_rows for batch in store.read_batches(asset, day, columns=["service_date"]))


@dg.asset(
    name=ASSET,
    deps=[CLAIMS],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="claims_api",
    kinds={"api", "parquet"},
    metadata={"dagster/column_schema": column_schema(DELIVERY_SCHEMA)},
    freshness_policy=dg.FreshnessPolicy.time_window(
        warn_window=timedelta(hours=26), fail_window=timedelta(hours=50)
    ),
    description=(
        "Delivery result of each date of service: for every claim its claim_id and outcome "
        "(sent, unchanged, rejected by the API with its reason, pending). Stored under "
        "CLAIMS_DATA_DIR/claims_import/; the delivery ledger is CLAIMS_LEDGER_URL."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            ACKED_CHECK,
            asset=ASSET,
            description="Every valid claim not refused by the API is acknowledged in the ledger "
            "with its current content.",
        ),
        dg.AssetCheckSpec(
            CONSERVED_CHECK,
            asset=ASSET,
            description="encounters = sent + unchanged + rejected (by us or the API) + pending.",
        ),
    ],
    **ASSET_DEFAULTS,
)
def claims_import(
    context: AssetExecutionContext,
    config: ImportConfig,
    claims_api: ClaimsApi,
    claims_storage: ClaimsStorage,
) -> Iterator[Any]:
    store = claims_storage.store()
    ledger = claims_storage.ledger()
    days = [day.isoformat() for day in partition_days(context)]
    outcomes = {day: Counter() for day in days}
    id_ranges: dict[str, tuple[int, int]] = {}
    options = DeliveryOptions(
        batch_size=claims_api.batch_size,
        max_in_flight=claims_api.max_in_flight,
        force_resend=config.force_resend,
        dry_run=config.dry_run,
    )
    client = None
    try:
        with ExitStack() as files:
            results_out = {
                day: RowBuffer(
                    files.enter_context(store.writer(ASSET, day, DELIVERY_SCHEMA)), DELIVERY_SCHEMA
                )
                for day in days
            }
            dry_run_sink = None
            if config.dry_run:
                payload_dir, payload_name = f"{ASSET}_dry_run", f"{context.run.run_id}.jsonl"
                payload_path = f"{store.root}/{payload_dir}/{payload_name}"
                payload_file = files.enter_context(store.private_output(payload_dir, payload_name))
                dry_run_sink = lambda body: payload_file.write(body + b"\n")  # noqa: E731
                context.log.info(f"claims_import: dry run, payloads written to {payload_path}")
            else:
                client = files.enter_context(claims_api.client())
            for done, result in enumerate(
                deliver(
                    outgoing_claims(store, days),
                    ledger=ledger,
                    tenant_id=claims_api.tenant_id,
                    run_id=context.run.run_id,
                    client=client,
                    options=options,
                    dry_run_sink=dry_run_sink,
                ),
                start=1,
            ):
                claim = result.claim
                outcomes[claim.partition_key][result.outcome.value] += 1
                if result.claim_id is not None:
                    low, high = id_ranges.get(claim.partition_key, (result.claim_id,) * 2)
                    id_ranges[claim.partition_key] = (
                        min(low, result.claim_id),
                        max(high, result.claim_id),
                    )
                results_out[claim.partition_key].append(
                    {
                        "service_date": date.fromisoformat(claim.partition_key),
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
    except AuthenticationError as error:
        # Wrong credentials are not transient: fail now, by name, and tell the run-retry
        # daemon (dagster.yaml run_retries) not to try again with the same key.
        context.instance.add_run_tags(
            context.run.run_id, {"dagster/retry_on_asset_or_op_failure": "false"}
        )
        raise dg.Failure(description=str(error), allow_retries=False) from None

    figures: dict[str, dict[str, Any]] = {}
    unbalanced = []
    for day in days:
        counts = outcomes[day]
        encounters = count_encounters(store, day)
        rejected_by_us = _count_rows(store, REJECTIONS, day)
        ids = id_ranges.get(day)
        figures[day] = {
            "dagster/row_count": sum(counts.values()),
            "encounters": encounters,
            "sent": counts[Outcome.SENT],
            "unchanged": counts[Outcome.UNCHANGED],
            "rejected_by_api": counts[Outcome.REJECTED],
            "rejected_by_validation": rejected_by_us,
            "pending": counts[Outcome.PENDING],
            "dry_run": counts[Outcome.DRY_RUN],
            "claim_id_range": f"{ids[0]}-{ids[1]}" if ids else "none",
        }
        figures[day]["summary"] = dg.MetadataValue.md(
            f"**{day}**: {encounters} encounters: {counts[Outcome.SENT]} sent, "
            f"{counts[Outcome.UNCHANGED]} unchanged, {counts[Outcome.REJECTED]} rejected by the "
            f"API, {rejected_by_us} held back by validation, {counts[Outcome.PENDING]} pending."
        )
        if encounters != sum(counts.values()) + rejected_by_us:
            unbalanced.append(day)
    totals = range_totals(figures)
    stats = client.stats if client else None
    if stats:
        totals |= {
            "requests": stats.requests,
            "retries": stats.retries,
            "http_status_counts": dict(sorted(stats.statuses.items())),
            "latency_p50_ms": round(stats.percentile(0.5) or 0, 1),
            "latency_p95_ms": round(stats.percentile(0.95) or 0, 1),
        }
    summary = (
        f"{totals.get('sent', 0)} sent, {totals.get('unchanged', 0)} unchanged, "
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
    acknowledged, expected = _acknowledged(store, ledger, claims_api.tenant_id, days)
    yield dg.MaterializeResult(
        metadata=totals,
        check_results=[
            dg.AssetCheckResult(
                check_name=ACKED_CHECK,
                passed=config.dry_run or acknowledged == expected,
                metadata={"acknowledged": acknowledged, "expected": expected},
            ),
            dg.AssetCheckResult(
                check_name=CONSERVED_CHECK,
                passed=not unbalanced,
                metadata={"unbalanced_days": ", ".join(unbalanced) or "none"},
            ),
        ],
    )
    per_day_materializations(context, ASSET, figures)


def _acknowledged(
    store: PartitionStore, ledger: DeliveryLedger, tenant_id: int, days: list[str]
) -> tuple[int, int]:
    """(claims whose current content the ledger holds, claims that should be there): every
    stored claim except those the API refused."""
    acknowledged = expected = 0
    key_columns = ["provider_npi", "claim_submitter_identifier"]
    for day in days:
        refused = set()
        for batch in store.read_batches(ASSET, day, columns=[*key_columns, "outcome"]):
            npis, keys, results = (column.to_pylist() for column in batch.columns)
            refused.update(
                (npi, key)
                for npi, key, result in zip(npis, keys, results, strict=True)
                if result == Outcome.REJECTED
            )
        for batch in store.read_batches(CLAIMS, day, columns=[*key_columns, "content_hash"]):
            npis, keys, hashes = (column.to_pylist() for column in batch.columns)
            wanted = [
                ((npi, key), content_hash)
                for npi, key, content_hash in zip(npis, keys, hashes, strict=True)
                if (npi, key) not in refused
            ]
            known = ledger.lookup(tenant_id, [identity for identity, _ in wanted])
            expected += len(wanted)
            acknowledged += sum(
                1
                for identity, content_hash in wanted
                if (entry := known.get(identity)) and entry.content_hash == content_hash
            )
    return acknowledged, expected
