"""Claim validation: every claim rule (docs/claim-mapping.md, "Rejections") over one claim.

The claim is a plain mapping with the API's field names (as :func:`assemble_claim` builds it),
whose values may be missing or malformed; Python types are expected where the project uses
them (``date`` for dates, ``Decimal`` for money and units, lists for list fields). The rules
are at least as strict as :class:`claims_pipeline.contract.Claim`, so a claim with no problems
also satisfies the contract (a property test holds this).

Messages never contain patient data: no name, date of birth, member id, address or date of
service. They may quote codes (ICD, HCPCS, place of service, modifiers, pointers), the provider
NPI and line amounts; a malformed value is quoted only when it looks like a code (see
:func:`_quote`), so that a broken column mapping cannot copy a patient's name into a message.

Missing values (None or blank) are ``missing_field`` wherever the rule table does not name a
more specific reason; present but wrong values get the field's own reason code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from stdnum import luhn

from claims_pipeline.contract import (
    MAX_CHARGE_LINES,
    MAX_UNITS_DIGITS,
    MAX_WIRE_AMOUNT,
)
from claims_pipeline.rules.code_sets import (
    CODE_SET_RELEASE,
    PLACE_OF_SERVICE_CODES,
    IcdStatus,
    icd_status,
)
from claims_pipeline.rules.phone import to_e164
from claims_pipeline.rules.reasons import Problem, ReasonCode

MAX_DIAGNOSES = 12  # X12 837P HI segment: 12 diagnosis codes per claim
MAX_POINTERS = 4  # SV107: 4 diagnosis pointers per line
MAX_MODIFIERS = 4  # SV101-3..6
MAX_CLAIM_ID_LENGTH = 20  # CLM01 as the clearinghouse takes it
MAX_AGE_YEARS = 150
GENDERS = frozenset({"M", "F", "U"})

# [0-9] rather than \d: \d also matches non-ASCII digits ("١٢٣"), which no payer accepts.
_NPI = re.compile(r"[0-9]{10}")
_ICD = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
# CPT category I | category II (F) / III (T) / PLA (U) | HCPCS level II (A-V + 4 digits)
_HCPCS = re.compile(r"[0-9]{5}|[0-9]{4}[FTU]|[A-V][0-9]{4}")
_MODIFIER = re.compile(r"[A-Z0-9]{2}")
# What a code looks like, loosely: letters, then a digit, then letters or digits, at most one
# dot, at most 8 characters. Names never match (no digit); dates and member ids rarely do.
_CODE_LIKE = re.compile(r"[A-Za-z]*[0-9][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)?")
_MAX_QUOTED = 8
_CENT = Decimal("0.01")
_NPI_PREFIX = "80840"  # ISO 7812 issuer prefix for US health applications


@dataclass(frozen=True, slots=True)
class AmountLimits:
    """The largest line amount and claim total that are plausible (settings
    CLAIMS_MAX_LINE_AMOUNT and CLAIMS_MAX_CLAIM_AMOUNT); never above what the wire carries
    exactly (``MAX_WIRE_AMOUNT``)."""

    max_line: Decimal = Decimal("100000")
    max_claim: Decimal = Decimal("1000000")

    def __post_init__(self) -> None:
        for name in ("max_line", "max_claim"):
            value = getattr(self, name)
            if not (isinstance(value, Decimal) and 0 < value <= MAX_WIRE_AMOUNT):
                raise ValueError(f"{name} must be a Decimal above 0, at most {MAX_WIRE_AMOUNT}")


DEFAULT_LIMITS = AmountLimits()


def _quote(value: Any) -> str:
    """A value safe to put in a message: codes as they are, anything else only by its shape
    (a patient's name in a code column must not reach the rejection log)."""
    if isinstance(value, str):
        if len(value) <= _MAX_QUOTED and _CODE_LIKE.fullmatch(value):
            return value
        return f"(a {len(value)}-character value)"
    return f"(a value of type {type(value).__name__})"


def _is_date(value: Any) -> bool:
    # datetime is a date subclass, but a timestamp in a date field is a mapping error.
    return isinstance(value, date) and not isinstance(value, datetime)


def _is_mapping(value: Any) -> bool:
    # The exact-type test first: an ABC isinstance check costs ten times more.
    return type(value) is dict or isinstance(value, Mapping)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@functools.lru_cache(maxsize=16_384)
def npi_is_valid(npi: str) -> bool:
    """10 ASCII digits whose last is the Luhn check digit over ``80840`` + the first 9
    (``1234567893`` is valid, ``1234567890`` is not)."""
    return _NPI.fullmatch(npi) is not None and luhn.is_valid(_NPI_PREFIX + npi)


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _has_more_than_two_decimals(amount: Decimal) -> bool:
    """Trailing zeros do not count: 150.000 is 150.00, 0.001 is not a cent amount."""
    try:
        return amount != amount.quantize(_CENT)
    except InvalidOperation:
        # Too many digits to round within the context precision: look at the digits past the
        # cents instead (slower, so only here).
        _, digits, exponent = amount.as_tuple()
        excess = -2 - int(exponent)
        return excess > 0 and any(digits[-excess:])


class _Findings:
    """The problems of one claim, in the order the rules ran."""

    __slots__ = ("problems",)

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, code: ReasonCode, field: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(code, field, message, line))

    def text(self, value: Any, field: str) -> None:
        """A ``missing_field`` problem unless ``value`` is present, trimmed text."""
        if isinstance(value, str) and value and value == value.strip():
            return
        if _is_blank(value):
            self.add(ReasonCode.MISSING_FIELD, field, f"{field} is missing")
        elif not isinstance(value, str):
            self.add(ReasonCode.MISSING_FIELD, field, f"{field} is not text")
        else:
            self.add(ReasonCode.MISSING_FIELD, field, f"{field} has leading or trailing spaces")


