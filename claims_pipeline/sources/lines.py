"""The shape every source adapter yields and ``ehr_encounters`` stores: one row per charge line,
claim-level columns repeated on each line of the encounter.

Rows of one encounter are contiguous and ordered by ``line_number``; encounters are ordered by
``service_date`` then ``encounter_id``. An encounter with no procedure lines is one row whose
``hcpcs_code`` is null, so that it is counted (and rejected) rather than lost.

A value the database driver cannot decode or convert (text that is not UTF-8, a DATE column
holding text) is null, and ``unreadable_columns`` names its source column, so that one bad value
rejects one encounter (``unreadable_value``) instead of failing the whole extract.

List-valued columns (diagnosis codes) are strings separated by ``,``; modifiers keep the
EHR's raw text (``25:59``, ``25 59``) and are normalised by claim assembly. Money is a decimal
string so that no source type loses a cent on the way.
"""

from __future__ import annotations

import pyarrow as pa

LINE_SCHEMA = pa.schema(
    [
        # encounter (claim) level
        pa.field("service_date", pa.date32(), nullable=False),
        pa.field("encounter_id", pa.string(), nullable=False),  # the source's own key
        pa.field("claim_submitter_identifier", pa.string(), nullable=False),
        pa.field("visit_number", pa.string()),
        pa.field("patient_name", pa.string()),
        pa.field("patient_dob", pa.date32()),
        pa.field("patient_gender", pa.string()),  # raw EHR value: Male, f, U, ...
        pa.field("patient_member_id", pa.string()),
        pa.field("payer_name", pa.string()),
        pa.field("payer_phone", pa.string()),  # raw: (800) 555-1234, 800.555.1234, ...
        pa.field("place_of_service", pa.string()),  # raw: "11", "3"
        pa.field("claim_diagnosis_codes", pa.string()),  # all encounter diagnoses, EHR order
        # provider: resolved per line (a line-level provider overrides the encounter's)
        pa.field("provider_name", pa.string()),
        pa.field("provider_npi", pa.string()),
        pa.field("provider_street", pa.string()),
        pa.field("provider_city", pa.string()),
        pa.field("provider_state", pa.string()),
        pa.field("provider_postal_code", pa.string()),
        # charge line level (null on the single row of an encounter without lines)
        pa.field("line_number", pa.int32()),
        pa.field("hcpcs_code", pa.string()),
        pa.field("modifiers", pa.string()),
        pa.field("units", pa.string()),  # decimal text; null means 1
        pa.field("line_amount", pa.string()),  # decimal text: the line total
        pa.field("line_service_date_from", pa.date32()),  # null means service_date
        pa.field("line_service_date_to", pa.date32()),
        pa.field("line_diagnosis_codes", pa.string()),  # the diagnoses this line points at
        # set by the adapter, not read from the EHR: the source columns (table.column) of the
        # encounter whose value the driver could not decode or convert; such a value is null
        # here and the encounter is rejected as unreadable_value
        pa.field("unreadable_columns", pa.string()),
    ]
)

LINE_COLUMNS: tuple[str, ...] = tuple(LINE_SCHEMA.names)
#: The column an adapter fills itself: a ``sql`` query file does not return it.
UNREADABLE_COLUMNS = "unreadable_columns"

#: Columns whose values identify a patient: never logged, never in metadata.
PHI_COLUMNS: frozenset[str] = frozenset({"patient_name", "patient_dob", "patient_member_id"})
