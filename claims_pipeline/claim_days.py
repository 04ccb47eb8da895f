"""Claims of a range of dates of service: every extracted encounter becomes a validated,
API-shaped claim or a rejection that says why, stored per day, with a typed report of what
happened. Plain code, called by the ``claims`` / ``claim_rejections`` assets."""

from __future__ import annotations

import functools
import hashlib
import math
import sys
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import islice
from typing import Any, NamedTuple, Protocol

import numpy as np
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
#: billed total. A plain tuple, which the garbage collector stops tracking.
_Billed = tuple[str | None, str | None, Decimal | None]
_NO_ENCOUNTER = object()


class _DayBilling:
    """Each encounter's payer, rendering NPI and billed total, folded from the day's rows as
    they stream past (cumulative over every row of the encounter read so far). An encounter's
    entry is written when its run of rows ends, so before its claim is built (the rows are
    grouped by reading the next encounter's first row), and :meth:`reported` hands it out.

    Rows grouped by encounter (what the adapters give) need only the encounters not yet
    reported, and a ``hash()`` of every encounter id read: a day of 330,000 encounters keeps
    ~20 MiB instead of ~80 MiB. An encounter whose rows come back after another's (a split
    encounter: its second run is a duplicate whose billed total includes the first run's) makes
    the day keep every encounter's entry from then on, rebuilt from the rows read so far; a
    hash collision only does the same."""

    def __init__(self, keep_all: bool = False) -> None:
        self.entries: dict[Any, _Billed] = {}
        self.seen: set[int] | None = None if keep_all else set()
        self.current: Any = _NO_ENCOUNTER  # the encounter whose run of rows is being read
        self.payer: str | None = None
        self.npi: str | None = None
        self.amount: Decimal | None = None

    def add(self, row: dict[str, Any]) -> bool:
        """Fold one row in; False (and nothing folded) when its encounter may have been read
        before while only unreported encounters are kept: rebuild with :meth:`keep_all`."""
        encounter_id = row["encounter_id"]
        if encounter_id != self.current:
            if self.seen is not None:
                if hash(encounter_id) in self.seen:
                    return False
                self.seen.add(hash(encounter_id))
            self.close()
            self.current = encounter_id
            known = None if self.seen is not None else self.entries.get(encounter_id)
            if known is None:
                # a handful of payers and NPIs: each text held once, not per encounter
                self.payer, self.npi = (
                    _shared(row.get("payer_name")),
                    _shared(row.get("provider_npi")),
                )
                self.amount = Decimal(0)
            else:  # the encounter's rows were split: carry on from its earlier rows
                self.payer, self.npi, self.amount = known
        self.amount = _billed(self.amount, row.get("line_amount"))
        return True

    def close(self) -> None:
        """The run of rows being read has ended: write its encounter's entry."""
        if self.current is not _NO_ENCOUNTER:
            self.entries[self.current] = (self.payer, self.npi, self.amount)

    def keep_all(self, rows_before: Iterable[dict[str, Any]]) -> None:
        """Keep every encounter's entry from now on, rebuilt from the rows read before."""
        self.__init__(keep_all=True)  # type: ignore[misc]
        for row in rows_before:
            self.add(row)

    def reported(self, encounter_id: Any) -> EncounterBilling | None:
        """The entry of an encounter whose claim or rejection is being reported (forgotten
        unless the day keeps every entry)."""
        known = (
            self.entries.get(encounter_id)
            if self.seen is None
            else self.entries.pop(encounter_id, None)
        )
        return None if known is None else EncounterBilling(*known)


@dataclass(frozen=True)
class DayPart:
    """Rows ``start`` up to ``stop`` of one day's stored lines (``stop`` None: to the end)."""

    day: str
    start: int = 0
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None


# Rows read, and claims written, at a time: smaller blocks cost no measurable CPU and keep
# ≈70 MiB less in each process that builds claims (1,000,000 lines: peak 407 -> 338 MiB).
_READ_ROWS = 5_000
_WRITE_ROWS = 2_000


def _day_rows(store: PartitionStore, part: DayPart) -> Iterator[dict[str, Any]]:
    left = None if part.stop is None else part.stop - part.start
    batches = store.read_batches(ENCOUNTERS, part.day, _READ_ROWS, from_row=part.start)
    for batch in batches:
        if left is not None:
            if left <= 0:
                return
            batch, left = batch.slice(0, left), left - batch.num_rows
        yield from python_rows(batch)


