"""Small realistic data for the claim-rule tests (and the validation benchmark): charge-line rows
in LINE_SCHEMA shape and assembled claims, valid unless a test overrides a field."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from claims_pipeline.sources.lines import LINE_COLUMNS

TODAY = date(2026, 4, 15)
SERVICE_DATE = date(2026, 3, 2)
VALID_NPI = "1234567893"
INVALID_NPI = "1234567890"  # the API documentation's example: fails the check digit

#: NPIs with a valid check digit (Luhn over 80840 + first 9 digits).
PROVIDER_NPIS = ("1234567893", "1987654328", "1456789019", "1678901236", "2098765433")
#: Billable (leaf) codes of ICD-10-CM April 2026, including 7th-character codes.
BILLABLE_CODES = (
    "M54.50", "E11.9", "I10", "J06.9", "G89.29", "Z00.00", "R51.9", "J02.9", "E78.5",
    "F41.1", "K21.9", "N39.0", "S93.401A", "M25.561", "Z23", "R05.9", "E66.9", "M54.59",
)  # fmt: skip
#: (code, line fee) pairs: CPT I, HCPCS level II, CPT II/III, PLA.
PROCEDURES = (
    ("99213", "150.00"),
    ("99214", "210.00"),
    ("97110", "80.50"),
    ("J1100", "12.75"),
    ("G0439", "175.00"),
    ("3074F", "0.01"),
    ("0042T", "95.00"),
    ("0001U", "300.00"),
)
PAYERS = (
    ("Aetna", "(800) 555-1234"),
    ("Cigna", "800.555.2345"),
    ("Humana", "1-800-555-3456"),
    ("UnitedHealthcare", "+1 800 555 4567"),
    ("Blue Cross", "8005555678"),
)
MODIFIER_TEXTS = (None, None, None, "25", "GT:95", "59 RT", "tc")
PLACES_OF_SERVICE = ("11", "11", "11", "2", "10", "22", "3")
#: One broken claim-level value each: what a bad night's rejections look like.
BROKEN_VALUES = (
    ("provider_npi", INVALID_NPI),
    ("claim_diagnosis_codes", "M54.50,M54.5"),
    ("payer_phone", "555-1234"),
    ("place_of_service", "30"),
    ("payer_name", None),
)


def line_row(**overrides: Any) -> dict[str, Any]:
    """One charge-line row with every LINE_SCHEMA column (a 99213 office visit)."""
    row: dict[str, Any] = {
        "service_date": SERVICE_DATE,
        "encounter_id": "1001",
        "claim_submitter_identifier": "42-1001",
        "visit_number": "1001",
        "patient_name": "John Doe",
        "patient_dob": date(1985, 4, 12),
        "patient_gender": "Male",
        "patient_member_id": "MEM987654",
        "payer_name": "Aetna",
        "payer_phone": "(800) 555-1234",
        "place_of_service": "11",
        "claim_diagnosis_codes": "M54.50,G89.29",
        "provider_name": "Dr. Smith",
        "provider_npi": VALID_NPI,
        "provider_street": "123 Medical Dr, Suite 100",
        "provider_city": "San Francisco",
        "provider_state": "CA",
        "provider_postal_code": "94102",
        "line_number": 1,
        "hcpcs_code": "99213",
        "modifiers": None,
        "units": None,
        "line_amount": "150.00",
        "line_service_date_from": None,
        "line_service_date_to": None,
        "line_diagnosis_codes": "M54.50,G89.29",
        "unreadable_columns": None,
    }
    unknown = set(overrides) - set(row)
    if unknown:
        raise KeyError(f"not LINE_SCHEMA columns: {sorted(unknown)}")
    row.update(overrides)
    return row


def encounter_rows(lines: list[dict[str, Any]] | None = None, **claim_level: Any) -> list[dict]:
    """The rows of one encounter: ``claim_level`` overrides apply to every row, each dict of
    ``lines`` to its own line (numbered 1, 2, ... unless given). Default: one 99213 line."""
    lines = [{}] if lines is None else lines
    return [
        line_row(**{"line_number": number, **claim_level, **line})
        for number, line in enumerate(lines, start=1)
    ]


def no_lines_row(**claim_level: Any) -> dict[str, Any]:
    """The single row of an encounter without procedure lines (every line column null)."""
    line_columns = {
        "line_number": None,
        "hcpcs_code": None,
        "modifiers": None,
        "units": None,
        "line_amount": None,
        "line_service_date_from": None,
        "line_service_date_to": None,
        "line_diagnosis_codes": None,
    }
    return line_row(**{**line_columns, **claim_level})


def charge_line(**overrides: Any) -> dict[str, Any]:
    """One assembled charge line (API field names), valid."""
    line: dict[str, Any] = {
        "hcpcs_code": "99213",
        "monetary_amount": Decimal("150.00"),
        "units": Decimal(1),
        "diagnosis_code_pointers": ["1", "2"],
        "service_date_from": SERVICE_DATE,
        "service_date_to": SERVICE_DATE,
        "modifiers": None,
    }
    line.update(overrides)
    return line


def claim(**overrides: Any) -> dict[str, Any]:
    """One assembled claim (API field names), valid on :data:`TODAY`."""
    assembled: dict[str, Any] = {
        "patient_name": "John Doe",
        "patient_dob": date(1985, 4, 12),
        "patient_gender": "M",
        "provider_name": "Dr. Smith",
        "provider_address": "123 Medical Dr, Suite 100, San Francisco, CA 94102",
        "provider_npi": VALID_NPI,
        "patient_member_id": "MEM987654",
        "payer_name": "Aetna",
        "claim_submitter_identifier": "42-1001",
        "facility_code_value": "11",
        "icd_codes": ["M54.50", "G89.29"],
        "visit_number": "1001",
        "payer_phone_number": "+18005551234",
        "charge_lines": [charge_line()],
    }
    assembled.update(overrides)
    return assembled


def random_encounter_rows(rng: random.Random, number: int) -> list[dict[str, Any]]:
    """A plausible encounter with 1-5 lines (mean about 3) drawn from ``rng``: the same seed
    gives the same rows. About 2% of encounters break a rule, as real nights do."""
    payer, phone = rng.choice(PAYERS)
    diagnoses = rng.sample(BILLABLE_CODES, rng.randint(1, 5))
    claim_level: dict[str, Any] = {
        "service_date": SERVICE_DATE - timedelta(days=number % 7),
        "encounter_id": str(100_000 + number),
        "claim_submitter_identifier": f"{number % 9973}-{100_000 + number}",
        "visit_number": str(100_000 + number),
        "patient_name": f"Patient {number}",
        "patient_dob": date(1940, 1, 1) + timedelta(days=rng.randrange(30_000)),
        "patient_gender": rng.choice(("Male", "Female", "M", "f", "UNK")),
        "patient_member_id": f"MEM{number:07d}",
        "payer_name": payer,
        "payer_phone": phone,
        "place_of_service": rng.choice(PLACES_OF_SERVICE),
        "claim_diagnosis_codes": ",".join(diagnoses),
        "provider_npi": rng.choice(PROVIDER_NPIS),
    }
    if rng.random() < 0.02:
        field, broken = rng.choice(BROKEN_VALUES)
        claim_level[field] = broken
    lines = []
    for _ in range(rng.choice((1, 2, 3, 3, 4, 5))):
        code, fee = rng.choice(PROCEDURES)
        units = rng.choice((None, None, "1", "2"))
        amount = Decimal(fee) * Decimal(units or 1)
        lines.append(
            {
                "hcpcs_code": code,
                "modifiers": rng.choice(MODIFIER_TEXTS),
                "units": units,
                "line_amount": str(amount),
                "line_diagnosis_codes": ",".join(rng.sample(diagnoses, min(len(diagnoses), 2))),
            }
        )
    return encounter_rows(lines, **claim_level)


def assert_line_schema(rows: list[dict[str, Any]]) -> None:
    """Every row has exactly the LINE_SCHEMA columns."""
    for row in rows:
        assert tuple(row) == LINE_COLUMNS, sorted(set(row) ^ set(LINE_COLUMNS))
