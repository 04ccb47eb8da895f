"""Fault injection: the injector's draws in isolation, then every fault over real HTTP."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claims_pipeline.emulator import Fault, FaultConfig, RunningEmulator, running_emulator
from claims_pipeline.emulator.faults import (
    FaultInjector,
    add_fault_arguments,
    fault_arguments,
    faults_from_arguments,
)
from claims_pipeline_tests.emulator.factories import (
    API_KEY,
    TENANT_ID,
    make_claim,
    make_claims,
    make_config,
    post_claims,
)

# --- the injector ----------------------------------------------------------------------------


def _outcomes(injector: FaultInjector, count: int) -> list[tuple[Fault | None, float, bool]]:
    return [
        (plan.response, plan.delay_seconds, plan.drop_after_commit)
        for plan in (injector.plan() for _ in range(count))
    ]


def test_same_seed_same_faults() -> None:
    config = FaultConfig(status_429=0.2, status_500=0.2, slow=0.3, drop_after_commit=0.3)

    first = _outcomes(FaultInjector(config, seed=7), 200)
    second = _outcomes(FaultInjector(config, seed=7), 200)
    other = _outcomes(FaultInjector(config, seed=8), 200)

    assert first == second
    assert first != other


def test_configure_restarts_the_sequence() -> None:
    config = FaultConfig(status_503=0.5)
    injector = FaultInjector(config, seed=3)
    first = _outcomes(injector, 50)

    injector.configure(config)

    assert _outcomes(injector, 50) == first


def test_response_fault_rates_stack_and_exclude_each_other() -> None:
    config = FaultConfig(status_429=0.1, status_500=0.2, status_503=0.3, success_false=0.4)
    injector = FaultInjector(config, seed=1)

    responses = [plan.response for plan in (injector.plan() for _ in range(20_000))]

    assert None not in responses  # the rates add up to 1: every request meets one
    for fault, rate in [
        (Fault.STATUS_429, 0.1),
        (Fault.STATUS_500, 0.2),
        (Fault.STATUS_503, 0.3),
        (Fault.SUCCESS_FALSE, 0.4),
    ]:
        assert abs(responses.count(fault) / len(responses) - rate) < 0.02


def test_max_faults_stops_injecting_after_the_budget() -> None:
    injector = FaultInjector(FaultConfig(status_429=1.0, max_faults=2))

    assert [plan.response for plan in (injector.plan() for _ in range(4))] == [
        Fault.STATUS_429,
        Fault.STATUS_429,
        None,
        None,
    ]


def test_rejected_finds_listed_claims_by_index() -> None:
    injector = FaultInjector(FaultConfig(reject_claims=("B", "D")))

    assert injector.rejected(["A", "B", None, "D", "B"]) == [1, 3, 4]


@pytest.mark.parametrize(
    "fields",
    [{"status_500": 1.5}, {"slow": -0.1}, {"status_429": 0.6, "status_503": 0.6}, {"typo": 1}],
)
def test_impossible_fault_configs_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        FaultConfig.model_validate(fields)


rates = st.floats(min_value=0.0, max_value=0.25, allow_nan=False)


@given(
    config=st.builds(
        FaultConfig,
        status_429=rates,
        status_500=rates,
        status_503=rates,
        success_false=rates,
        slow=st.floats(min_value=0.0, max_value=1.0),
        drop_after_commit=st.floats(min_value=0.0, max_value=1.0),
        reject_claims=st.lists(st.from_regex(r"[A-Z0-9-]{1,20}", fullmatch=True)).map(tuple),
        retry_after_seconds=st.integers(min_value=0, max_value=3600),
        max_faults=st.none() | st.integers(min_value=0, max_value=100),
    )
)
def test_command_line_options_reproduce_the_config(config: FaultConfig) -> None:
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)

    assert faults_from_arguments(parser.parse_args(fault_arguments(config))) == config


def test_bad_option_is_named() -> None:
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)

    with pytest.raises(ValueError, match="--fault-status-500"):
        faults_from_arguments(parser.parse_args(["--fault-status-500", "2"]))


# --- over HTTP -------------------------------------------------------------------------------


def _stored_keys(emulator: RunningEmulator) -> list[str]:
    return [claim["claim_submitter_identifier"] for claim in emulator.claims()]


def test_429_carries_retry_after_and_stores_nothing(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(status_429=1.0, retry_after_seconds=7)

    response = post_claims(api, [make_claim()])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"] == "rate_limited"
    assert _stored_keys(emulator) == []
    stats = emulator.stats()
    assert stats["faults_fired"]["status_429"] == 1
    assert stats["requests_by_status"] == {"429": 1}


@pytest.mark.parametrize(("fault", "status"), [("status_500", 500), ("status_503", 503)])
def test_server_errors_store_nothing(
    api: httpx.Client, emulator: RunningEmulator, fault: str, status: int
) -> None:
    emulator.set_faults(**{fault: 1.0})

    response = post_claims(api, [make_claim()])

    assert response.status_code == status
    assert set(response.json()) == {"error", "message"}
    assert _stored_keys(emulator) == []
    assert emulator.stats()["faults_fired"][fault] == 1


def test_slow_response_is_delayed_then_processed(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(slow=1.0, slow_seconds=0.6)

    started = time.perf_counter()
    response = post_claims(api, [make_claim("A")])

    assert time.perf_counter() - started >= 0.6
    assert response.status_code == 200
    assert emulator.stats()["faults_fired"]["slow"] == 1


def test_client_timeout_on_a_slow_response_still_stores(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(slow=1.0, slow_seconds=0.5)

    with pytest.raises(httpx.ReadTimeout):
        post_claims(api, [make_claim("A")], timeout=0.1)

    deadline = time.monotonic() + 5
    while not _stored_keys(emulator) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored_keys(emulator) == ["A"]


def test_drop_after_commit_stores_claims_but_the_client_gets_no_response(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(drop_after_commit=1.0)
    body = json.dumps({"claims": make_claims(3)})
    headers = {"Idempotency-Key": "batch-7", "content-type": "application/json"}

    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/claims-import", params={"tenant_id": TENANT_ID}, content=body, headers=headers)

    assert len(_stored_keys(emulator)) == 3
    emulator.set_faults()
    retry = api.post(
        "/claims-import", params={"tenant_id": TENANT_ID}, content=body, headers=headers
    )
    assert retry.json() == {"success": True, "claim_ids": [1, 2, 3], "total_claims": 3}
    assert {claim["version"] for claim in emulator.claims()} == {1}
    stats = emulator.stats()
    assert stats["faults_fired"]["drop_after_commit"] == 1
    assert stats["idempotent_replays"] == 1


def test_success_false_stores_nothing(api: httpx.Client, emulator: RunningEmulator) -> None:
    emulator.set_faults(success_false=1.0)

    response = post_claims(api, make_claims(2))

    assert response.status_code == 200
    assert response.json() == {"success": False, "claim_ids": [], "total_claims": 0}
    assert _stored_keys(emulator) == []
    assert emulator.stats()["faults_fired"]["success_false"] == 1


def test_reject_claims_names_the_claim_and_stores_nothing_of_the_request(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(reject_claims=["CLM-00002"])
    claims = make_claims(4)

    response = post_claims(api, claims)

    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert problem["claim_index"] == 2
    assert problem["claim_submitter_identifier"] == "CLM-00002"
    assert problem["message"] == "claim rejected by payer rules"
    assert _stored_keys(emulator) == []
    assert emulator.stats()["faults_fired"]["reject_claims"] == 1

    accepted = post_claims(api, claims[:2] + claims[3:])
    assert accepted.status_code == 200


def test_seed_reproduces_the_sequence_of_statuses(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    def statuses() -> list[int]:
        return [post_claims(api, [make_claim(f"S{i}")]).status_code for i in range(30)]

    emulator.set_faults(seed=11, status_500=0.3, status_429=0.2)
    first = statuses()
    emulator.set_faults(seed=11, status_500=0.3, status_429=0.2)
    second = statuses()

    assert first == second
    assert {200, 429, 500} <= set(first)


def test_max_faults_fails_the_first_request_only(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    emulator.set_faults(status_503=1.0, max_faults=1)

    assert post_claims(api, [make_claim()]).status_code == 503
    assert post_claims(api, [make_claim()]).status_code == 200


def test_faults_do_not_hide_authentication_errors(emulator: RunningEmulator) -> None:
    emulator.set_faults(status_500=1.0)

    response = httpx.post(
        f"{emulator.url}/claims-import", params={"tenant_id": TENANT_ID}, json={"claims": []}
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [{"status_500": 2}, {"unknown": 1}, {"seed": "x"}, {"status_429": 0.7, "success_false": 0.7}],
)
def test_bad_fault_settings_are_422(emulator: RunningEmulator, body: dict[str, object]) -> None:
    response = httpx.put(
        f"{emulator.url}/_emulator/faults", json=body, headers={"x-api-key": API_KEY}
    )

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_faults"


def test_faults_given_at_start_apply(tmp_path: Path) -> None:
    faults = FaultConfig(status_429=1.0, retry_after_seconds=3, reject_claims=("X", "Y"))
    config = make_config(tmp_path / "emulator.sqlite", faults=faults, seed=5)

    with running_emulator(config) as emulator:
        response = httpx.post(
            f"{emulator.url}/claims-import",
            params={"tenant_id": TENANT_ID},
            json={"claims": []},
            headers={"x-api-key": API_KEY},
        )
        current = httpx.get(
            f"{emulator.url}/_emulator/faults", headers={"x-api-key": API_KEY}
        ).json()

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert FaultConfig.model_validate(current) == faults
