"""What is wrong with an import request, told without repeating any submitted value.

A 422 body names the claim (its index, and its ``claim_submitter_identifier`` when that is
valid), the field as a dotted path and what is wrong. It never carries pydantic's ``input``:
a rejected value can be a patient's name, date of birth or member id.

Unless asked to: with the ``echo_phi`` fault, :func:`with_echoed_phi` makes every problem of
a claim quote that claim's patient, and :func:`echo_detail` gives them all for the body's
``detail``, as some real APIs do, in the spellings such APIs use (``"Mary O'Brien-Smith"
(O'BRIEN-SMITH, MARY)``, ``MEM-987654``, ``03/07/1980``), so that tests can prove the client
scrubs what it keeps.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, TypedDict

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from claims_pipeline.contract import Claim

# Unknown keys are reported by name (a misspelt field is the usual cause), but only names
# shaped like a field: a key can be anything a client put there, patient data included.
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY_FIELD = "claim_submitter_identifier"
_KEY_MAX_LENGTH: int = next(
    rule.max_length
    for rule in Claim.model_fields[_KEY_FIELD].metadata
    if hasattr(rule, "max_length")
)


class Problem(TypedDict):
    """One thing wrong with one claim (``claim_index`` None: with the request as a whole)."""

    claim_index: int | None
    claim_submitter_identifier: str | None
    field: str | None
    code: str
    message: str


def readable_key(raw_claim: Any) -> str | None:
    """The claim's ``claim_submitter_identifier`` if it is a valid one, else None."""
    if not isinstance(raw_claim, dict):
        return None
    key = raw_claim.get(_KEY_FIELD)
    if isinstance(key, str) and 1 <= len(key) <= _KEY_MAX_LENGTH:
        return key
    return None


def validation_problems(error: ValidationError, raw_request: Any) -> list[Problem]:
    """One :class:`Problem` per pydantic error of validating ``raw_request`` as ImportRequest."""
    raw_claims = raw_request.get("claims") if isinstance(raw_request, dict) else None
    problems: list[Problem] = []
    for detail in error.errors(include_url=False, include_context=False):
        location = list(detail["loc"])
        claim_index = None
        key = None
        if len(location) >= 2 and location[0] == "claims" and isinstance(location[1], int):
            claim_index = location[1]
            location = location[2:]
            if isinstance(raw_claims, list) and claim_index < len(raw_claims):
                key = readable_key(raw_claims[claim_index])
        problems.append(
            Problem(
                claim_index=claim_index,
                claim_submitter_identifier=key,
                field=_dotted(location, detail) if location or claim_index is None else None,
                code=detail["type"],
                message=_safe_message(detail),
            )
        )
    return problems


def duplicate_problems(keys: list[tuple[str, str]]) -> list[Problem]:
    """A problem for each claim whose (provider_npi, claim_submitter_identifier) came earlier."""
    first_index: dict[tuple[str, str], int] = {}
    problems: list[Problem] = []
    for index, key in enumerate(keys):
        earlier = first_index.setdefault(key, index)
        if earlier != index:
            problems.append(
                Problem(
                    claim_index=index,
                    claim_submitter_identifier=key[1],
                    field=_KEY_FIELD,
                    code="duplicate_claim",
                    message=(
                        f"claim {earlier} of this request has the same provider_npi and "
                        "claim_submitter_identifier"
                    ),
                )
            )
    return problems


def _dotted(location: list[int | str], detail: ErrorDetails) -> str:
    if not location:
        return "body"
    if detail["type"] == "extra_forbidden" and not _FIELD_NAME.match(str(location[-1])):
        location = [*location[:-1], "<unknown field>"]
    return ".".join(str(part) for part in location)


def _safe_message(detail: ErrorDetails) -> str:
    # pydantic's messages describe the expectation, not the value, except for a few error
    # types (tags, UUIDs, custom validators) that quote the input: those get a neutral text.
    value = detail.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if text and text in detail["msg"]:
            return f"invalid value ({detail['type']})"
    return detail["msg"]


def with_echoed_phi(problems: list[Problem], raw_request: Any) -> list[Problem]:
    """``problems`` with the patient data of each problem's claim added to its message (the
    ``echo_phi`` fault: a careless API, for tests of the client's scrubbing)."""
    raw_claims = raw_request.get("claims") if isinstance(raw_request, dict) else None
    if not isinstance(raw_claims, list):
        return problems
    echoed: list[Problem] = []
    for problem in problems:
        index = problem["claim_index"]
        if index is not None and index < len(raw_claims):
            echo = echoed_phi(raw_claims[index])
            if echo:
                problem = Problem(**{**problem, "message": f"{problem['message']}: {echo}"})
        echoed.append(problem)
    return echoed


def echo_detail(problems: list[Problem], raw_request: Any) -> str:
    """The patient data of the claims ``problems`` name, one claim after the other (the
    ``detail`` of a 422 with the ``echo_phi`` fault)."""
    raw_claims = raw_request.get("claims") if isinstance(raw_request, dict) else None
    if not isinstance(raw_claims, list):
        return ""
    indexes = dict.fromkeys(p["claim_index"] for p in problems if p["claim_index"] is not None)
    echoes = (echoed_phi(raw_claims[i]) for i in indexes if i < len(raw_claims))
    return "; ".join(echo for echo in echoes if echo)


def echoed_phi(raw_claim: Any) -> str:
    """The claim's patient name, member id and date of birth, each as given and reformatted:
    ``patient "Mary O'Brien-Smith" (O'BRIEN-SMITH, MARY; 'Smith'), member MEM987654
    (MEM-987654, mem 987654, 987-654), born 1980-03-07 (03/07/1980, 3/7/1980, 19800307)``.
    Empty for a claim without any of them."""
    if not isinstance(raw_claim, dict):
        return ""
    said: list[str] = []
    name = raw_claim.get("patient_name")
    if isinstance(name, str) and name.strip():
        words = name.split()
        last, first = words[-1], " ".join(words[:-1])
        shown = f"{last}, {first}".upper() if first else last.upper()
        pieces = "; ".join(f"'{piece}'" for piece in last.split("-")[1:])
        said.append(f'patient "{name}" ({shown}{"; " + pieces if pieces else ""})')
    member_id = raw_claim.get("patient_member_id")
    if isinstance(member_id, str) and member_id.strip():
        letters = member_id.rstrip("0123456789")
        digits = member_id[len(letters) :]
        spellings = [f"{letters}-{digits}", f"{letters.lower()} {digits}"] if letters else []
        if len(digits) >= 2:
            spellings.append(f"{digits[: len(digits) // 2]}-{digits[len(digits) // 2 :]}")
        said.append(f"member {member_id}" + (f" ({', '.join(spellings)})" if spellings else ""))
    born = raw_claim.get("patient_dob")
    if isinstance(born, str) and born.strip():
        try:
            day = date.fromisoformat(born)
        except ValueError:
            said.append(f"born {born}")
        else:
            said.append(
                f"born {born} ({day.month:02d}/{day.day:02d}/{day.year}, "
                f"{day.month}/{day.day}/{day.year}, {day:%Y%m%d})"
            )
    return ", ".join(said)
