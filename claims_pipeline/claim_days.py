"""Claims of a range of dates of service: every extracted encounter becomes a validated,
API-shaped claim or a rejection that says why, stored per day, with a typed report of what
happened. Plain code, called by the ``claims`` / ``claim_rejections`` assets."""

from __future__ import annotations

import functools
import hashlib
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from claims_pipeline.contract import canonical_hash, canonical_json
from claims_pipeline.names import CLAIMS, ENCOUNTERS, REJECTIONS
from claims_pipeline.phi import claim_preview
from claims_pipeline.rules import CODE_SET_RELEASE, AmountLimits, ClaimResult, build_claims
from claims_pipeline.rules.assembly import parse_decimal
from claims_pipeline.storage import (
    CLAIM_SCHEMA,
    REJECTION_SCHEMA,
    PartitionStore,
    RowBuffer,
    python_rows,
)

PREVIEW_ROWS = 5


def stored_encounters(store: PartitionStore, day: str) -> int:
    """Distinct encounters stored in ehr_encounters for one day (reads one column)."""
    chunks = [b.column(0) for b in store.read_batches(ENCOUNTERS, day, columns=["encounter_id"])]
    count: int = pc.count_distinct(pa.chunked_array(chunks, type=pa.string())).as_py()
    return count


def _identity(provider_npi: str, claim_submitter_identifier: str) -> int:
    """A claim's identity as a 64-bit digest: a ranged run over millions of claims keeps ~60
    bytes per claim instead of two strings (a collision, ~1e-7 at 10M claims, would only
    fail the uniqueness check, never drop a claim)."""
    text = f"{provider_npi}\x1f{claim_submitter_identifier}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


#: What a rejection reports of its encounter: payer and rendering NPI of its first row, and its
#: billed total. A plain tuple, which the garbage collector stops tracking: a ranged run holds
#: one per encounter (an object each cost ~1 CPU s of collections at 1M lines).
_Billed = tuple[str | None, str | None, Decimal | None]
_NO_ENCOUNTER = object()


def _encounter_rows(
    store: PartitionStore, day: str, billing: dict[str, _Billed]
) -> Iterator[dict[str, Any]]:
    """The day's lines; ``billing`` collects each encounter's payer, rendering NPI and billed
    total on the way (what a rejection reports, without PHI), cumulative over every row of the
    encounter read so far. An encounter's entry is written when its run of rows ends, so before
    its claim is built (the rows are grouped by reading the next encounter's first row)."""
    current: Any = _NO_ENCOUNTER  # the encounter whose run of rows is being read
    payer = npi = None
    amount: Decimal | None = None
    for batch in store.read_batches(ENCOUNTERS, day):
        for row in python_rows(batch):
            encounter_id = row["encounter_id"]
            if encounter_id != current:
                if current is not _NO_ENCOUNTER:
                    billing[current] = (payer, npi, amount)
                current = encounter_id
                known = billing.get(encounter_id)
                if known is None:
                    # a handful of payers and NPIs: each text held once, not per encounter
                    payer, npi = _shared(row.get("payer_name")), _shared(row.get("provider_npi"))
                    amount = Decimal(0)
                else:  # the encounter's rows were split: carry on from its earlier rows
                    payer, npi, amount = known
            amount = _billed(amount, row.get("line_amount"))
            yield row
    if current is not _NO_ENCOUNTER:
        billing[current] = (payer, npi, amount)


def _billed(amount: Decimal | None, line_amount: str | None) -> Decimal | None:
    """``amount`` plus a line's amount text; unknown (None) from the first text that is not a
    number on, never guessed."""
    if amount is None or line_amount is None:
        return amount
    try:
        return amount + parse_decimal(line_amount)
    except ArithmeticError:
        return None


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


def _shared(text: str | None) -> str | None:
    return sys.intern(text) if type(text) is str else text


class EncounterBilling(NamedTuple):
    """Payer, rendering NPI and billed total of one encounter as the EHR has them."""

    payer_name: str | None
    provider_npi: str | None
    amount: Decimal | None


