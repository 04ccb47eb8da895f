"""Claim assembly: the charge-line rows of one encounter (LINE_SCHEMA) to one API-shaped claim.

Assembly maps and normalises; it never judges. A value it cannot normalise (an unparsable
amount, a phone number that is not a phone number) is passed through as it came, so that
:func:`claims_pipeline.rules.validation.validate_claim` reports it with a reason. Every mapping
decision is written down in ``docs/claim-mapping.md``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from itertools import groupby
from operator import itemgetter
from typing import Any

from claims_pipeline.rules.phone import to_e164

_ONE = Decimal(1)
_MODIFIER_SEPARATORS = re.compile(r"[:;,\s]+")

# Administrative sex as EHRs spell it (OpenEMR Male/Female/UNK, HL7 v2 F/M/O/U/A/N, FHIR
# male/female/other/unknown) -> the X12 DMG03 values the API takes.
_GENDERS: dict[str, str] = {
    "m": "M",
    "male": "M",
    "man": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "u": "U",
    "unk": "U",
    "unknown": "U",
    "o": "U",
    "other": "U",
    "a": "U",  # HL7 v2 "ambiguous"
    "n": "U",  # HL7 v2 "not applicable"
    "x": "U",
    "n/a": "U",
}
_WORDS = re.compile(r"[A-Za-z]+(?:[ -][A-Za-z]+)*")


def group_encounters(rows: Iterable[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """The rows of each encounter, in input order. Rows of one encounter must be contiguous
    (the LINE_SCHEMA contract); an encounter whose rows are split comes out twice and
    :func:`claims_pipeline.rules.build_claims` rejects the second as a duplicate."""
    for _, encounter_rows in groupby(rows, key=itemgetter("encounter_id")):
        yield list(encounter_rows)


def normalise_icd_code(raw: str) -> str:
    """``' m5450 '`` -> ``'M54.50'``: stripped, upper-cased, dot after the 3rd character."""
    code = raw.strip().upper()
    if len(code) > 3 and "." not in code:
        code = f"{code[:3]}.{code[3:]}"
    return code


# Cached: a night's rows repeat the same few hundred diagnosis lists and modifier texts.
@functools.lru_cache(maxsize=16_384)
def split_diagnosis_codes(raw: str | None) -> tuple[str, ...]:
    """The normalised codes of a ``,``-separated list, empties dropped, duplicates kept once."""
    if not raw:
        return ()
    codes = (normalise_icd_code(part) for part in raw.split(","))
    return tuple(dict.fromkeys(code for code in codes if code))


@functools.lru_cache(maxsize=4096)
def split_modifiers(raw: str | None) -> tuple[str, ...]:
    """Modifiers from the EHR's raw text (``25:59``, ``25 59``, ``gt,95``), upper-cased, in
    order; empty when there are none."""
    if not raw:
        return ()
    return tuple(part.upper() for part in _MODIFIER_SEPARATORS.split(raw) if part)


def normalise_gender(raw: str | None) -> Any:
    """``M``, ``F`` or ``U`` for the EHR's spelling of administrative sex. Missing, unknown and
    any other word (``Other``, ``Nonbinary``) are ``U``, which X12 always allows. A value that is
    not a word at all (digits, a date, punctuation) is returned as it came, for the validator to
    reject as ``gender_invalid``: it points at a broken column mapping rather than a patient."""
    if raw is None:
        return "U"
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if not text:
        return "U"
    known = _GENDERS.get(text.lower())
    if known is not None:
        return known
    return "U" if _WORDS.fullmatch(text) else text


def normalise_phone(raw: str | None) -> str | None:
    """The payer phone in E.164, or the raw value when it cannot be normalised (rejected later
    as ``phone_invalid``), or None when missing."""
    text: str | None = _text(raw)
    if not isinstance(text, str):
        return text
    return to_e164(text) or text


@functools.lru_cache(maxsize=4096)  # a practice has a handful of addresses
def format_provider_address(
    street: str | None, city: str | None, state: str | None, postal_code: str | None
) -> str | None:
    """``{street}, {city}, {state} {postal_code}`` with missing parts left out, as in the API's
    example ``123 Medical Dr, Suite 100, San Francisco, CA 94102``; None when all are missing."""
    state_zip = " ".join(part for part in (_text(state), _text(postal_code)) if part)
    parts = [part for part in (_text(street), _text(city), state_zip) if part]
    return ", ".join(parts) or None


def format_place_of_service(raw: str | int | None) -> str | None:
    """Place of service as two digits (``3`` -> ``03``); anything else as it came."""
    if raw is None:
        return None
    text = str(raw).strip()
    if len(text) == 1 and text.isascii() and text.isdigit():
        return "0" + text
    return text or None


def _text(raw: Any) -> Any:
    """Stripped text, None for missing or blank; a non-text value as it came."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw.strip() or None
    return raw


