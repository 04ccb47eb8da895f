import json
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claims_pipeline.contract import (
    CHARGE_LINE_FIELDS,
    CLAIM_FIELDS,
    MAX_CHARGE_LINES,
    MAX_WIRE_AMOUNT,
    Claim,
    ImportRequest,
    ImportResponse,
    canonical_json,
    claim_to_wire,
    content_hash,
)

WIRE_CLAIM = {
    "patient_name": "Jane Roe",
    "patient_dob": "1985-04-12",
    "patient_gender": "F",
    "provider_name": "Dr. Smith",
    "provider_address": "123 Medical Dr, Suite 100, San Francisco, CA 94102",
    "provider_npi": "1234567893",
    "patient_member_id": "MEM987654",
    "payer_name": "Aetna",
    "claim_submitter_identifier": "CLM-2026-001",
    "facility_code_value": "11",
    "icd_codes": ["M54.50", "G89.29"],
    "visit_number": "V12345",
    "payer_phone_number": "+18005551234",
    "charge_lines": [
        {
            "hcpcs_code": "99213",
            "monetary_amount": 150.1,
            "units": 1,
            "diagnosis_code_pointers": ["1", "2"],
            "service_date_from": "2026-03-01",
            "service_date_to": "2026-03-01",
            "modifiers": ["25"],
        }
    ],
}


def test_field_names_are_exactly_the_api_contract():
    assert set(CLAIM_FIELDS) == {
        "patient_name",
        "patient_dob",
        "patient_gender",
        "provider_name",
        "provider_address",
        "provider_npi",
        "patient_member_id",
        "payer_name",
        "claim_submitter_identifier",
        "facility_code_value",
        "icd_codes",
        "visit_number",
        "payer_phone_number",
        "charge_lines",
    }
    assert set(CHARGE_LINE_FIELDS) == {
        "hcpcs_code",
        "monetary_amount",
        "units",
        "diagnosis_code_pointers",
        "service_date_from",
        "service_date_to",
        "modifiers",
    }


def test_round_trip_keeps_money_exact_inside_and_numbers_on_the_wire():
    claim = Claim.model_validate(WIRE_CLAIM)
    line = claim.charge_lines[0]
    assert line.monetary_amount == Decimal("150.1")
    assert isinstance(line.monetary_amount, Decimal)
    assert claim.patient_dob == date(1985, 4, 12)
    wire = claim_to_wire(claim)
    assert wire == WIRE_CLAIM
    text = json.dumps(wire)
    assert '"monetary_amount": 150.1' in text and '"units": 1' in text
    assert '"patient_dob": "1985-04-12"' in text


def test_decimal_amounts_serialise_as_json_numbers():
    claim = Claim.model_validate(
        WIRE_CLAIM
        | {"charge_lines": [WIRE_CLAIM["charge_lines"][0] | {"monetary_amount": "99.99"}]}
    )
    assert claim_to_wire(claim)["charge_lines"][0]["monetary_amount"] == 99.99


def test_fifty_lines_fit_a_claim():
    lines = WIRE_CLAIM["charge_lines"] * MAX_CHARGE_LINES
    assert len(Claim.model_validate(WIRE_CLAIM | {"charge_lines": lines}).charge_lines) == 50


def _wire_text_of(amount: Decimal, units: Decimal) -> str:
    line = WIRE_CLAIM["charge_lines"][0] | {"monetary_amount": amount, "units": units}
    claim = Claim.model_validate(WIRE_CLAIM | {"charge_lines": [line]})
    return canonical_json(claim_to_wire(claim))


@given(
    amount=st.decimals(min_value=Decimal("0.01"), max_value=MAX_WIRE_AMOUNT, places=2),
    units=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("999999999"), places=6),
)
def test_every_amount_the_contract_allows_is_exact_on_the_wire(amount, units):
    """The text posted (and hashed) reads back as the same decimal: no float artefact such as
    0.30000000000000004 or a lost cent at 99999999.99."""
    sent = json.loads(_wire_text_of(amount, units), parse_float=Decimal)["charge_lines"][0]
    assert Decimal(sent["monetary_amount"]) == amount
    assert Decimal(sent["units"]) == units