def validate_claim(
    claim: Mapping[str, Any], *, today: date, limits: AmountLimits = DEFAULT_LIMITS
) -> list[Problem]:
    """Every broken rule of one assembled claim, claim-level fields first (in API field order),
    then each charge line in order; empty when the claim may be posted. ``today`` is the date
    future service dates are measured against; ``limits`` the plausible line amount and claim
    total. Only the API's fields are read; other keys are ignored (and never reach the wire,
    see :func:`claims_pipeline.rules.wire_claim`)."""
    found = _Findings()
    lines = claim.get("charge_lines")
    uninsured = _is_blank(claim.get("payer_name")) and _is_blank(claim.get("patient_member_id"))

    found.text(claim.get("patient_name"), "patient_name")
    _check_dob(found, claim.get("patient_dob"), _first_service_date(lines) or today)
    _check_gender(found, claim.get("patient_gender"))
    found.text(claim.get("provider_name"), "provider_name")
    found.text(claim.get("provider_address"), "provider_address")
    _check_npi(found, claim.get("provider_npi"))
    if uninsured:
        found.add(
            ReasonCode.UNINSURED,
            "payer_name",
            "no payer and no member id: a self-pay encounter is not an insurance claim",
        )
    else:
        found.text(claim.get("patient_member_id"), "patient_member_id")
        found.text(claim.get("payer_name"), "payer_name")
    _check_claim_id(found, claim.get("claim_submitter_identifier"))
    _check_place_of_service(found, claim.get("facility_code_value"))
    diagnosis_count = _check_icd_codes(found, claim.get("icd_codes"))
    found.text(claim.get("visit_number"), "visit_number")
    _check_phone(found, claim.get("payer_phone_number"), uninsured)
    _check_charge_lines(found, lines, diagnosis_count, today, limits)
    return found.problems


def _first_service_date(lines: Any) -> date | None:
    if not isinstance(lines, list):
        return None
    dates = [
        line.get("service_date_from")
        for line in lines
        if _is_mapping(line) and _is_date(line.get("service_date_from"))
    ]
    return min(dates, default=None)


def _check_dob(found: _Findings, dob: Any, first_service: date) -> None:
    field = "patient_dob"
    if dob is None:
        found.add(ReasonCode.MISSING_FIELD, field, "patient date of birth is missing")
    elif not _is_date(dob):
        found.add(ReasonCode.DOB_INVALID, field, "patient date of birth is not a date")
    elif dob > first_service:
        # Also the service-date rule "not before the patient's birth": reported once, here.
        found.add(
            ReasonCode.DOB_INVALID, field, "patient date of birth is after the date of service"
        )
    elif _age(dob, first_service) >= MAX_AGE_YEARS:
        found.add(
            ReasonCode.DOB_INVALID,
            field,
            f"patient would be {MAX_AGE_YEARS} years or older on the date of service",
        )


def _check_gender(found: _Findings, gender: Any) -> None:
    if isinstance(gender, str) and gender in GENDERS:
        return
    if _is_blank(gender):
        found.add(ReasonCode.MISSING_FIELD, "patient_gender", "patient_gender is missing")
    else:
        found.add(
            ReasonCode.GENDER_INVALID,
            "patient_gender",
            "patient_gender is not M, F or U: the EHR value could not be mapped",
        )


