"""Rendering claims for humans without PHI, and scrubbing text that may carry it.

Everything a person reads (logs, Dagster metadata, error messages, the CLI) goes through here:
claim key, codes and amounts are shown; names, dates of birth, member ids and addresses never.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Claim fields that identify a patient (wire names) and are never shown.
PHI_FIELDS: tuple[str, ...] = ("patient_name", "patient_dob", "patient_member_id")

_MAX_MESSAGE = 300


def mask_member_id(member_id: str | None) -> str:
    """``****6543``: enough for staff to tell two members apart, not enough to identify one."""
    if not member_id:
        return ""
    tail = member_id[-4:] if len(member_id) > 6 else ""
    return "****" + tail


def claim_preview(wire_claim: Mapping[str, Any]) -> dict[str, Any]:
    """A claim as analysts may see it: key, provider NPI, payer, codes, amounts, masked member."""
    lines = wire_claim.get("charge_lines") or []
    return {
        "claim_submitter_identifier": wire_claim.get("claim_submitter_identifier"),
        "provider_npi": wire_claim.get("provider_npi"),
        "payer_name": wire_claim.get("payer_name"),
        "member": mask_member_id(wire_claim.get("patient_member_id")),
        "icd_codes": ",".join(wire_claim.get("icd_codes") or []),
        "hcpcs_codes": ",".join(str(line.get("hcpcs_code")) for line in lines),
        "total_amount": str(sum(_decimal(line.get("monetary_amount")) for line in lines)),
    }


def _decimal(value: Any):
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def sensitive_values(wire_claims: Iterable[Mapping[str, Any]]) -> set[str]:
    """The PHI strings of these claims that must not appear in anything recorded."""
    values: set[str] = set()
    for claim in wire_claims:
        for field in PHI_FIELDS:
            value = claim.get(field)
            if value:
                values.add(str(value))
                # names also leak word by word ("Doe" in "Doe, John")
                if field == "patient_name":
                    values.update(part for part in str(value).split() if len(part) > 2)
    return values


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given PHI value or secret replaced by ``[redacted]``, date-like and
    long digit runs masked, and the result truncated: safe to record from an untrusted source
    such as an API error body."""
    for value in sorted((v for v in secrets if v), key=len, reverse=True):
        text = re.sub(re.escape(value), "[redacted]", text, flags=re.IGNORECASE)
    text = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", "[date]", text)
    text = re.sub(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", "[date]", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return text
