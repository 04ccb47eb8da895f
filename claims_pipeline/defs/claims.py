"""``claims`` and ``claim_rejections``: every extracted encounter becomes either a validated,
API-shaped claim or a rejection that says why, and the quality gates that guard posting."""

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext

from claims_pipeline import settings
from claims_pipeline.contract import canonical_hash, canonical_json
from claims_pipeline.defs.encounters import ASSET as ENCOUNTERS
from claims_pipeline.defs.lineage import claims_lineage_metadata, column_schema_for_claims
from claims_pipeline.defs.partitions import daily_partitions, partition_days
from claims_pipeline.defs.reporting import (
    ASSET_DEFAULTS,
    column_schema,
    counts_table,
    markdown_table,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.defs.resources import ClaimsStorage, QualityGates
from claims_pipeline.defs.tables import RowBuffer
from claims_pipeline.phi import claim_preview
from claims_pipeline.rules import CODE_SET_RELEASE, AmountLimits, ClaimResult, build_claims
from claims_pipeline.storage import CLAIM_SCHEMA, REJECTION_SCHEMA, PartitionStore

CLAIMS = "claims"
REJECTIONS = "claim_rejections"
RATE_CHECK = "rejection_rate_within_limit"
UNIQUE_CHECK = "claim_keys_unique"
CONSERVED_CHECK = "encounters_conserved"
PREVIEW_ROWS = 5
#: Days with fewer encounters than this are judged only through the range's overall rate,
#: so that one odd claim on a quiet Sunday does not block a whole night.
MIN_ENCOUNTERS_FOR_DAILY_RATE = 20


def count_encounters(store: PartitionStore, day: str) -> int:
    """Distinct encounters stored in ehr_encounters for one day (reads one column)."""
    chunks = [b.column(0) for b in store.read_batches(ENCOUNTERS, day, columns=["encounter_id"])]
    return pc.count_distinct(pa.chunked_array(chunks, type=pa.string())).as_py()


def _identity(provider_npi: str, claim_submitter_identifier: str) -> int:
    """A claim's identity as a 64-bit digest: a ranged run over millions of claims keeps ~60
    bytes per claim instead of two strings (a collision, ~1e-7 at 10M claims, would only
    fail the uniqueness check, never drop a claim)."""
    text = f"{provider_npi}\x1f{claim_submitter_identifier}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _encounter_rows(
    store: PartitionStore, day: str, billing: dict[str, "EncounterBilling"]
) -> Iterator[dict[str, Any]]:
    """The day's lines; ``billing`` collects each encounter's payer, rendering NPI and billed
    total on the way (what a rejection reports, without PHI)."""
    for batch in store.read_batches(ENCOUNTERS, day):
        for row in batch.to_pylist():
            found = billing.get(row["encounter_id"])
            if found is None:
                found = billing[row["encounter_id"]] = EncounterBilling(
                    row.get("payer_name"), row.get("provider_npi")
                )
            found.add(row.get("line_amount"))
            yield row


class BillingMix:
    """Per payer or provider: claims and dollars billed, rejections and dollars held back."""

    __slots__ = ("claims", "billed", "rejected", "held_back")

    def __init__(self) -> None:
        self.claims = self.rejected = 0
        self.billed = self.held_back = Decimal(0)

    def add_claim(self, amount: Decimal) -> None:
        self.claims += 1
        self.billed += amount

    def add_rejection(self, amount: Decimal | None) -> None:
        self.rejected += 1
        self.held_back += amount or Decimal(0)


def mix_table(mix: dict[str, BillingMix], name: str, limit: int = 50) -> dg.MetadataValue:
    """The largest ``limit`` payers or providers by encounters, as a Markdown table."""
    ranked = sorted(mix.items(), key=lambda item: -(item[1].claims + item[1].rejected))
    return markdown_table(
        [
            {
                name: key,
                "claims": m.claims,
                "billed_usd": f"{m.billed:.2f}",
                "rejected": m.rejected,
                "rejection_rate": f"{m.rejected / (m.claims + m.rejected):.1%}",
                "held_back_usd": f"{m.held_back:.2f}",
            }
            for key, m in ranked[:limit]
        ]
    )


class EncounterBilling:
    """Payer, rendering NPI and billed total of one encounter as the EHR has them."""

    __slots__ = ("payer_name", "provider_npi", "amount")

    def __init__(self, payer_name: str | None, provider_npi: str | None):
        self.payer_name = payer_name
        self.provider_npi = provider_npi
        self.amount: Decimal | None = Decimal(0)

    def add(self, line_amount: str | None) -> None:
        if self.amount is None or line_amount is None:
            return
        try:
            self.amount += Decimal(line_amount)
        except ArithmeticError:
            self.amount = None  # not a number: unknown, never guessed