def _check_npi(found: _Findings, npi: Any) -> None:
    field = "provider_npi"
    if _is_blank(npi):
        found.add(ReasonCode.MISSING_FIELD, field, "provider NPI is missing")
    elif not isinstance(npi, str) or _NPI.fullmatch(npi) is None:
        found.add(ReasonCode.NPI_INVALID, field, f"provider NPI {_quote(npi)} is not 10 digits")
    elif not npi_is_valid(npi):
        found.add(
            ReasonCode.NPI_INVALID,
            field,
            f"provider NPI {npi} fails the check digit (Luhn over 80840 + its first 9 digits)",
        )


def _check_claim_id(found: _Findings, claim_id: Any) -> None:
    field = "claim_submitter_identifier"
    if _is_blank(claim_id):
        found.add(ReasonCode.MISSING_FIELD, field, "claim_submitter_identifier is missing")
    elif not isinstance(claim_id, str):
        found.add(ReasonCode.CLAIM_ID_INVALID, field, "claim_submitter_identifier is not text")
    elif len(claim_id) > MAX_CLAIM_ID_LENGTH:
        found.add(
            ReasonCode.CLAIM_ID_INVALID,
            field,
            f"claim_submitter_identifier has {len(claim_id)} characters;"
            f" at most {MAX_CLAIM_ID_LENGTH} are accepted",
        )
    elif claim_id != claim_id.strip() or not claim_id.isprintable():
        found.add(
            ReasonCode.CLAIM_ID_INVALID,
            field,
            "claim_submitter_identifier has surrounding spaces or unprintable characters",
        )


def _check_place_of_service(found: _Findings, pos: Any) -> None:
    if isinstance(pos, str) and pos in PLACE_OF_SERVICE_CODES:
        return
    if _is_blank(pos):
        found.add(ReasonCode.MISSING_FIELD, "facility_code_value", "place of service is missing")
    else:
        found.add(
            ReasonCode.POS_INVALID,
            "facility_code_value",
            f"place of service {_quote(pos)} is not a CMS place-of-service code in use",
        )


class _Diagnosis(Enum):
    """The verdict on one diagnosis code; the value ends the rejection message."""

    BILLABLE = ""
    MALFORMED = "is not an ICD-10-CM code written with the dot after the third character"
    REPEATED = "is listed twice"
    UNKNOWN = f"is not a code in {CODE_SET_RELEASE}"
    HEADER = f"is not billable in {CODE_SET_RELEASE}: it has subcodes, use the most specific one"


@functools.lru_cache(maxsize=65_536)
def _diagnosis_verdict(code: str) -> _Diagnosis:
    if _ICD.fullmatch(code) is None:
        return _Diagnosis.MALFORMED
    status = icd_status(code)
    if status is IcdStatus.UNKNOWN:
        return _Diagnosis.UNKNOWN
    return _Diagnosis.HEADER if status is IcdStatus.HEADER else _Diagnosis.BILLABLE


def _check_icd_codes(found: _Findings, codes: Any) -> int:
    """Check the claim's diagnoses; the number of positions lines may point at."""
    field = "icd_codes"
    if codes is None or (isinstance(codes, list) and not codes):
        found.add(ReasonCode.MISSING_FIELD, field, "the claim has no diagnosis code")
        return 0
    if not isinstance(codes, list):
        found.add(ReasonCode.ICD_INVALID, field, "icd_codes is not a list")
        return 0
    if len(codes) > MAX_DIAGNOSES:
        found.add(
            ReasonCode.TOO_MANY_DIAGNOSES,
            field,
            f"the claim has {len(codes)} diagnosis codes; at most {MAX_DIAGNOSES} fit on a claim",
        )
    seen: set[str] = set()
    for position, code in enumerate(codes, start=1):
        if type(code) is not str:
            verdict = _Diagnosis.MALFORMED
        elif code in seen:
            verdict = _Diagnosis.REPEATED
        else:
            seen.add(code)
            verdict = _diagnosis_verdict(code)
        if verdict is _Diagnosis.BILLABLE:
            continue
        reason = (
            ReasonCode.ICD_NOT_BILLABLE if verdict is _Diagnosis.HEADER else ReasonCode.ICD_INVALID
        )
        found.add(reason, field, f"diagnosis {_quote(code)} (position {position}) {verdict.value}")
    return len(codes)


