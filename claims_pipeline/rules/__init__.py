"""Claim rules: charge-line rows in, API-shaped claims or rejections out. Pure Python (no
Dagster), deterministic, no clock: ``today`` is always passed in.

The pipeline calls :func:`build_claims`; the pieces it is built from are
:func:`~claims_pipeline.rules.assembly.assemble_claim` (rows of one encounter -> claim dict) and
:func:`~claims_pipeline.rules.validation.validate_claim` (claim dict -> problems).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

# The contract's own Decimal -> JSON number rule: one definition, not two.
from claims_pipeline.contract import CHARGE_LINE_FIELDS, CLAIM_FIELDS, wire_number
from claims_pipeline.rules.assembly import assemble_claim, group_encounters
from claims_pipeline.rules.code_sets import CODE_SET_RELEASE, load_icd_code_set
from claims_pipeline.rules.reasons import Problem, ReasonCode
from claims_pipeline.rules.validation import DEFAULT_LIMITS, AmountLimits, validate_claim

__all__ = [
    "CODE_SET_RELEASE",
    "DEFAULT_LIMITS",
    "AmountLimits",
    "ClaimResult",
    "Problem",
    "ReasonCode",
    "assemble_claim",
    "build_claims",
    "load_icd_code_set",
    "validate_claim",
    "wire_claim",
]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The outcome for one encounter: the claim as it will be posted, or why it will not be."""

    claim_submitter_identifier: str
    encounter_id: str
    service_date: date
    wire: dict[str, Any] | None  # JSON-ready, exactly as posted (claim_to_wire); None if rejected
    problems: tuple[Problem, ...]

    @property
    def accepted(self) -> bool:
        """True when the claim broke no rule and ``wire`` holds it."""
        return not self.problems


def _duplicate(first_key: str) -> Problem:
    return Problem(
        ReasonCode.DUPLICATE_CLAIM_KEY,
        "claim_submitter_identifier",
        f"{first_key} already appeared earlier in this input; only the first occurrence is"
        " a claim (are the encounter's rows contiguous, is the identifier unique?)",
    )


def _unreadable(encounter_rows: list[Mapping[str, Any]]) -> list[Problem]:
    """An ``unreadable_value`` problem per source column the adapter could not read."""
    names = {
        name
        for row in encounter_rows
        if (listed := row.get("unreadable_columns"))
        for name in listed.split(",")
    }
    return [
        Problem(
            ReasonCode.UNREADABLE_VALUE,
            name,
            f"{name} holds a value the database driver cannot read (text that is not UTF-8, "
            "a date column holding something else): correct it in the EHR",
        )
        for name in sorted(names)
    ]


# A night's lines repeat a few hundred amounts and a few dates: each converted once. typed:
# an int and the Decimal equal to it are different inputs.
@functools.lru_cache(maxsize=16_384, typed=True)
def _cached_wire_number(value: Decimal) -> int | float:
    return wire_number(value)


@functools.lru_cache(maxsize=16_384, typed=True)
def _iso_date(value: date) -> str:
    return value.isoformat()


def _wire_number(value: Any) -> Any:
    """``wire_number(value)``, from the cache for a finite Decimal (a NaN is not cached: a
    signalling one cannot be hashed)."""
    if type(value) is Decimal and value.is_finite():
        return _cached_wire_number(value)
    return wire_number(value)


