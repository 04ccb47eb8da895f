"""How the assets report: one MaterializeResult for the run's range, then one
AssetMaterialization per date of service carrying that day's own figures, so each
partition's latest materialization tells the truth even in a ranged (single-run) backfill."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa

if TYPE_CHECKING:
    from claims_pipeline.claim_days import BillingMix

OWNERS = ["team:revenue-cycle-data"]


def per_day_materializations(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    figures_by_day: Mapping[str, Mapping[str, Any]],
) -> None:
    """Log one materialization per partition key with that day's figures."""
    if len(figures_by_day) < 2:
        return  # a single-partition run's MaterializeResult already is that day's truth
    for day, figures in figures_by_day.items():
        context.log_event(
            dg.AssetMaterialization(asset_key=asset_key, partition=day, metadata=dict(figures))
        )


def range_totals(figures_by_day: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum of the counts and amounts over days (not rates), plus the range covered."""
    totals: dict[str, Any] = {}
    for figures in figures_by_day.values():
        for name, value in figures.items():
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and not name.endswith("_rate")
            ):
                totals[name] = totals.get(name, 0) + value
    days = sorted(figures_by_day)
    if days:
        totals["partitions"] = f"{days[0]}...{days[-1]}" if len(days) > 1 else days[0]
    return totals


def column_schema(
    schema: pa.Schema, descriptions: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """``dagster/column_schema`` of a stored Parquet table."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=descriptions.get(field.name),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema
        ]
    )


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    """A small Markdown table (previews, reason counts); ``none`` when empty."""
    if not rows:
        return dg.MetadataValue.md("none")
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row.get(name, "")) for name in header) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counter: Counter[str], name: str) -> dg.MetadataValue:
    return markdown_table([{name: key, "count": count} for key, count in counter.most_common()])


def mix_table(mix: Mapping[str, BillingMix], name: str, limit: int = 50) -> dg.MetadataValue:
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