def claim_row(result: ClaimResult) -> dict[str, Any]:
    wire = result.wire
    payload = canonical_json(wire)
    lines = wire["charge_lines"]
    return {
        "service_date": result.service_date,
        "encounter_id": result.encounter_id,
        "claim_submitter_identifier": result.claim_submitter_identifier,
        "provider_npi": wire["provider_npi"],
        "visit_number": wire["visit_number"],
        "payer_name": wire["payer_name"],
        "line_count": len(lines),
        "total_amount": str(sum(Decimal(str(line["monetary_amount"])) for line in lines)),
        "icd_codes": ",".join(wire["icd_codes"]),
        "hcpcs_codes": ",".join(line["hcpcs_code"] for line in lines),
        "content_hash": canonical_hash(payload),
        "payload": payload,
    }


def rejection_row(result: ClaimResult, billing: EncounterBilling | None = None) -> dict[str, Any]:
    problems = result.problems
    return {
        "service_date": result.service_date,
        "encounter_id": result.encounter_id,
        "claim_submitter_identifier": result.claim_submitter_identifier,
        "payer_name": billing.payer_name if billing else None,
        "provider_npi": billing.provider_npi if billing else None,
        "billed_amount": None if billing is None or billing.amount is None else str(billing.amount),
        "reason_codes": ",".join(dict.fromkeys(p.code.value for p in problems)),
        "fields": ",".join(dict.fromkeys(p.field for p in problems)),
        "messages": " | ".join(p.message for p in problems),
        "code_set": CODE_SET_RELEASE,
    }


