"""Where every value of a claim comes from, per adapter, as plain data (the Dagster side turns
it into ``dagster/column_lineage`` and ``dagster/column_schema`` metadata in
``claims_pipeline/column_lineage.py``).

Two hops, each kept where it is decided:

- :data:`LINE_SOURCES`: per adapter, each LINE_SCHEMA column -> the EHR ``(table, column)``
  pairs it is read from (columns that only select or order a row, such as
  ``insurance_data.date``, are listed when they decide the value).
- :data:`CLAIM_FIELD_LINES`: each claim field (``charge_lines.*`` for line fields) -> the
  LINE_SCHEMA columns claim assembly builds it from.

:func:`claim_field_sources` composes them: claim field -> EHR table.column.
"""

from __future__ import annotations

from claims_pipeline.contract import CHARGE_LINE_FIELDS, CLAIM_FIELDS
from claims_pipeline.sources.lines import LINE_COLUMNS

Source = tuple[str, str]  # (table, column)

#: What each LINE_SCHEMA column holds (the ``ehr_encounters`` column descriptions).
LINE_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "service_date": "Date of service of the encounter.",
    "encounter_id": "The EHR's own key of the encounter (the claim is built per encounter).",
    "claim_submitter_identifier": "CLM01: the claim's stable key, at most 20 characters.",
    "visit_number": "The EHR's visit id (follow-up calls to the API are keyed by it).",
    "patient_name": "PHI. The patient's first and last name.",
    "patient_dob": "PHI. The patient's date of birth.",
    "patient_gender": "Administrative sex as the EHR spells it (Male, F, U, ...).",
    "patient_member_id": "PHI. Member id on the primary coverage in force on the service date.",
    "payer_name": "Payer of the primary coverage in force on the service date; null if none.",
    "payer_phone": "The payer's phone as the EHR stores it (normalised to E.164 later).",
    "place_of_service": "CMS place-of-service code: the encounter's, else the facility's.",
    "claim_diagnosis_codes": "Every diagnosis of the encounter, EHR order, comma-separated.",
    "provider_name": "Rendering provider of the line (a line-level provider overrides).",
    "provider_npi": "NPI of that provider.",
    "provider_street": "Provider (billing) address: street.",
    "provider_city": "Provider (billing) address: city.",
    "provider_state": "Provider (billing) address: state.",
    "provider_postal_code": "Provider (billing) address: ZIP code.",
    "line_number": "1-based position of the charge line in the encounter; null: no lines.",
    "hcpcs_code": "CPT/HCPCS procedure code of the line.",
    "modifiers": "Modifiers as the EHR stores them (25:59, 25 59, ...).",
    "units": "Units of service (decimal text); null means 1.",
    "line_amount": "Line total (price x units), decimal text.",
    "line_service_date_from": "First date of the line's service; null means service_date.",
    "line_service_date_to": "Last date of the line's service; null means the from date.",
    "line_diagnosis_codes": "The diagnoses this line points at, comma-separated, in order.",
    "unreadable_columns": "Source columns of the encounter whose value the database driver "
    "could not read (the value is null; the encounter is rejected as unreadable_value).",
}

_REFERENCE: dict[str, list[Source]] = {
    "service_date": [("encounters", "service_date")],
    "encounter_id": [("encounters", "id")],
    "claim_submitter_identifier": [("encounters", "id")],
    "visit_number": [("encounters", "visit_number")],
    "patient_name": [("patients", "first_name"), ("patients", "last_name")],
    "patient_dob": [("patients", "date_of_birth")],
    "patient_gender": [("patients", "sex")],
    "patient_member_id": [
        ("coverages", "member_id"),
        ("coverages", "priority"),
        ("coverages", "effective_from"),
        ("coverages", "effective_to"),
    ],
    "payer_name": [("payers", "name"), ("coverages", "payer_id")],
    "payer_phone": [("payers", "phone")],
    "place_of_service": [("encounters", "place_of_service"), ("facilities", "place_of_service")],
    "claim_diagnosis_codes": [("diagnoses", "icd10_code"), ("diagnoses", "sequence")],
    "provider_name": [
        ("providers", "first_name"),
        ("providers", "last_name"),
        ("providers", "credential"),
        ("charges", "provider_id"),
        ("encounters", "provider_id"),
    ],
    "provider_npi": [
        ("providers", "npi"),
        ("charges", "provider_id"),
        ("encounters", "provider_id"),
    ],
    "provider_street": [("facilities", "street")],
    "provider_city": [("facilities", "city")],
    "provider_state": [("facilities", "state")],
    "provider_postal_code": [("facilities", "postal_code")],
    "line_number": [("charges", "line_number")],
    "hcpcs_code": [("charges", "hcpcs_code")],
    "modifiers": [("charges", "modifiers")],
    "units": [("charges", "units")],
    "line_amount": [("charges", "line_amount")],
    "line_service_date_from": [("charges", "service_date_from")],
    "line_service_date_to": [("charges", "service_date_to")],
    "line_diagnosis_codes": [("charges", "diagnosis_codes")],
}

