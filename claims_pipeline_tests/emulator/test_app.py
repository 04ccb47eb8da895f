"""The import API over real HTTP: auth, validation, upsert, idempotency, the read-only views."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from claims_pipeline.contract import ImportResponse, content_hash
from claims_pipeline.emulator import RunningEmulator
from claims_pipeline_tests.emulator.factories import (
    MEMBER_ID,
    PATIENT_DOB,
    PATIENT_NAME,
    TENANT_ID,
    assert_no_phi,
    make_charge_line,
    make_claim,
    make_claims,
    post_claims,
)

# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong-key"}, {"x-api-key": ""}])
def test_missing_or_wrong_key_is_401(emulator: RunningEmulator, headers: dict[str, str]) -> None:
    response = httpx.post(
        f"{emulator.url}/claims-import",
        params={"tenant_id": TENANT_ID},
        json={"claims": [make_claim()]},
        headers=headers,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert_no_phi(response.text)
    assert "wrong-key" not in response.text
    assert emulator.claims() == []


@pytest.mark.parametrize("tenant_id", [None, "", "abc", "4217.0", "-4217", TENANT_ID + 1])
def test_tenant_other_than_the_keys_is_403(api: httpx.Client, tenant_id: object) -> None:
    params = {} if tenant_id is None else {"tenant_id": tenant_id}

    response = api.post("/claims-import", params=params, json={"claims": [make_claim()]})

    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden"
    assert "tenant_id" in body["message"]
    assert_no_phi(response.text)


def test_wrong_key_with_wrong_tenant_is_still_401(emulator: RunningEmulator) -> None:
    response = httpx.post(
        f"{emulator.url}/claims-import",
        params={"tenant_id": "nope"},
        json={"claims": [make_claim()]},
        headers={"x-api-key": "wrong"},
    )

    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/_emulator/claims", "/_emulator/stats", "/_emulator/faults"])
def test_emulator_views_need_the_key(emulator: RunningEmulator, path: str) -> None:
    response = httpx.get(f"{emulator.url}{path}", params={"tenant_id": TENANT_ID})

    assert response.status_code == 401


def test_health_needs_no_key(emulator: RunningEmulator) -> None:
    assert httpx.get(f"{emulator.url}/_emulator/health").json() == {"status": "ok"}


# --- validation ------------------------------------------------------------------------------


def test_422_names_claim_index_key_and_dotted_field_without_phi(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    bad_line = make_charge_line(units="one", service_date_from=PATIENT_DOB + "x")
    claims = [
        make_claim("CLM-OK"),
        make_claim("CLM-BAD", patient_dob=PATIENT_NAME, charge_lines=[bad_line]),
        make_claim("CLM-BAD-2", patient_member_id=12345678, payer_phone_number=MEMBER_ID),
    ]

    response = post_claims(api, claims)

    assert response.status_code == 422
    body = response.json()
    problems = {(p["claim_index"], p["field"]): p for p in body["errors"]}
    assert set(problems) == {
        (1, "patient_dob"),
        (1, "charge_lines.0.units"),
        (1, "charge_lines.0.service_date_from"),
        (2, "patient_member_id"),
        (2, "payer_phone_number"),
    }
    assert problems[(1, "charge_lines.0.units")]["claim_submitter_identifier"] == "CLM-BAD"
    assert all(p["message"] for p in body["errors"])
    assert_no_phi(response.text)
    assert "12345678" not in response.text
    keys = {"claim_index", "claim_submitter_identifier", "field", "code", "message"}
    assert all(set(problem) == keys for problem in body["errors"])
    assert emulator.claims() == []


def test_unknown_fields_are_named_only_when_shaped_like_a_field(api: httpx.Client) -> None:
    claim = make_claim(patient_ssn="123-45-6789", **{MEMBER_ID: "x"})

    response = post_claims(api, [claim])

    assert response.status_code == 422
    fields = sorted(p["field"] for p in response.json()["errors"])
    assert fields == ["<unknown field>", "patient_ssn"]
    assert "123-45-6789" not in response.text
    assert_no_phi(response.text)


def test_unreadable_key_is_left_out(api: httpx.Client) -> None:
    response = post_claims(api, [make_claim("X" * 21)])

    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert problem["field"] == "claim_submitter_identifier"
    assert problem["claim_submitter_identifier"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "claims"), ({"claims": "all"}, "claims"), ([], "body"), ({"claims": [], "x": 1}, "x")],
)
def test_request_shape_problems_have_no_claim_index(
    api: httpx.Client, body: object, field: str
) -> None:
    response = api.post("/claims-import", params={"tenant_id": TENANT_ID}, json=body)

    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert problem["claim_index"] is None
    assert problem["field"] == field


def test_body_that_is_not_json_is_400(api: httpx.Client) -> None:
    response = api.post(
        "/claims-import", params={"tenant_id": TENANT_ID}, content=b'{"claims": [NaN'
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


def test_duplicate_keys_within_one_request_are_422_and_nothing_is_stored(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    claims = [make_claim("A"), make_claim("B"), make_claim("A"), make_claim("A")]
    other_provider = make_claim("B", provider_npi="1245319599")

    response = post_claims(api, [*claims, other_provider])

    assert response.status_code == 422
    duplicates = response.json()["errors"]
    assert [(p["claim_index"], p["claim_submitter_identifier"]) for p in duplicates] == [
        (2, "A"),
        (3, "A"),
    ]
    assert all("claim 0" in p["message"] for p in duplicates)
    assert emulator.claims() == []


# --- upsert ----------------------------------------------------------------------------------


def test_new_claims_get_the_next_ids_in_request_order(api: httpx.Client) -> None:
    first = post_claims(api, [make_claim("A"), make_claim("B")])
    second = post_claims(api, [make_claim("C"), make_claim("D")])

    assert first.status_code == second.status_code == 200
    assert ImportResponse.model_validate(first.json()) == ImportResponse(
        success=True, claim_ids=[1, 2], total_claims=2
    )
    assert second.json()["claim_ids"] == [3, 4]


def test_reposting_a_key_updates_content_and_keeps_its_id(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    post_claims(api, [make_claim("A"), make_claim("B")])
    corrected = make_claim("B", charge_lines=[make_charge_line(monetary_amount=175.5)])

    response = post_claims(api, [make_claim("C"), corrected, make_claim("A")])

    assert response.json() == {"success": True, "claim_ids": [3, 2, 1], "total_claims": 3}
    stored = {claim["claim_submitter_identifier"]: claim for claim in emulator.claims()}
    assert {key: claim["version"] for key, claim in stored.items()} == {"A": 2, "B": 2, "C": 1}
    assert stored["B"]["content"] == corrected
    assert stored["B"]["content_hash"] == content_hash(corrected)
    assert stored["B"]["provider_npi"] == "1234567893"


def test_same_key_under_another_provider_is_another_claim(api: httpx.Client) -> None:
    response = post_claims(api, [make_claim("A"), make_claim("A", provider_npi="1245319599")])

    assert response.json()["claim_ids"] == [1, 2]


def test_stats_count_requests_claims_received_and_stored(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    post_claims(api, make_claims(3))
    post_claims(api, make_claims(2))
    post_claims(api, [make_claim(patient_dob="soon")])
    api.post("/claims-import", params={"tenant_id": 1}, json={"claims": []})

    stats = emulator.stats()

    assert stats["requests_total"] == 4
    assert stats["requests_by_status"] == {"200": 2, "403": 1, "422": 1}
    assert stats["claims_received"] == 5
    assert stats["claims_stored"] == 3
    assert set(stats["faults_fired"].values()) == {0}


def test_listing_pages_by_id(api: httpx.Client) -> None:
    post_claims(api, make_claims(5))

    page = api.get(
        "/_emulator/claims", params={"tenant_id": TENANT_ID, "after_id": 2, "limit": 2}
    ).json()

    assert [claim["id"] for claim in page["claims"]] == [3, 4]


def test_concurrent_batches_all_land_with_distinct_ids(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    batches = [make_claims(100, prefix=f"B{batch}") for batch in range(8)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda claims: post_claims(api, claims), batches))

    assert [response.status_code for response in responses] == [200] * 8
    ids = [claim_id for response in responses for claim_id in response.json()["claim_ids"]]
    assert sorted(ids) == list(range(1, 801))
    assert emulator.stats()["claims_stored"] == 800


def test_a_batch_of_100_claims_takes_milliseconds(api: httpx.Client) -> None:
    post_claims(api, make_claims(100, prefix="WARM"))  # first request pays for imports
    durations = []
    for batch in range(5):
        started = time.perf_counter()
        response = post_claims(api, make_claims(100, prefix=f"T{batch}"))
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200

    assert sorted(durations)[2] < 0.25


# --- idempotency -----------------------------------------------------------------------------


def test_idempotency_key_replays_the_committed_answer_without_reapplying(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    body = json.dumps({"claims": [make_claim("A"), make_claim("B")]})
    headers = {"Idempotency-Key": "batch-2026-03-01-0", "content-type": "application/json"}
    params = {"tenant_id": TENANT_ID}

    first = api.post("/claims-import", params=params, content=body, headers=headers)
    replay = api.post("/claims-import", params=params, content=body, headers=headers)

    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert [claim["version"] for claim in emulator.claims()] == [1, 1]
    stats = emulator.stats()
    assert stats["idempotent_replays"] == 1
    assert stats["claims_received"] == 2


def test_idempotency_key_with_another_body_is_422(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    headers = {"Idempotency-Key": "batch-1"}
    post_claims(api, [make_claim("A")], headers=headers)

    response = post_claims(api, [make_claim("B")], headers=headers)

    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert [claim["claim_submitter_identifier"] for claim in emulator.claims()] == ["A"]


def test_concurrent_requests_with_one_idempotency_key_apply_once(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    body = json.dumps({"claims": make_claims(50)})
    headers = {"Idempotency-Key": "same", "content-type": "application/json"}

    def send(_: int) -> httpx.Response:
        return api.post(
            "/claims-import", params={"tenant_id": TENANT_ID}, content=body, headers=headers
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(send, range(4)))

    assert len({response.text for response in responses}) == 1
    assert {claim["version"] for claim in emulator.claims()} == {1}
    assert emulator.stats()["idempotent_replays"] == 3