def _check_phone(found: _Findings, phone: Any, uninsured: bool) -> None:
    field = "payer_phone_number"
    if _is_blank(phone):
        if not uninsured:  # no payer, so no payer phone: already reported as uninsured
            found.add(ReasonCode.MISSING_FIELD, field, "payer phone number is missing")
    elif not isinstance(phone, str) or to_e164(phone) != phone:
        found.add(
            ReasonCode.PHONE_INVALID,
            field,
            "payer phone number is not a phone number that can be written in E.164",
        )


def _check_charge_lines(
    found: _Findings, lines: Any, diagnosis_count: int, today: date, limits: AmountLimits
) -> None:
    if not isinstance(lines, list) or not lines:
        found.add(
            ReasonCode.NO_CHARGE_LINES,
            "charge_lines",
            "the encounter has no procedure lines to bill",
        )
        return
    if len(lines) > MAX_CHARGE_LINES:
        # Rejected, not split: a split claim could never be withdrawn if the encounter later
        # shrinks to 50 lines (docs/claim-mapping.md, "Claim size").
        found.add(
            ReasonCode.TOO_MANY_LINES,
            "charge_lines",
            f"the encounter has {len(lines)} charge lines; an 837P claim carries at most"
            f" {MAX_CHARGE_LINES}: split it into encounters of at most {MAX_CHARGE_LINES} lines"
            " in the EHR",
        )
    positions = _positions(diagnosis_count)
    total = Decimal(0)
    for index, line in enumerate(lines):
        if not _is_mapping(line):
            found.add(
                ReasonCode.MISSING_FIELD, "charge_lines", "charge line is not a record", index
            )
            continue
        _check_hcpcs(found, line.get("hcpcs_code"), index)
        amount = line.get("monetary_amount")
        if _check_amount(found, amount, index, limits.max_line):
            try:
                total += amount
            except ArithmeticError:  # beyond what a Decimal holds (1E+999999999): implausible
                total = Decimal("Infinity")
        _check_units(found, line.get("units"), index)
        _check_pointers(found, line.get("diagnosis_code_pointers"), positions, index)
        _check_service_dates(
            found, line.get("service_date_from"), line.get("service_date_to"), today, index
        )
        _check_modifiers(found, line.get("modifiers"), index)
    if total > limits.max_claim:
        found.add(
            ReasonCode.AMOUNT_IMPLAUSIBLE,
            "monetary_amount",
            f"the claim totals {total}, above CLAIMS_MAX_CLAIM_AMOUNT ({limits.max_claim}):"
            " check the amounts in the EHR (a shifted decimal, cents in a dollars column?)",
        )


def _check_hcpcs(found: _Findings, code: Any, index: int) -> None:
    if type(code) is str and _HCPCS.fullmatch(code):
        return
    if _is_blank(code):
        found.add(ReasonCode.MISSING_FIELD, "hcpcs_code", "procedure code is missing", index)
    else:
        found.add(
            ReasonCode.HCPCS_INVALID,
            "hcpcs_code",
            f"procedure code {_quote(code)} is not a CPT or HCPCS level II code",
            index,
        )


def _check_amount(found: _Findings, amount: Any, index: int, max_line: Decimal) -> bool:
    """Report a broken amount; True when the amount is a valid one (plausible or not)."""
    field = "monetary_amount"
    if (
        type(amount) is Decimal
        and amount.is_finite()
        and amount > 0
        and not _has_more_than_two_decimals(amount)
    ):
        if amount > max_line:
            found.add(
                ReasonCode.AMOUNT_IMPLAUSIBLE,
                field,
                f"line amount {amount} is above CLAIMS_MAX_LINE_AMOUNT ({max_line}): check it"
                " in the EHR (a shifted decimal, cents in a dollars column?)",
                index,
            )
        return True
    if amount is None:
        found.add(ReasonCode.MISSING_FIELD, field, "line amount is missing", index)
    elif not isinstance(amount, Decimal) or not amount.is_finite():
        found.add(ReasonCode.AMOUNT_INVALID, field, "line amount is not a decimal number", index)
    elif amount <= 0:
        found.add(ReasonCode.AMOUNT_INVALID, field, f"line amount {amount} is not above 0", index)
    elif _has_more_than_two_decimals(amount):
        found.add(
            ReasonCode.AMOUNT_INVALID,
            field,
            f"line amount {amount} has more than 2 decimals",
            index,
        )
    return False


def significant_digits(value: Decimal) -> int:
    """Digits of a finite Decimal as pydantic's ``max_digits`` counts them: trailing zeros
    dropped, leading zeros of a fraction counted (``0.001`` has 3, ``1E+3`` has 4)."""
    _, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    if exponent >= 0:
        return len(digits) + exponent
    return max(len(digits), -exponent)


