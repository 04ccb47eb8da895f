"""The claims-import API's wire contract: request, Claim, ChargeLine and response.

This is the one module that spells the API's field names. Money is ``Decimal`` inside the
project and a JSON number on the wire, exact to the cent: an amount has at most 10 digits, 2 of
them cents (at most :data:`MAX_WIRE_AMOUNT`), and units at most 15 significant digits, so the
shortest float text that :func:`wire_number` sends reads back as the very same decimal (a
double holds any 15 significant digits exactly). Dates are ``YYYY-MM-DD``. The models check
the shape of a claim (types, formats, sizes); the payer rules (check digits, code sets,
pointers) live in ``claims_pipeline.rules``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter

#: The largest amount the wire carries exactly: 10 digits, 2 of them cents.
MAX_WIRE_AMOUNT = Decimal("99999999.99")
MAX_AMOUNT_DIGITS = 10
#: Significant digits of units (X12 R: 15 digits), all of which a double holds exactly.
MAX_UNITS_DIGITS = 15
#: Service lines per claim: loop 2400 of an 837P repeats at most 50 times.
MAX_CHARGE_LINES = 50


def wire_number(value: Decimal) -> int | float:
    """A JSON number for a Decimal: integral values as ints, others as their shortest float,
    whose text is the same number when the Decimal has at most 15 significant digits (every
    amount and units value the models below accept)."""
    return int(value) if value == value.to_integral_value() else float(value)


WireDecimal = Annotated[
    Decimal, PlainSerializer(wire_number, return_type=int | float, when_used="json")
]


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChargeLine(_WireModel):
    hcpcs_code: str = Field(min_length=1)
    monetary_amount: Annotated[WireDecimal, Field(max_digits=MAX_AMOUNT_DIGITS, decimal_places=2)]
    units: Annotated[WireDecimal, Field(max_digits=MAX_UNITS_DIGITS)]
    diagnosis_code_pointers: list[str] = Field(min_length=1)
    service_date_from: date
    service_date_to: date
    modifiers: list[str] | None = None


class Claim(_WireModel):
    patient_name: str = Field(min_length=1)
    patient_dob: date
    patient_gender: str
    provider_name: str = Field(min_length=1)
    provider_address: str = Field(min_length=1)
    provider_npi: str = Field(pattern=r"^\d{10}$")
    patient_member_id: str = Field(min_length=1)
    payer_name: str = Field(min_length=1)
    claim_submitter_identifier: str = Field(min_length=1, max_length=20)
    facility_code_value: str = Field(pattern=r"^\d{2}$")
    icd_codes: list[str] = Field(min_length=1)
    visit_number: str = Field(min_length=1)
    payer_phone_number: str = Field(pattern=r"^\+[1-9]\d{6,14}$")
    charge_lines: list[ChargeLine] = Field(min_length=1, max_length=MAX_CHARGE_LINES)


class ImportRequest(_WireModel):
    claims: list[Claim]


class ImportResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    success: bool
    claim_ids: list[int]
    total_claims: int


CLAIM_FIELDS: tuple[str, ...] = tuple(Claim.model_fields)
CHARGE_LINE_FIELDS: tuple[str, ...] = tuple(ChargeLine.model_fields)

claims_adapter: TypeAdapter[list[Claim]] = TypeAdapter(list[Claim])


def claim_to_wire(claim: Claim) -> dict[str, Any]:
    """The JSON-ready dict of one claim, exactly as it is posted (optional fields left out)."""
    return claim.model_dump(mode="json", exclude_none=True)


def canonical_json(payload: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces) used for hashing and storage: exactly
    ``json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.

    Written by orjson (about six times faster), whose text is the standard library's for every
    value a claim holds. Where the two could differ, the standard library writes it: floats
    either writes with an exponent (both always sign it: ``e-``/``e+``), floats below 1e-4
    that orjson writes positionally (``0.0000``), NaN and infinities (orjson writes ``null``),
    and what orjson refuses (integers past 64 bits, lone surrogates, non-text keys). A text
    that merely contains one of these markers also goes through ``json.dumps``: slower, never
    different. Four substring tests cost a third of a ``json.dumps``; a regular expression
    cost more than ``json.dumps`` itself."""
    try:
        fast = orjson.dumps(payload, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: let json.dumps encode or raise as it always has
        return _standard_json(payload)
    if b"e-" in fast or b"e+" in fast or b"0.0000" in fast or b"null" in fast:
        return _standard_json(payload)
    return fast.decode()


def _standard_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Dates, dataclasses and str/int/dict/list subclasses are left to json.dumps (orjson would
# encode some that json.dumps refuses, or encode them differently).
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def content_hash(wire_claim: dict[str, Any]) -> str:
    """SHA-256 of a wire claim's canonical JSON: equal hashes mean the API holds equal content."""
    return canonical_hash(canonical_json(wire_claim))


def canonical_hash(canonical: str) -> str:
    """content_hash of a claim already serialised by canonical_json (no second encoding)."""
    return hashlib.sha256(canonical.encode()).hexdigest()
