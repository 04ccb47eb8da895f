"""422 problems: where each problem is, and never what was submitted (unless the echo_phi
fault asks for it)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claims_pipeline.contract import CHARGE_LINE_FIELDS, CLAIM_FIELDS, ImportRequest
from claims_pipeline.emulator import FaultConfig, RunningEmulator
from claims_pipeline.emulator.faults import (
    add_fault_arguments,
    fault_arguments,
    faults_from_arguments,
)
from claims_pipeline.emulator.problems import (
    Problem,
    duplicate_problems,
    echo_detail,
    echoed_phi,
    validation_problems,
    with_echoed_phi,
)
from claims_pipeline_tests.emulator.factories import (
    MEMBER_ID,
    PATIENT_DOB,
    PATIENT_NAME,
    assert_no_phi,
    make_charge_line,
    make_claim,
    make_claims,
    post_claims,
)


def _problems(request: dict[str, Any]) -> list[Problem]:
    try:
        ImportRequest.model_validate_json(json.dumps(request))
    except ValidationError as exc:
        return validation_problems(exc, request)
    return []


# Values shaped like patient data: member ids, names, dates, free text with digits.
phi_like = (
    st.from_regex(r"[A-Z]{2,4}[0-9]{5,9}", fullmatch=True)
    | st.from_regex(r"[A-Z][a-z]{2,9} [A-Z][a-z]{2,12}", fullmatch=True)
    | st.from_regex(r"(19|20)[0-9]{2}-(1[3-9]|[2-9][0-9])-[0-9]{2}", fullmatch=True)
)


# The claim key is the one submitted value a problem names, on purpose.
claim_fields = st.sampled_from([f for f in CLAIM_FIELDS if f != "claim_submitter_identifier"])


@given(value=phi_like, field=claim_fields, in_list=st.booleans())
def test_a_claim_value_never_comes_back(value: str, field: str, in_list: bool) -> None:
    request = {"claims": [make_claim(**{field: [value] if in_list else value})]}

    assert value not in json.dumps(_problems(request))


@given(value=phi_like, field=st.sampled_from(CHARGE_LINE_FIELDS), in_list=st.booleans())
def test_a_charge_line_value_never_comes_back(value: str, field: str, in_list: bool) -> None:
    line = make_charge_line(**{field: [value] if in_list else value})
    request = {"claims": [make_claim(charge_lines=[make_charge_line(), line])]}

    problems = _problems(request)

    assert all(p["field"].startswith(f"charge_lines.1.{field}") for p in problems)
    assert value not in json.dumps(problems)


def test_a_message_that_quotes_the_value_is_replaced() -> None:
    # pydantic quotes the input in a few messages; the safety net must catch any of them.
    error = ValidationError.from_exception_data(
        "ImportRequest",
        [
            {
                "type": "value_error",
                "loc": ("claims", 0, "patient_name"),
                "input": "Jane Roe",
                "ctx": {"error": ValueError("Jane Roe is not allowed")},
            }
        ],
    )

    [problem] = validation_problems(error, {"claims": [make_claim("K-1")]})

    assert problem == {
        "claim_index": 0,
        "claim_submitter_identifier": "K-1",
        "field": "patient_name",
        "code": "value_error",
        "message": "invalid value (value_error)",
    }


@pytest.mark.parametrize(
    ("key", "readable"), [("K-1", "K-1"), ("", None), ("X" * 21, None), (17, None)]
)
def test_the_claim_key_is_named_only_when_valid(key: object, readable: str | None) -> None:
    problems = _problems({"claims": [make_claim(key, patient_gender=None)]})  # type: ignore[arg-type]

    assert {p["claim_submitter_identifier"] for p in problems} == {readable}


def test_duplicates_point_at_the_first_occurrence() -> None:
    keys = [("1234567893", "A"), ("1245319599", "A"), ("1234567893", "A")]

    assert duplicate_problems(keys) == [
        {
            "claim_index": 2,
            "claim_submitter_identifier": "A",
            "field": "claim_submitter_identifier",
            "code": "duplicate_claim",
            "message": (
                "claim 0 of this request has the same provider_npi and claim_submitter_identifier"
            ),
        }
    ]


# -- the echo_phi fault: a careless API that quotes the patient ------------------------------

ECHO_PATIENT = {
    "patient_name": "Mary O'Brien-Smith",
    "patient_member_id": "MEM987654",
    "patient_dob": "1980-03-07",
}


def test_the_echo_quotes_name_member_id_and_birth_date_in_several_spellings() -> None:
    echo = echoed_phi(make_claim(**ECHO_PATIENT))

    for spelling in (
        '"Mary O\'Brien-Smith"',
        "O'BRIEN-SMITH, MARY",
        "'Smith'",
        "MEM987654",
        "MEM-987654",
        "mem 987654",
        "987-654",
        "1980-03-07",
        "03/07/1980",
        "3/7/1980",
        "19800307",
    ):
        assert spelling in echo


@pytest.mark.parametrize("claim", [{}, "not a claim", {"patient_name": 7}, None])
def test_the_echo_of_a_claim_without_patient_data_is_empty(claim: Any) -> None:
    assert echoed_phi(claim) == ""


def test_the_echo_goes_into_problems_of_a_claim_only() -> None:
    of_claim = Problem(
        claim_index=1,
        claim_submitter_identifier="K-2",
        field=None,
        code="payer_rule",
        message="claim rejected by payer rules",
    )
    of_request = Problem(
        claim_index=None, claim_submitter_identifier=None, field="claims", code="x", message="m"
    )
    request = {"claims": [make_claim("K-1"), make_claim("K-2", **ECHO_PATIENT)]}

    echoed = with_echoed_phi([of_claim, of_request], request)

    assert echoed[0]["message"].startswith('claim rejected by payer rules: patient "Mary')
    assert echoed[0]["message"].endswith(echoed_phi(request["claims"][1]))
    assert echoed[1] == of_request
    assert of_claim["message"] == "claim rejected by payer rules"  # the input is untouched
    detail = echo_detail([of_claim, of_request, of_claim], request)
    assert detail == echoed_phi(request["claims"][1])
    assert echo_detail([of_request], request) == ""


def test_echo_phi_is_off_by_default_and_settable_from_the_command_line() -> None:
    assert FaultConfig().echo_phi is False
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    config = FaultConfig(echo_phi=True, reject_claims=("CLM-1",))

    assert faults_from_arguments(parser.parse_args(fault_arguments(config))) == config
    assert faults_from_arguments(parser.parse_args([])).echo_phi is False


def test_a_payer_rejection_echoes_the_patient_only_with_echo_phi(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    claims = make_claims(3)
    emulator.set_faults(reject_claims=["CLM-00001"])
    quiet = post_claims(api, claims)
    emulator.set_faults(reject_claims=["CLM-00001"], echo_phi=True)
    loud = post_claims(api, claims)

    assert quiet.status_code == loud.status_code == 422
    assert_no_phi(quiet.text)
    [problem] = loud.json()["errors"]
    assert problem["claim_index"] == 1
    for value in (PATIENT_NAME, MEMBER_ID, PATIENT_DOB, "07/04/1961", "TESTPATIENT, JANE Q"):
        assert value in problem["message"]
        assert value in loud.json()["detail"]
    assert emulator.claims() == []


def test_a_validation_problem_echoes_the_patient_with_echo_phi(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(echo_phi=True)

    response = post_claims(api, [make_claim(facility_code_value=None)])

    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert problem["field"] == "facility_code_value"
    assert PATIENT_NAME in problem["message"] and MEMBER_ID in problem["message"]
