"""``claims`` and ``claim_rejections``: every extracted encounter becomes either a validated,
API-shaped claim or a rejection that says why (claims_pipeline/claim_days.py does the work), and
the quality gates that guard posting."""

from collections import Counter
from collections.abc import Iterator
from typing import Any

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.claim_days import ClaimsReport, build_claim_days
from claims_pipeline.column_lineage import claims_lineage_metadata, column_schema_for_claims
from claims_pipeline.defs.claims_sync.partitions import partition_days
from claims_pipeline.defs.resources import (
    ClaimsStorage,
    EhrDatabase,
    QualityGates,
    practice_resource,
    required_keys,
)
from claims_pipeline.names import (
    CLAIMS,
    CONSERVED_CHECK,
    ENCOUNTERS,
    RATE_CHECK,
    REJECTIONS,
    UNIQUE_CHECK,
)
from claims_pipeline.practices import Practice
from claims_pipeline.reporting import (
    OWNERS,
    column_schema,
    counts_table,
    markdown_table,
    mix_table,
    per_day_materializations,
    range_totals,
)
from claims_pipeline.rules import CODE_SET_RELEASE, AmountLimits
from claims_pipeline.storage import REJECTION_SCHEMA

#: Days with fewer encounters than this are judged only through the range's overall rate,
#: so that one odd claim on a quiet Sunday does not block a whole night.
MIN_ENCOUNTERS_FOR_DAILY_RATE = 20