def _encounter_rows(
    store: PartitionStore, part: DayPart, billing: _DayBilling
) -> Iterator[dict[str, Any]]:
    """The part's lines, folded into ``billing`` on the way (what a rejection reports, without
    PHI)."""
    for read, row in enumerate(_day_rows(store, part)):
        if not billing.add(row):
            billing.keep_all(islice(_day_rows(store, part), read))
            billing.add(row)
        yield row
    billing.close()


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

    def add(self, other: BillingMix) -> None:
        self.claims += other.claims
        self.billed += other.billed
        self.rejected += other.rejected
        self.held_back += other.held_back


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
    #: processes that built the claims: 1, or the worker processes
    processes: int = 1


#: Runs of fewer lines are built in the step's own process: a worker process costs about
#: 0.6 CPU s to start, more than the few seconds such a run takes alone.
PARALLEL_MIN_LINES = 100_000
#: The most lines a worker builds at a time: its memory grows with the lines of a part (the
#: digests of its keys and encounters), so a large day is cut into parts of at most this many.
PART_MAX_LINES = 250_000


def build_claim_days(
    store: PartitionStore, days: list[date], today: date, limits: AmountLimits, processes: int = 1
) -> ClaimsReport:
    """Build and store the claims and rejections of ``days`` from their extracted lines.

    With ``processes`` > 1 and a run of at least :data:`PARALLEL_MIN_LINES` lines, that many
    worker processes build the days (:mod:`claims_pipeline.claim_workers`), a day larger than
    its share cut into parts at encounter boundaries; the files and the report are those this
    process would build alone (a day whose parts share a claim key or an encounter, which the
    duplicate check must see in order, is built again here)."""
    report = ClaimsReport()
    seen: set[int] = set()  # claim identities of the whole run, as 8-byte digests
    plan = plan_parts(store, days, processes)
    if plan is None:
        for day in days:
            key = day.isoformat()
            report.days[key] = _merge(
                store, key, [build_day(store, key, today, limits)], report, seen
            )
        return report
    from claims_pipeline.claim_workers import build_in_workers  # it imports this module

    report.processes = processes
    for key, built in build_in_workers(store, plan, today, limits, processes):
        report.days[key] = _merge(store, key, built, report, seen)
    return report


def build_day(store: PartitionStore, day: str, today: date, limits: AmountLimits) -> PartClaims:
    """Build one day's claims and rejections into its files."""
    facts = store.facts(ENCOUNTERS, day)  # extraction instant and fingerprint travel on
    with (
        store.writer(CLAIMS, day, CLAIM_SCHEMA, facts) as claims_file,
        store.writer(REJECTIONS, day, REJECTION_SCHEMA, facts) as rejections_file,
    ):
        return build_part(store, DayPart(day), today, limits, claims_file, rejections_file)


def plan_parts(store: PartitionStore, days: list[date], processes: int) -> list[DayPart] | None:
    """How ``processes`` workers share ``days``: each day whole, or, when it holds more than a
    worker's share of the run's lines (at most :data:`PART_MAX_LINES`), cut into parts of
    about that share where an encounter's rows begin; None when the run is built in this
    process."""
    if processes < 2:
        return None
    counts = {day.isoformat(): store.row_count(ENCOUNTERS, day.isoformat()) for day in days}
    total = sum(counts.values())
    if total < PARALLEL_MIN_LINES:
        return None
    share = min(math.ceil(total / processes), PART_MAX_LINES)
    plan: list[DayPart] = []
    for key, count in counts.items():
        cuts = _cuts(store, key, math.ceil(count / share)) if count > share else []
        starts, stops = [0, *cuts], [*cuts, None]
        plan.extend(DayPart(key, start, stop) for start, stop in zip(starts, stops, strict=True))
    # The encounter ids read for the cuts (and what earlier steps of this process freed) are
    # handed back to the system before the workers grow: the peak is this process and them.
    pa.default_memory_pool().release_unused()
    return plan