def _fields(mapping: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """``{field: mapping.get(field) for field in fields}``. A dict with exactly these keys in
    this order (what assemble_claim builds) is copied instead: a third of the cost."""
    if type(mapping) is dict and tuple(mapping) == fields:
        return mapping.copy()
    return {field: mapping.get(field) for field in fields}


def _wire_line(line: Mapping[str, Any]) -> dict[str, Any]:
    wire = _fields(line, CHARGE_LINE_FIELDS)
    wire["monetary_amount"] = _wire_number(wire["monetary_amount"])
    wire["units"] = _wire_number(wire["units"])
    wire["diagnosis_code_pointers"] = list(wire["diagnosis_code_pointers"])
    wire["service_date_from"] = _iso_date(wire["service_date_from"])
    wire["service_date_to"] = _iso_date(wire["service_date_to"])
    if wire["modifiers"] is None:
        del wire["modifiers"]  # claim_to_wire leaves None out
    else:
        wire["modifiers"] = list(wire["modifiers"])
    return wire


def wire_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-ready dict of a claim :func:`validate_claim` accepted: equal to
    ``claim_to_wire(Claim.model_validate(claim))`` (a property test holds this) at about a
    quarter of the cost: the pydantic path took as long as assembly and validation together.
    Strings pass through; dates become ISO text and Decimals JSON numbers by the contract's own
    rule; None modifiers are left out."""
    wire = _fields(claim, CLAIM_FIELDS)
    wire["patient_dob"] = wire["patient_dob"].isoformat()
    wire["icd_codes"] = list(wire["icd_codes"])
    wire["charge_lines"] = [_wire_line(line) for line in wire["charge_lines"]]
    return wire


def _digest(value: Any) -> int:
    """A 128-bit digest of ``repr(value)``: equal for equal text or None values (what the
    line columns hold), distinct for ``None`` and ``"None"`` or ``5`` and ``"5"``."""
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=16).digest(), "big")


def build_claims(
    rows: Iterable[Mapping[str, Any]],
    *,
    today: date,
    limits: AmountLimits = DEFAULT_LIMITS,
    seen_keys: set[int] | None = None,
    seen_encounters: set[int] | None = None,
) -> Iterator[ClaimResult]:
    """One :class:`ClaimResult` per encounter, in input order, from rows in LINE_SCHEMA shape
    (rows of an encounter contiguous, ordered by line number).

    Each encounter is assembled and checked against every claim rule (amounts against
    ``limits``); an accepted claim's
    ``wire`` equals ``claim_to_wire(Claim.model_validate(claim))``. A claim key (provider NPI +
    claim_submitter_identifier) or encounter that already appeared earlier in ``rows`` is
    rejected as ``duplicate_claim_key``; one whose rows name ``unreadable_columns`` is rejected
    as ``unreadable_value`` for each. The same rows and ``today`` always give the same
    results; each encounter's result does not depend on the other encounters, except for that
    duplicate check (the first occurrence wins).

    ``seen_keys`` and ``seen_encounters``, when given, are the sets that check fills with a
    digest of every claim key and encounter met: a caller that builds a day in parts finds
    there whether two parts share one (``claims_pipeline.claim_days``).
    """
    # 128-bit digests, not the values: these sets are the only part of the claims step that
    # grows with a partition (≈ 100 MiB of tuples and strings at 1,000,000 lines). A digest
    # collision (≈ 1e-27 at 10M claims) could only reject a claim as a duplicate, never drop
    # one silently.
    seen_keys = set() if seen_keys is None else seen_keys
    seen_encounters = set() if seen_encounters is None else seen_encounters
    for encounter_rows in group_encounters(rows):
        claim = assemble_claim(encounter_rows)
        # A value the source could not read is null in the rows: say why before what it causes.
        problems = [
            *_unreadable(encounter_rows),
            *validate_claim(claim, today=today, limits=limits),
        ]
        first = encounter_rows[0]
        encounter_id = first["encounter_id"]
        claim_id = claim["claim_submitter_identifier"]
        key = _digest((claim["provider_npi"], claim_id))
        encounter = _digest(encounter_id)
        if key in seen_keys:
            problems.append(_duplicate("the claim key (provider NPI + claim identifier)"))
        elif encounter in seen_encounters:
            problems.append(_duplicate("the encounter"))
        seen_keys.add(key)
        seen_encounters.add(encounter)

        yield ClaimResult(
            claim_submitter_identifier=claim_id if isinstance(claim_id, str) else "",
            encounter_id=encounter_id,
            service_date=first["service_date"],
            wire=None if problems else wire_claim(claim),
            problems=tuple(problems),
        )