@dg.multi_asset(
    name="build_claims",
    specs=[
        dg.AssetSpec(
            CLAIMS,
            deps=[ENCOUNTERS],
            kinds={"parquet"},
            metadata={"dagster/column_schema": column_schema_for_claims()},
            description=(
                "API-shaped, validated claims of each date of service: exactly what is posted "
                "(column `payload`), with key, payer, codes, amount and content hash. Contains "
                "PHI: stored under CLAIMS_DATA_DIR/claims/."
            ),
            **ASSET_DEFAULTS,
        ),
        dg.AssetSpec(
            REJECTIONS,
            deps=[ENCOUNTERS],
            kinds={"parquet"},
            metadata={"dagster/column_schema": column_schema(REJECTION_SCHEMA)},
            description=(
                "Encounters that could not become a valid claim: claim key, reason codes, fields "
                "and messages (no patient identifiers). Stored under "
                "CLAIMS_DATA_DIR/claim_rejections/."
            ),
            **ASSET_DEFAULTS,
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            RATE_CHECK,
            asset=CLAIMS,
            blocking=True,
            description="Posting stops when the rejection rate exceeds CLAIMS_MAX_REJECTION_RATE.",
        ),
        dg.AssetCheckSpec(
            UNIQUE_CHECK,
            asset=CLAIMS,
            blocking=True,
            description="No two claims share provider_npi + claim_submitter_identifier.",
        ),
        dg.AssetCheckSpec(
            CONSERVED_CHECK,
            asset=CLAIMS,
            description="Every extracted encounter is a claim or a rejection.",
        ),
    ],
)
def build_claims_assets(
    context: AssetExecutionContext, claims_storage: ClaimsStorage, quality_gates: QualityGates
) -> Iterator[Any]:
    store = claims_storage.store()
    today = datetime.now(ZoneInfo(settings.require(settings.CLAIMS_TIMEZONE))).date()
    limits = AmountLimits(
        max_line=settings.get_amount(settings.CLAIMS_MAX_LINE_AMOUNT),
        max_claim=settings.get_amount(settings.CLAIMS_MAX_CLAIM_AMOUNT),
    )
    seen: set[int] = set()  # claim identities of the whole run, as 8-byte digests
    duplicate_keys = 0
    claim_figures: dict[str, dict[str, Any]] = {}
    rejection_figures: dict[str, dict[str, Any]] = {}
    all_reasons: Counter = Counter()
    all_payers: Counter = Counter()
    by_payer: dict[str, BillingMix] = defaultdict(BillingMix)
    by_provider: dict[str, BillingMix] = defaultdict(BillingMix)
    unbalanced: list[str] = []
    for day in partition_days(context):
        key = day.isoformat()
        reasons: Counter = Counter()
        payers: Counter = Counter()
        dollars = Decimal(0)
        preview: list[dict[str, Any]] = []
        facts = store.facts(ENCOUNTERS, key)  # extraction instant and fingerprint travel on
        with (
            store.writer(CLAIMS, key, CLAIM_SCHEMA, facts) as claims_file,
            store.writer(REJECTIONS, key, REJECTION_SCHEMA, facts) as rejections_file,
        ):
            claims_out = RowBuffer(claims_file, CLAIM_SCHEMA)
            rejections_out = RowBuffer(rejections_file, REJECTION_SCHEMA)
            billing: dict[str, EncounterBilling] = {}
            lines = _encounter_rows(store, key, billing)
            for result in build_claims(lines, today=today, limits=limits):
                if result.accepted:
                    row = claim_row(result)
                    identity = _identity(row["provider_npi"], row["claim_submitter_identifier"])
                    duplicate_keys += identity in seen
                    seen.add(identity)
                    claims_out.append(row)
                    dollars += Decimal(row["total_amount"])
                    payers[row["payer_name"]] += 1
                    amount = Decimal(row["total_amount"])
                    by_payer[row["payer_name"] or "unknown"].add_claim(amount)
                    by_provider[row["provider_npi"] or "unknown"].add_claim(amount)
                    if len(preview) < PREVIEW_ROWS:
                        preview.append(claim_preview(result.wire))
                else:
                    found = billing.get(result.encounter_id)
                    rejections_out.append(rejection_row(result, found))
                    held = found.amount if found else None
                    by_payer[(found and found.payer_name) or "unknown"].add_rejection(held)
                    by_provider[(found and found.provider_npi) or "unknown"].add_rejection(held)
                    reasons.update({p.code.value for p in result.problems})
            claims_out.flush()
            rejections_out.flush()
        encounters = count_encounters(store, key)
        if encounters != claims_out.rows + rejections_out.rows:
            unbalanced.append(key)
        rate = rejections_out.rows / encounters if encounters else 0.0
        all_reasons.update(reasons)
        all_payers.update(payers)
        claim_figures[key] = {
            "dagster/row_count": claims_out.rows,
            "claims": claims_out.rows,
            "encounters": encounters,
            "rejected": rejections_out.rows,
            "rejection_rate": round(rate, 4),
            "billed_amount_usd": float(dollars),
            "summary": dg.MetadataValue.md(
                f"**{key}**: {encounters} encounters, {claims_out.rows} valid claims "
                f"(${dollars:,.2f} billed), {rejections_out.rows} held back "
                f"({rate:.1%})."
            ),
            "payer_mix": counts_table(payers, "payer"),
            "preview": markdown_table(preview),
        }
        rejection_figures[key] = {
            "dagster/row_count": rejections_out.rows,
            "rejected": rejections_out.rows,
            "encounters": encounters,
            "rejection_rate": round(rate, 4),
            "reasons": counts_table(reasons, "reason_code"),
            "code_set": CODE_SET_RELEASE,
        }
    totals = range_totals(claim_figures)
    overall_rate = (
        totals.get("rejected", 0) / totals["encounters"] if totals.get("encounters") else 0
    )
    limit = quality_gates.max_rejection_rate
    days_over = [
        key
        for key, figures in claim_figures.items()
        if figures["encounters"] >= MIN_ENCOUNTERS_FOR_DAILY_RATE
        and figures["rejection_rate"] > limit
    ]
    context.log.info(
        f"claims: {totals.get('claims', 0)} valid, {totals.get('rejected', 0)} rejected of "
        f"{totals.get('encounters', 0)} encounters; reasons: {dict(all_reasons.most_common())}"
    )
    yield dg.MaterializeResult(
        asset_key=CLAIMS,
        metadata=totals
        | claims_lineage_metadata(settings.require(settings.EHR_SCHEMA))
        | {"payer_mix": counts_table(all_payers, "payer")}
        | {"by_payer": mix_table(by_payer, "payer"), "by_provider": mix_table(by_provider, "npi")}
        | {"billed_amount_usd": round(totals.get("billed_amount_usd", 0.0), 2)},
    )
    yield dg.MaterializeResult(
        asset_key=REJECTIONS,
        metadata=range_totals(rejection_figures)
        | {
            "rejection_rate": round(overall_rate, 4),
            "reasons": counts_table(all_reasons, "reason_code"),
            "by_payer": mix_table(by_payer, "payer"),
            "by_provider": mix_table(by_provider, "npi"),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=CLAIMS,
        check_name=RATE_CHECK,
        passed=overall_rate <= limit and not days_over,
        metadata={
            "rejection_rate": round(overall_rate, 4),
            "max_rejection_rate": limit,
            "days_over_limit": ", ".join(days_over) or "none",
        },
        description=None
        if overall_rate <= limit and not days_over
        else (
            f"Rejection rate {overall_rate:.1%} (limit {limit:.0%}; days over: "
            f"{', '.join(days_over) or 'none'}): posting is blocked. Check the source mapping "
            "and claim_rejections' reasons, or raise CLAIMS_MAX_REJECTION_RATE."
        ),
    )
    yield dg.AssetCheckResult(
        asset_key=CLAIMS,
        check_name=UNIQUE_CHECK,
        passed=duplicate_keys == 0,
        metadata={"duplicate_keys": duplicate_keys},
    )
    yield dg.AssetCheckResult(
        asset_key=CLAIMS,
        check_name=CONSERVED_CHECK,
        passed=not unbalanced,
        metadata={"unbalanced_days": ", ".join(unbalanced) or "none"},
    )
    per_day_materializations(context, CLAIMS, claim_figures)
    per_day_materializations(context, REJECTIONS, rejection_figures)