def _cuts(store: PartitionStore, day: str, parts: int) -> list[int]:
    """Rows at which to cut a day into about ``parts`` equal parts, each the first row of a
    run of an encounter's rows (none when an encounter id is missing)."""
    chunks = [b.column(0) for b in store.read_batches(ENCOUNTERS, day, columns=["encounter_id"])]
    ids = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    if len(ids) < 2 or ids.null_count:
        return []
    changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    starts = pc.add(pc.indices_nonzero(changed), 1).to_numpy()  # each run's first row
    found = np.searchsorted(starts, [len(ids) * k // parts for k in range(1, parts)])
    return sorted({int(starts[i]) for i in found if i < len(starts)})


class _BatchWriter(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...


@dataclass
class PartClaims:
    """What building one day or part of a day found (its encounters are counted apart)."""

    figures: DayClaims = field(default_factory=DayClaims)
    by_payer: dict[str, BillingMix] = field(default_factory=lambda: defaultdict(BillingMix))
    by_provider: dict[str, BillingMix] = field(default_factory=lambda: defaultdict(BillingMix))
    #: accepted claims' identities (:func:`_identity`), in order
    identities: array[int] = field(default_factory=lambda: array("Q"))
    #: a part of a day: 64 bits of the digest of every claim key and encounter met (see
    #: build_claims), sorted; what the step compares between the parts of a day
    met: np.ndarray[Any, np.dtype[np.uint64]] | None = None


def build_part(
    store: PartitionStore,
    part: DayPart,
    today: date,
    limits: AmountLimits,
    claims_file: _BatchWriter,
    rejections_file: _BatchWriter,
) -> PartClaims:
    """Build the claims and rejections of ``part`` into the two writers."""
    built = PartClaims()
    keys: set[int] | None = None if part.whole else set()
    encounters: set[int] | None = None if part.whole else set()
    figures = built.figures
    claims_out = RowBuffer(claims_file, CLAIM_SCHEMA, _WRITE_ROWS)
    rejections_out = RowBuffer(rejections_file, REJECTION_SCHEMA, _WRITE_ROWS)
    billing = _DayBilling()
    results = build_claims(
        _encounter_rows(store, part, billing),
        today=today,
        limits=limits,
        seen_keys=keys,
        seen_encounters=encounters,
    )
    for result in results:
        found = billing.reported(result.encounter_id)
        if result.accepted:
            row = claim_row(result)
            built.identities.append(
                _identity(row["provider_npi"], row["claim_submitter_identifier"])
            )
            claims_out.append(row)
            amount = Decimal(row["total_amount"])
            figures.billed += amount
            figures.payers[row["payer_name"]] += 1
            built.by_payer[row["payer_name"] or "unknown"].add_claim(amount)
            built.by_provider[row["provider_npi"] or "unknown"].add_claim(amount)
            if len(figures.preview) < PREVIEW_ROWS and result.wire is not None:
                figures.preview.append(claim_preview(result.wire))
        else:
            rejections_out.append(rejection_row(result, found))
            held = found.amount if found else None
            built.by_payer[(found and found.payer_name) or "unknown"].add_rejection(held)
            built.by_provider[(found and found.provider_npi) or "unknown"].add_rejection(held)
            figures.reasons.update({p.code.value for p in result.problems})
    claims_out.flush()
    rejections_out.flush()
    figures.claims, figures.rejected = claims_out.rows, rejections_out.rows
    if keys is not None and encounters is not None:
        # sorted and distinct, without a third set of Python ints beside the two
        met = (digest & _LOW_64 for digests in (keys, encounters) for digest in digests)
        count = len(keys) + len(encounters)
        built.met = np.unique(np.fromiter(met, dtype=np.uint64, count=count))
    return built


_LOW_64 = (1 << 64) - 1


def parts_overlap(parts: list[PartClaims]) -> bool:
    """Whether two parts of a day may share a claim key or an encounter (which the duplicate
    check rejects in its second occurrence: only the day built in order can say which is
    second). Compares 64 bits of each digest: two that agree there only cost a rebuild."""
    met = [part.met for part in parts if part.met is not None]
    if len(met) < len(parts):
        raise ValueError("only parts of a day carry their digests")
    everything = np.concatenate(met)
    return len(np.unique(everything)) < len(everything)


def _merge(
    store: PartitionStore, key: str, parts: list[PartClaims], report: ClaimsReport, seen: set[int]
) -> DayClaims:
    """One day's figures from its parts (in order), added to the run's report."""
    figures = DayClaims()
    for part in parts:
        figures.claims += part.figures.claims
        figures.rejected += part.figures.rejected
        figures.billed += part.figures.billed
        figures.reasons.update(part.figures.reasons)
        figures.payers.update(part.figures.payers)
        figures.preview.extend(part.figures.preview[: PREVIEW_ROWS - len(figures.preview)])
        for payer, mix in part.by_payer.items():
            report.by_payer[payer].add(mix)
        for provider, mix in part.by_provider.items():
            report.by_provider[provider].add(mix)
        for identity in part.identities:
            report.duplicate_keys += identity in seen
            seen.add(identity)
    figures.encounters = stored_encounters(store, key)
    return figures