_OPENEMR: dict[str, list[Source]] = {
    "service_date": [("form_encounter", "date")],
    "encounter_id": [("form_encounter", "pid"), ("form_encounter", "encounter")],
    "claim_submitter_identifier": [("form_encounter", "pid"), ("form_encounter", "encounter")],
    "visit_number": [("form_encounter", "encounter")],
    "patient_name": [("patient_data", "fname"), ("patient_data", "lname")],
    "patient_dob": [("patient_data", "DOB")],
    "patient_gender": [("patient_data", "sex")],
    "patient_member_id": [
        ("insurance_data", "policy_number"),
        ("insurance_data", "type"),
        ("insurance_data", "date"),
        ("insurance_data", "provider"),
    ],
    "payer_name": [("insurance_companies", "name"), ("insurance_data", "provider")],
    "payer_phone": [
        ("phone_numbers", "area_code"),
        ("phone_numbers", "prefix"),
        ("phone_numbers", "number"),
        ("phone_numbers", "type"),
    ],
    "place_of_service": [("form_encounter", "pos_code"), ("facility", "pos_code")],
    "claim_diagnosis_codes": [("billing", "code"), ("billing", "code_type")],
    "provider_name": [
        ("users", "fname"),
        ("users", "lname"),
        ("billing", "provider_id"),
        ("form_encounter", "provider_id"),
    ],
    "provider_npi": [
        ("users", "npi"),
        ("billing", "provider_id"),
        ("form_encounter", "provider_id"),
    ],
    "provider_street": [("facility", "street"), ("form_encounter", "billing_facility")],
    "provider_city": [("facility", "city"), ("form_encounter", "billing_facility")],
    "provider_state": [("facility", "state"), ("form_encounter", "billing_facility")],
    "provider_postal_code": [
        ("facility", "postal_code"),
        ("form_encounter", "billing_facility"),
    ],
    "line_number": [("billing", "date"), ("billing", "id")],
    "hcpcs_code": [("billing", "code"), ("billing", "code_type")],
    "modifiers": [("billing", "modifier")],
    "units": [("billing", "units")],
    "line_amount": [("billing", "fee")],
    "line_service_date_from": [("form_encounter", "date")],
    "line_service_date_to": [("form_encounter", "date")],
    "line_diagnosis_codes": [("billing", "justify")],
}


def _any_column(sources: dict[str, list[Source]]) -> list[Source]:
    """Every source column: any of them may be the one the driver cannot read."""
    return list(dict.fromkeys(source for pairs in sources.values() for source in pairs))


_REFERENCE["unreadable_columns"] = _any_column(_REFERENCE)
_OPENEMR["unreadable_columns"] = _any_column(_OPENEMR)

#: The ``sql`` adapter's source is the user's query: each column comes from the query's
#: column of the same name (the query file is the lineage beyond that).
QUERY_TABLE = "ehr_query"
_SQL: dict[str, list[Source]] = {name: [(QUERY_TABLE, name)] for name in LINE_COLUMNS}

#: Per adapter (EHR_SCHEMA), each LINE_SCHEMA column -> the EHR (table, column) pairs behind it.
LINE_SOURCES: dict[str, dict[str, list[Source]]] = {
    "reference": _REFERENCE,
    "openemr": _OPENEMR,
    "sql": _SQL,
}

#: Each claim field of the import API -> the LINE_SCHEMA columns claim assembly builds it from.
CLAIM_FIELD_LINES: dict[str, list[str]] = {
    "patient_name": ["patient_name"],
    "patient_dob": ["patient_dob"],
    "patient_gender": ["patient_gender"],
    "provider_name": ["provider_name"],
    "provider_address": [
        "provider_street",
        "provider_city",
        "provider_state",
        "provider_postal_code",
    ],
    "provider_npi": ["provider_npi"],
    "patient_member_id": ["patient_member_id"],
    "payer_name": ["payer_name"],
    "claim_submitter_identifier": ["claim_submitter_identifier"],
    "facility_code_value": ["place_of_service"],
    "icd_codes": ["line_diagnosis_codes", "claim_diagnosis_codes"],
    "visit_number": ["visit_number"],
    "payer_phone_number": ["payer_phone"],
    "charge_lines.hcpcs_code": ["hcpcs_code"],
    "charge_lines.monetary_amount": ["line_amount"],
    "charge_lines.units": ["units"],
    "charge_lines.diagnosis_code_pointers": ["line_diagnosis_codes"],
    "charge_lines.service_date_from": ["line_service_date_from", "service_date"],
    "charge_lines.service_date_to": [
        "line_service_date_to",
        "line_service_date_from",
        "service_date",
    ],
    "charge_lines.modifiers": ["modifiers"],
}

#: Every field of the API's claim, line fields as ``charge_lines.<field>``.
CLAIM_FIELD_NAMES: tuple[str, ...] = tuple(
    name for name in CLAIM_FIELDS if name != "charge_lines"
) + tuple(f"charge_lines.{name}" for name in CHARGE_LINE_FIELDS)


def line_sources(schema: str) -> dict[str, list[Source]]:
    """Each LINE_SCHEMA column -> its EHR (table, column) pairs for adapter ``schema``; a
    KeyError names an unknown adapter."""
    return LINE_SOURCES[schema]


def claim_field_sources(schema: str) -> dict[str, list[Source]]:
    """Each claim field -> the EHR (table, column) pairs it comes from under adapter
    ``schema``, without repeats, in the order the line columns list them."""
    lines = line_sources(schema)
    return {
        field: list(dict.fromkeys(source for column in columns for source in lines[column]))
        for field, columns in CLAIM_FIELD_LINES.items()
    }
