"""422 problems: where each problem is, and never what was submitted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claims_pipeline.contract import CHARGE_LINE_FIELDS, CLAIM_FIELDS, ImportRequest
from claims_pipeline.emulator.problems import Problem, duplicate_problems, validation_problems
from claims_pipeline_tests.emulator.factories import make_charge_line, make_claim


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
