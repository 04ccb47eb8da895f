"""Reason codes (one enum) and the structured problem a rule reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a claim is held back. Values are stable: analysts filter on them."""

    NPI_INVALID = "npi_invalid"
    CLAIM_ID_INVALID = "claim_id_invalid"
    MISSING_FIELD = "missing_field"
    DOB_INVALID = "dob_invalid"
    GENDER_INVALID = "gender_invalid"
    POS_INVALID = "pos_invalid"
    ICD_INVALID = "icd_invalid"
    ICD_NOT_BILLABLE = "icd_not_billable"
    TOO_MANY_DIAGNOSES = "too_many_diagnoses"
    HCPCS_INVALID = "hcpcs_invalid"
    MODIFIER_INVALID = "modifier_invalid"
    POINTER_INVALID = "pointer_invalid"
    UNITS_INVALID = "units_invalid"
    AMOUNT_INVALID = "amount_invalid"
    AMOUNT_IMPLAUSIBLE = "amount_implausible"
    SERVICE_DATE_INVALID = "service_date_invalid"
    PHONE_INVALID = "phone_invalid"
    UNINSURED = "uninsured"
    NO_CHARGE_LINES = "no_charge_lines"
    TOO_MANY_LINES = "too_many_lines"
    UNREADABLE_VALUE = "unreadable_value"
    DUPLICATE_CLAIM_KEY = "duplicate_claim_key"
    API_REJECTED = "api_rejected"


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule. ``message`` never contains patient data: it names the field, the line
    and the rule, and may quote codes (ICD, HCPCS, POS, modifiers) but no identities."""

    code: ReasonCode
    field: str
    message: str
    line_index: int | None = None  # 0-based index into charge_lines, None for claim level
