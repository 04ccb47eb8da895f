"""Small realistic wire claims and emulator configs for the emulator tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from claims_pipeline.emulator import EmulatorConfig

API_KEY = "test-key-5f1c9e2b7d"
TENANT_ID = 4217

# Patient data that must never come back in an error body.
PATIENT_NAME = "Jane Q Testpatient"
PATIENT_DOB = "1961-07-04"
MEMBER_ID = "MEMZ4471902"


def make_charge_line(**overrides: Any) -> dict[str, Any]:
    line = {
        "hcpcs_code": "99213",
        "monetary_amount": 150.00,
        "units": 1,
        "diagnosis_code_pointers": ["1"],
        "service_date_from": "2026-03-01",
        "service_date_to": "2026-03-01",
    }
    return {**line, **overrides}


def make_claim(key: str = "CLM-2026-001", **overrides: Any) -> dict[str, Any]:
    """A valid wire claim with the given claim_submitter_identifier."""
    claim = {
        "patient_name": PATIENT_NAME,
        "patient_dob": PATIENT_DOB,
        "patient_gender": "F",
        "provider_name": "Dr. Smith",
        "provider_address": "123 Medical Dr, Suite 100, San Francisco, CA 94102",
        "provider_npi": "1234567893",
        "patient_member_id": MEMBER_ID,
        "payer_name": "Aetna",
        "claim_submitter_identifier": key,
        "facility_code_value": "11",
        "icd_codes": ["M54.50"],
        "visit_number": "V12345",
        "payer_phone_number": "+18005551234",
        "charge_lines": [make_charge_line()],
    }
    return {**claim, **overrides}


def make_claims(count: int, prefix: str = "CLM") -> list[dict[str, Any]]:
    return [make_claim(f"{prefix}-{i:05d}") for i in range(count)]


def make_config(db_path: Path, **overrides: Any) -> EmulatorConfig:
    fields: dict[str, Any] = {"db_path": db_path, "api_key": API_KEY, "tenant_id": TENANT_ID}
    return EmulatorConfig(**{**fields, **overrides})


def post_claims(
    client: httpx.Client,
    claims: list[dict[str, Any]],
    tenant_id: Any = TENANT_ID,
    **kwargs: Any,
) -> httpx.Response:
    return client.post(
        "/claims-import", params={"tenant_id": tenant_id}, json={"claims": claims}, **kwargs
    )


def assert_no_phi(text: str) -> None:
    """The patient data of :func:`make_claim` and the API key appear nowhere in ``text``."""
    for secret in (PATIENT_NAME, PATIENT_DOB, MEMBER_ID, API_KEY):
        assert secret not in text