def claims_assets(practice: Practice, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    claims_key, rejections_key, encounters_key = (
        dg.AssetKey(practice.key_path(name)) for name in (CLAIMS, REJECTIONS, ENCOUNTERS)
    )

    @dg.multi_asset(
        name=practice.named("validate_claims"),
        specs=[
            dg.AssetSpec(
                claims_key,
                deps=[encounters_key],
                kinds={"parquet"},
                metadata={"dagster/column_schema": column_schema_for_claims()},
                description=(
                    "API-shaped, validated claims of each date of service: exactly what is posted "
                    "(column `payload`), with key, payer, codes, amount and content hash. Contains "
                    "PHI: stored under CLAIMS_DATA_DIR/claims/."
                ),
                owners=OWNERS,
                group_name=practice.group,
            ),
            dg.AssetSpec(
                rejections_key,
                deps=[encounters_key],
                kinds={"parquet"},
                metadata={"dagster/column_schema": column_schema(REJECTION_SCHEMA)},
                description=(
                    "Encounters that could not become a valid claim: claim key, payer, NPI, billed "
                    "amount, reason codes, fields and messages (no patient identifiers). Stored "
                    "under CLAIMS_DATA_DIR/claim_rejections/."
                ),
                owners=OWNERS,
                group_name=practice.group,
            ),
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(
                RATE_CHECK,
                asset=claims_key,
                blocking=True,
                description="Posting stops when the rejection rate exceeds "
                "CLAIMS_MAX_REJECTION_RATE.",
            ),
            dg.AssetCheckSpec(
                UNIQUE_CHECK,
                asset=claims_key,
                blocking=True,
                description="No two claims share provider_npi + claim_submitter_identifier.",
            ),
            dg.AssetCheckSpec(
                CONSERVED_CHECK,
                asset=claims_key,
                description="Every extracted encounter is a claim or a rejection.",
            ),
        ],
        required_resource_keys=required_keys(practice, EhrDatabase, ClaimsStorage, QualityGates),
    )
    def validate_claims(context: dg.AssetExecutionContext) -> Iterator[Any]:
        ehr = practice_resource(context, practice, EhrDatabase)
        claims_storage = practice_resource(context, practice, ClaimsStorage)
        quality_gates = practice_resource(context, practice, QualityGates)
        today = practice.today()
        limits = AmountLimits(
            max_line=settings.get_amount(settings.CLAIMS_MAX_LINE_AMOUNT),
            max_claim=settings.get_amount(settings.CLAIMS_MAX_CLAIM_AMOUNT),
        )
        report = build_claim_days(
            claims_storage.store(),
            partition_days(context),
            today,
            limits,
            processes=settings.build_processes(),
        )
        claim_figures, rejection_figures = _day_figures(report)
        totals = range_totals(claim_figures)
        reasons = sum((d.reasons for d in report.days.values()), Counter[str]())
        context.log.info(
            f"claims: {totals.get('claims', 0)} valid, {totals.get('rejected', 0)} rejected of "
            f"{totals.get('encounters', 0)} encounters; reasons: {dict(reasons.most_common())}; "
            f"built by {report.processes} process(es)"
        )
        mixes = {
            "by_payer": mix_table(report.by_payer, "payer"),
            "by_provider": mix_table(report.by_provider, "npi"),
        }
        payers = sum((d.payers for d in report.days.values()), Counter[str]())
        yield dg.MaterializeResult(
            asset_key=claims_key,
            metadata=totals
            | claims_lineage_metadata(ehr.ehr_schema)
            | {"payer_mix": counts_table(payers, "payer"), **mixes}
            | {"billed_amount_usd": round(totals.get("billed_amount_usd", 0.0), 2)},
        )
        rate = totals.get("rejected", 0) / totals["encounters"] if totals.get("encounters") else 0
        yield dg.MaterializeResult(
            asset_key=rejections_key,
            metadata=range_totals(rejection_figures)
            | {"rejection_rate": round(rate, 4), "reasons": counts_table(reasons, "reason_code")}
            | mixes,
        )
        yield from _checks(claims_key, report, rate, quality_gates.max_rejection_rate)
        per_day_materializations(context, claims_key, claim_figures)
        per_day_materializations(context, rejections_key, rejection_figures)

    return validate_claims


def _day_figures(
    report: ClaimsReport,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each day's materialization metadata of ``claims`` and of ``claim_rejections``."""
    claims: dict[str, dict[str, Any]] = {}
    rejections: dict[str, dict[str, Any]] = {}
    for key, day in report.days.items():
        rate = day.rejection_rate
        claims[key] = {
            "dagster/row_count": day.claims,
            "claims": day.claims,
            "encounters": day.encounters,
            "rejected": day.rejected,
            "rejection_rate": round(rate, 4),
            "billed_amount_usd": float(day.billed),
            "summary": dg.MetadataValue.md(
                f"**{key}**: {day.encounters} encounters, {day.claims} valid claims "
                f"(${day.billed:,.2f} billed), {day.rejected} held back ({rate:.1%})."
            ),
            "payer_mix": counts_table(day.payers, "payer"),
            "preview": markdown_table(day.preview),
        }
        rejections[key] = {
            "dagster/row_count": day.rejected,
            "rejected": day.rejected,
            "encounters": day.encounters,
            "rejection_rate": round(rate, 4),
            "reasons": counts_table(day.reasons, "reason_code"),
            "code_set": CODE_SET_RELEASE,
        }
    return claims, rejections


def _checks(
    claims_key: dg.AssetKey, report: ClaimsReport, rate: float, limit: float
) -> Iterator[dg.AssetCheckResult]:
    days_over = [
        key
        for key, day in report.days.items()
        if day.encounters >= MIN_ENCOUNTERS_FOR_DAILY_RATE and day.rejection_rate > limit
    ]
    passed = rate <= limit and not days_over
    yield dg.AssetCheckResult(
        asset_key=claims_key,
        check_name=RATE_CHECK,
        passed=passed,
        metadata={
            "rejection_rate": round(rate, 4),
            "max_rejection_rate": limit,
            "days_over_limit": ", ".join(days_over) or "none",
        },
        description=None
        if passed
        else (
            f"Rejection rate {rate:.1%} (limit {limit:.0%}; days over: "
            f"{', '.join(days_over) or 'none'}): posting is blocked. Check the source mapping "
            "and claim_rejections' reasons, or raise CLAIMS_MAX_REJECTION_RATE."
        ),
    )
    yield dg.AssetCheckResult(
        asset_key=claims_key,
        check_name=UNIQUE_CHECK,
        passed=report.duplicate_keys == 0,
        metadata={"duplicate_keys": report.duplicate_keys},
    )
    unbalanced = [key for key, day in report.days.items() if not day.conserved]
    yield dg.AssetCheckResult(
        asset_key=claims_key,
        check_name=CONSERVED_CHECK,
        passed=not unbalanced,
        metadata={"unbalanced_days": ", ".join(unbalanced) or "none"},
    )