@pytest.mark.parametrize(
    "amount", ["0.01", "0.1", "0.3", "1.10", "19.99", "12345678.91", "99999999.99"]
)
def test_the_amounts_floats_get_wrong_are_sent_as_written(amount):
    text = _wire_text_of(Decimal(amount), Decimal(1))
    assert f'"monetary_amount":{Decimal(amount).normalize():f}' in text


def test_optional_modifiers_are_left_out_when_absent():
    line = {k: v for k, v in WIRE_CLAIM["charge_lines"][0].items() if k != "modifiers"}
    wire = claim_to_wire(Claim.model_validate(WIRE_CLAIM | {"charge_lines": [line]}))
    assert "modifiers" not in wire["charge_lines"][0]


def test_request_and_response_models():
    request = ImportRequest.model_validate({"claims": [WIRE_CLAIM]})
    assert request.claims[0].claim_submitter_identifier == "CLM-2026-001"
    response = ImportResponse.model_validate_json(
        '{"success": true, "claim_ids": [7], "total_claims": 1}'
    )
    assert response.claim_ids == [7]


@pytest.mark.parametrize(
    "change",
    [
        {"claim_submitter_identifier": "X" * 21},
        {"provider_npi": "12345"},
        {"patient_dob": "1985-13-40"},
        {"facility_code_value": "1"},
        {"charge_lines": []},
        {"charge_lines": WIRE_CLAIM["charge_lines"] * 51},
        {"charge_lines": [WIRE_CLAIM["charge_lines"][0] | {"monetary_amount": "100000000.00"}]},
        {"charge_lines": [WIRE_CLAIM["charge_lines"][0] | {"monetary_amount": "10.005"}]},
        {"charge_lines": [WIRE_CLAIM["charge_lines"][0] | {"units": "1.234567890123456"}]},
        {"unexpected": "field"},
    ],
)
def test_shape_errors_are_refused(change):
    with pytest.raises(ValidationError):
        Claim.model_validate(WIRE_CLAIM | change)


def test_content_hash_is_canonical():
    reordered = dict(reversed(list(WIRE_CLAIM.items())))
    assert content_hash(reordered) == content_hash(WIRE_CLAIM)
    assert canonical_json(reordered) == canonical_json(WIRE_CLAIM)
    changed = WIRE_CLAIM | {"icd_codes": ["M54.50"]}
    assert content_hash(changed) != content_hash(WIRE_CLAIM)


def _standard(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@given(_JSON_VALUES)
def test_canonical_json_is_the_standard_librarys_text_for_any_json_value(value):
    # The fast encoder must never change a byte: floats of any size (exponents included),
    # NaN, big integers, any character.
    assert canonical_json(value) == _standard(value)


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=MAX_WIRE_AMOUNT, places=2),
    st.decimals(min_value=Decimal("1E-9"), max_value=Decimal("1E+14"), allow_nan=False),
)
def test_canonical_json_of_wire_amounts_and_units_is_the_standard_librarys(amount, units):
    from claims_pipeline.contract import wire_number

    line = {"monetary_amount": wire_number(amount), "units": wire_number(units)}
    assert canonical_json(line) == _standard(line)


@pytest.mark.parametrize(
    "value", [1e-05, 4.2e-05, -7e-06, 1e16, 1.5e300, float("nan"), 2**64, "\ud800 lone"]
)
def test_canonical_json_where_orjson_would_differ(value):
    assert canonical_json({"x": [value]}) == _standard({"x": [value]})


def test_canonical_json_still_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        canonical_json({"when": date(2026, 1, 2)})
