import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from claims_pipeline.contract import canonical_json
from claims_pipeline.delivery.client import (
    ApiEndpointError,
    BatchRejectedError,
    ImportApiClient,
    Throttle,
    TransientApiError,
    check_base_url,
    names_claims,
    retry_after_seconds,
)
from claims_pipeline.errors import AuthenticationError, ConfigurationError
from claims_pipeline_tests.delivery.conftest import FAST_RETRY
from claims_pipeline_tests.emulator.factories import (
    API_KEY,
    MEMBER_ID,
    PATIENT_NAME,
    TENANT_ID,
    make_claim,
    make_claims,
)


def payloads(claims):
    return [canonical_json(c) for c in claims]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), ("120", 60.0), ("soon", None), (None, None), ("-5", 0.0)],
)
def test_retry_after_seconds_are_parsed_and_capped(header, expected):
    assert retry_after_seconds(header, cap=60) == expected


def test_retry_after_http_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(when, cap=60) <= 30


@pytest.mark.parametrize(
    "url", ["http://api.example.com", "http://10.0.0.5:8080", "ftp://127.0.0.1", "not a url"]
)
def test_plain_http_is_refused_except_to_loopback(url):
    with pytest.raises(ConfigurationError, match="CLAIMS_API_URL"):
        check_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.refactorbilling.com/",
        "http://127.0.0.1:8400",
        "http://localhost:1",
        "http://[::1]:80",
    ],
)
def test_https_and_loopback_http_are_accepted(url):
    assert check_base_url(url) == url.rstrip("/")


def test_throttle_spaces_requests():
    throttle = Throttle(per_second=1000)
    import time

    started = time.monotonic()
    for _ in range(50):
        throttle.wait()
    assert time.monotonic() - started >= 0.045  # 49 gaps of 1 ms


def test_posts_a_batch_and_returns_ids_in_order(client, emulator):
    ids = client.post_batch(payloads(make_claims(3)))
    assert len(ids) == 3 and len(set(ids)) == 3
    stored = {c["claim_submitter_identifier"]: c["id"] for c in emulator.claims()}
    assert [stored[f"CLM-{i:05d}"] for i in range(3)] == ids


def test_wrong_key_stops_at_once_and_names_the_setting(emulator):
    wrong_key = "wrong-key-0d9f8e7c"
    with ImportApiClient(emulator.url, wrong_key, TENANT_ID, retry=FAST_RETRY) as api:
        with pytest.raises(AuthenticationError) as raised:
            api.post_batch(payloads(make_claims(2)))
        assert api.stats.requests == 1  # not retried
    message = str(raised.value)
    assert "CLAIMS_API_KEY" in message
    assert wrong_key not in message and wrong_key not in repr(api)


def test_wrong_tenant_names_the_tenant_setting(emulator):
    with (
        ImportApiClient(emulator.url, API_KEY, TENANT_ID + 1, retry=FAST_RETRY) as api,
        pytest.raises(AuthenticationError, match="CLAIMS_TENANT_ID"),
    ):
        api.post_batch(payloads(make_claims(1)))


@pytest.mark.parametrize(
    "fault", ["status_429", "status_500", "status_503", "success_false", "drop_after_commit"]
)
def test_transient_faults_are_retried_to_success(client, emulator, fault):
    emulator.set_faults(**{fault: 1.0, "max_faults": 2, "retry_after_seconds": 1})
    ids = client.post_batch(payloads(make_claims(5)))
    assert len(ids) == 5
    assert client.stats.retries == 2
    assert len(emulator.claims()) == 5  # a drop after commit re-sent: upsert, still 5


def test_retry_after_is_honoured(client, emulator):
    emulator.set_faults(status_429=1.0, max_faults=1, retry_after_seconds=1)
    import time

    started = time.monotonic()
    client.post_batch(payloads(make_claims(1)))
    # FAST_RETRY caps Retry-After at 0.2 s; the exponential wait alone would be ~0.01 s
    assert time.monotonic() - started >= 0.19


def test_retries_are_bounded(emulator):
    emulator.set_faults(status_500=1.0)
    policy = FAST_RETRY.__class__(**{**FAST_RETRY.__dict__, "attempts": 3})
    with ImportApiClient(
        emulator.url, API_KEY, TENANT_ID, max_requests_per_second=0, retry=policy
    ) as api:
        with pytest.raises(TransientApiError):
            api.post_batch(payloads(make_claims(1)))
        assert api.stats.requests == 3


def test_a_refused_claim_raises_a_rejection_without_phi(client, emulator):
    claims = make_claims(3)
    emulator.set_faults(reject_claims=["CLM-00001"])
    with pytest.raises(BatchRejectedError) as raised:
        client.post_batch(payloads(claims), secrets=lambda: {PATIENT_NAME, MEMBER_ID})
    assert raised.value.status == 422
    assert "CLM-00001" in raised.value.reason
    assert PATIENT_NAME not in str(raised.value) and API_KEY not in str(raised.value)


def test_an_idempotency_key_identifies_one_delivery_attempt(client, emulator):
    body = payloads([make_claim("CLM-IDEM")])
    client.post_batch(body)
    client.post_batch(body)  # a new attempt of the same content: applied, not replayed
    assert emulator.stats()["idempotent_replays"] == 0
    emulator.set_faults(seed=1, drop_after_commit=1.0)
    with pytest.raises(httpx.TransportError):
        client.post_batch(body)  # every retry of this attempt carries its key
    assert emulator.stats()["idempotent_replays"] == FAST_RETRY.attempts - 1


def test_an_answer_that_names_no_claim_stops_the_run(client, emulator):
    with ImportApiClient(emulator.url + "/not-here", API_KEY, TENANT_ID, retry=FAST_RETRY) as wrong:
        with pytest.raises(ApiEndpointError, match="HTTP 404.*CLAIMS_API_URL"):
            wrong.post_batch(payloads(make_claims(2)))
        assert wrong.stats.requests == 1


def test_names_claims():
    assert names_claims({"errors": [{"claim_index": 3, "field": "units"}]})
    assert names_claims({"detail": [{"loc": ["claims", 0, "units"], "msg": "bad"}]})
    assert names_claims("claims[2].charge_lines: too many")
    assert not names_claims({"detail": "Not Found"})
    assert not names_claims(None)


def test_connection_refused_is_a_transport_error(tmp_path):
    with ImportApiClient(
        "http://127.0.0.1:9",
        API_KEY,
        TENANT_ID,
        retry=FAST_RETRY.__class__(attempts=2, wait_initial=0.01, wait_jitter=0.01),
    ) as api:
        with pytest.raises(httpx.TransportError):
            api.post_batch(payloads(make_claims(1)))
        assert api.stats.requests == 2


def test_server_message_is_json_text(client, emulator):
    emulator.set_faults(reject_claims=["CLM-00000"])
    with pytest.raises(BatchRejectedError) as raised:
        client.post_batch(payloads(make_claims(1)))
    assert json.loads(raised.value.reason)  # the server's body, kept for the record


def test_a_key_that_cannot_be_sent_is_a_configuration_error_before_any_request(emulator):
    with ImportApiClient(emulator.url, API_KEY + "\n", TENANT_ID, retry=FAST_RETRY) as api:
        with pytest.raises(ConfigurationError, match="CLAIMS_API_KEY") as raised:
            api.post_batch(payloads(make_claims(1)))
        assert API_KEY not in str(raised.value)
    assert emulator.stats()["requests_total"] == 0