# Units repeat (1, 2, 0.5): each counted once. Equal Decimals (1, 1.0) have equal digits.
_units_digits = functools.lru_cache(maxsize=4096)(significant_digits)


def _check_units(found: _Findings, units: Any, index: int) -> None:
    if type(units) is Decimal and units.is_finite() and units > 0:
        if _units_digits(units) > MAX_UNITS_DIGITS:
            found.add(
                ReasonCode.UNITS_INVALID,
                "units",
                f"units have more than {MAX_UNITS_DIGITS} digits, more than a claim carries",
                index,
            )
        return
    if units is None:
        found.add(ReasonCode.MISSING_FIELD, "units", "units are missing", index)
    elif not isinstance(units, Decimal) or not units.is_finite():
        found.add(ReasonCode.UNITS_INVALID, "units", "units are not a decimal number", index)
    elif units <= 0:
        found.add(ReasonCode.UNITS_INVALID, "units", f"units {units} are not above 0", index)


@functools.lru_cache(maxsize=64)
def _positions(diagnosis_count: int) -> frozenset[str]:
    """The pointers a line may use when the claim has ``diagnosis_count`` diagnoses."""
    return frozenset(str(position) for position in range(1, diagnosis_count + 1))


def _check_pointers(found: _Findings, pointers: Any, positions: frozenset[str], index: int) -> None:
    if type(pointers) is list and 0 < len(pointers) <= MAX_POINTERS:
        try:
            if positions.issuperset(pointers) and len(set(pointers)) == len(pointers):
                return
        except TypeError:  # an unhashable pointer, reported below
            pass
    field = "diagnosis_code_pointers"
    if not isinstance(pointers, list):
        found.add(ReasonCode.POINTER_INVALID, field, "diagnosis pointers are not a list", index)
        return
    if not pointers:
        found.add(ReasonCode.POINTER_INVALID, field, "the line points at no diagnosis", index)
        return
    if len(pointers) > MAX_POINTERS:
        found.add(
            ReasonCode.POINTER_INVALID,
            field,
            f"the line points at {len(pointers)} diagnoses; at most {MAX_POINTERS} are allowed",
            index,
        )
    if len(set(map(repr, pointers))) != len(pointers):
        found.add(ReasonCode.POINTER_INVALID, field, "a diagnosis pointer is repeated", index)
    for pointer in pointers:
        if type(pointer) is not str or pointer not in positions:
            found.add(
                ReasonCode.POINTER_INVALID,
                field,
                f"diagnosis pointer {_quote(pointer)} is not a position in"
                f" 1..{len(positions)} of icd_codes",
                index,
            )


def _check_service_dates(
    found: _Findings, date_from: Any, date_to: Any, today: date, index: int
) -> None:
    if type(date_from) is date and type(date_to) is date and date_from <= date_to <= today:
        return
    dates: dict[str, date] = {}
    for field, value in (("service_date_from", date_from), ("service_date_to", date_to)):
        if value is None:
            found.add(ReasonCode.MISSING_FIELD, field, f"{field} is missing", index)
        elif not _is_date(value):
            found.add(ReasonCode.SERVICE_DATE_INVALID, field, f"{field} is not a date", index)
        else:
            dates[field] = value
    if len(dates) == 2 and date_from > date_to:
        found.add(
            ReasonCode.SERVICE_DATE_INVALID,
            "service_date_from",
            "service_date_from is after service_date_to",
            index,
        )
    future = [field for field, value in dates.items() if value > today]
    if future:
        found.add(
            ReasonCode.SERVICE_DATE_INVALID, future[0], f"{future[0]} is in the future", index
        )


def _check_modifiers(found: _Findings, modifiers: Any, index: int) -> None:
    field = "modifiers"
    if modifiers is None:
        return
    if not isinstance(modifiers, list):
        found.add(ReasonCode.MODIFIER_INVALID, field, "modifiers are not a list", index)
        return
    if len(modifiers) > MAX_MODIFIERS:
        found.add(
            ReasonCode.MODIFIER_INVALID,
            field,
            f"the line has {len(modifiers)} modifiers; at most {MAX_MODIFIERS} are allowed",
            index,
        )
    for modifier in modifiers:
        if not isinstance(modifier, str) or _MODIFIER.fullmatch(modifier) is None:
            found.add(
                ReasonCode.MODIFIER_INVALID,
                field,
                f"modifier {_quote(modifier)} is not 2 letters or digits",
                index,
            )