# A night's lines repeat a few hundred amount and units texts: each parsed once (a Decimal is
# immutable, so claims may share one). A text that does not parse raises every time.
@functools.lru_cache(maxsize=16_384)
def parse_decimal(text: str) -> Decimal:
    """``Decimal(text)``: surrounding whitespace allowed, InvalidOperation for anything else."""
    return Decimal(text)


def _decimal(raw: Any, missing: Decimal | None = None) -> Any:
    """A Decimal from decimal text (or an int/Decimal a driver handed over); ``missing`` for
    None or blank text; the value as it came when it does not parse, for the validator."""
    if isinstance(raw, str):
        try:
            return parse_decimal(raw)
        except InvalidOperation:
            return raw if raw.strip() else missing
    if raw is None:
        return missing
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Decimal(raw)
    return raw


def _is_charge_line(row: Mapping[str, Any]) -> bool:
    # The placeholder row of an encounter without procedures has every line column null; a row
    # with a line number or an amount but no code is a broken line, kept to be rejected.
    return (
        row["hcpcs_code"] is not None
        or row["line_number"] is not None
        or row["line_amount"] is not None
    )


def assemble_claim(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One API-shaped claim (a plain dict with the API's field names, ``charge_lines`` a list of
    dicts) from the rows of one encounter (each with every LINE_SCHEMA key), ordered by line
    number.

    Claim-level fields come from the first row; the provider from the first charge line (the
    API has one provider per claim). ``icd_codes`` are the line diagnoses in order of first use,
    then the encounter diagnoses no line points at; each line's pointers are the 1-based
    positions of its own diagnoses, all of them (more than 4 is left for the validator to
    reject, never silently cut). Money and units are ``Decimal``, dates are ``date``.
    """
    first = rows[0]
    line_rows = [row for row in rows if _is_charge_line(row)]
    provider = line_rows[0] if line_rows else first
    encounter_date = first["service_date"]

    icd_codes: list[str] = []
    position: dict[str, str] = {}
    charge_lines: list[dict[str, Any]] = []
    for row in line_rows:
        pointers = []
        for code in split_diagnosis_codes(row["line_diagnosis_codes"]):
            if code not in position:
                icd_codes.append(code)
                position[code] = str(len(icd_codes))
            pointers.append(position[code])
        date_from = row["line_service_date_from"] or encounter_date
        hcpcs = row["hcpcs_code"]
        if isinstance(hcpcs, str):
            hcpcs = hcpcs.strip().upper() or None
        modifiers = split_modifiers(row["modifiers"])
        charge_lines.append(
            {
                "hcpcs_code": hcpcs,
                "monetary_amount": _decimal(row["line_amount"]),
                "units": _decimal(row["units"], missing=_ONE),
                "diagnosis_code_pointers": pointers,
                "service_date_from": date_from,
                # A line dated on its own day without an end is a one-day service on that day.
                "service_date_to": row["line_service_date_to"] or date_from,
                # None, not [], so that the optional key is left off the wire.
                "modifiers": list(modifiers) if modifiers else None,
            }
        )
    for code in split_diagnosis_codes(first["claim_diagnosis_codes"]):
        if code not in position:
            icd_codes.append(code)
            position[code] = str(len(icd_codes))

    return {
        "patient_name": _text(first["patient_name"]),
        "patient_dob": first["patient_dob"],
        "patient_gender": normalise_gender(first["patient_gender"]),
        "provider_name": _text(provider["provider_name"]),
        "provider_address": format_provider_address(
            provider["provider_street"],
            provider["provider_city"],
            provider["provider_state"],
            provider["provider_postal_code"],
        ),
        "provider_npi": _text(provider["provider_npi"]),
        "patient_member_id": _text(first["patient_member_id"]),
        "payer_name": _text(first["payer_name"]),
        "claim_submitter_identifier": _text(first["claim_submitter_identifier"]),
        "facility_code_value": format_place_of_service(first["place_of_service"]),
        "icd_codes": icd_codes,
        "visit_number": _text(first["visit_number"]),
        "payer_phone_number": normalise_phone(first["payer_phone"]),
        "charge_lines": charge_lines,
    }