# An accepted claim's amounts (positive) repeat: each converted once. typed: the wire's int
# 150 and float 150.0 are different texts ("150", "150.0").
@functools.lru_cache(maxsize=16_384, typed=True)
def _decimal_of(number: int | float) -> Decimal:
    return Decimal(str(number))


def claim_row(result: ClaimResult) -> dict[str, Any]:
    """The stored row of an accepted claim (``result.wire`` is set)."""
    wire = result.wire
    if wire is None:
        raise ValueError(f"claim {result.claim_submitter_identifier} was not accepted")
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
        "total_amount": str(sum(_decimal_of(line["monetary_amount"]) for line in lines)),
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


@dataclass
class DayClaims:
    """What one date of service became."""

    encounters: int = 0
    claims: int = 0
    rejected: int = 0
    billed: Decimal = Decimal(0)
    reasons: Counter[str] = field(default_factory=Counter)
    payers: Counter[str] = field(default_factory=Counter)
    preview: list[dict[str, Any]] = field(default_factory=list)  # masked, no PHI

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.encounters if self.encounters else 0.0

    @property
    def conserved(self) -> bool:
        return self.encounters == self.claims + self.rejected


@dataclass
class ClaimsReport:
    """What a range of days became, per day and per payer and provider."""

    days: dict[str, DayClaims] = field(default_factory=dict)
    by_payer: dict[str, BillingMix] = field(default_factory=lambda: defaultdict(BillingMix))
    by_provider: dict[str, BillingMix] = field(default_factory=lambda: defaultdict(BillingMix))
    duplicate_keys: int = 0


def build_claim_days(
    store: PartitionStore, days: list[date], today: date, limits: AmountLimits
) -> ClaimsReport:
    """Build and store the claims and rejections of ``days`` from their extracted lines."""
    report = ClaimsReport()
    seen: set[int] = set()  # claim identities of the whole run, as 8-byte digests
    for day in days:
        key = day.isoformat()
        report.days[key] = _build_day(store, key, today, limits, report, seen)
    return report


def _build_day(
    store: PartitionStore,
    key: str,
    today: date,
    limits: AmountLimits,
    report: ClaimsReport,
    seen: set[int],
) -> DayClaims:
    figures = DayClaims()
    facts = store.facts(ENCOUNTERS, key)  # extraction instant and fingerprint travel on
    with (
        store.writer(CLAIMS, key, CLAIM_SCHEMA, facts) as claims_file,
        store.writer(REJECTIONS, key, REJECTION_SCHEMA, facts) as rejections_file,
    ):
        claims_out = RowBuffer(claims_file, CLAIM_SCHEMA)
        rejections_out = RowBuffer(rejections_file, REJECTION_SCHEMA)
        billing: dict[str, _Billed] = {}
        for result in build_claims(
            _encounter_rows(store, key, billing), today=today, limits=limits
        ):
            if result.accepted:
                row = claim_row(result)
                identity = _identity(row["provider_npi"], row["claim_submitter_identifier"])
                report.duplicate_keys += identity in seen
                seen.add(identity)
                claims_out.append(row)
                amount = Decimal(row["total_amount"])
                figures.billed += amount
                figures.payers[row["payer_name"]] += 1
                report.by_payer[row["payer_name"] or "unknown"].add_claim(amount)
                report.by_provider[row["provider_npi"] or "unknown"].add_claim(amount)
                if len(figures.preview) < PREVIEW_ROWS and result.wire is not None:
                    figures.preview.append(claim_preview(result.wire))
            else:
                known = billing.get(result.encounter_id)
                found = None if known is None else EncounterBilling(*known)
                rejections_out.append(rejection_row(result, found))
                held = found.amount if found else None
                report.by_payer[(found and found.payer_name) or "unknown"].add_rejection(held)
                report.by_provider[(found and found.provider_npi) or "unknown"].add_rejection(held)
                figures.reasons.update({p.code.value for p in result.problems})
        claims_out.flush()
        rejections_out.flush()
    figures.claims, figures.rejected = claims_out.rows, rejections_out.rows
    figures.encounters = stored_encounters(store, key)
    return figures
