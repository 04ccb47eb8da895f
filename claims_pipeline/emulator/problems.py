"""What is wrong with an import request, told without repeating any submitted value.

A 422 body names the claim (its index, and its ``claim_submitter_identifier`` when that is
valid), the field as a dotted path and what is wrong. It never carries pydantic's ``input``:
a rejected value can be a patient's name, date of birth or member id.
"""

from __future__ import annotations

import re
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
