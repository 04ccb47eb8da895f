import json
import threading
import time
from datetime import date

import pytest

from claims_pipeline.contract import canonical_json, content_hash
from claims_pipeline.delivery.client import ApiEndpointError, BatchRejectedError, ImportApiClient
from claims_pipeline.delivery.sink import DeliveryOptions, Outcome, OutgoingClaim, deliver
from claims_pipeline.errors import AuthenticationError
from claims_pipeline_tests.delivery.conftest import FAST_RETRY
from claims_pipeline_tests.emulator.factories import (
    MEMBER_ID,
    PATIENT_NAME,
    TENANT_ID,
    make_charge_line,
    make_claim,
    make_claims,
)


def outgoing(claims, day=date(2026, 11, 20), extracted_at=None):
    return [
        OutgoingClaim(
            day,
            c["provider_npi"],
            c["claim_submitter_identifier"],
            content_hash(c),
            canonical_json(c),
            extracted_at,
        )
        for c in claims
    ]


def run(claims, client, ledger, **options):
    results = list(
        deliver(
            outgoing(claims),
            ledger=ledger,
            tenant_id=TENANT_ID,
            run_id="test-run",
            client=client,
            options=DeliveryOptions(**({"batch_size": 10} | options)),
        )
    )
    assert len(results) == len(claims)  # nothing lost
    return results


def by_outcome(results):
    counts = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts


def test_second_run_sends_nothing(client, ledger, emulator):
    claims = make_claims(35)
    first = run(claims, client, ledger)
    assert by_outcome(first) == {Outcome.SENT: 35}
    requests = emulator.stats()["requests_total"]
    second = run(claims, client, ledger)
    assert by_outcome(second) == {Outcome.UNCHANGED: 35}
    assert emulator.stats()["requests_total"] == requests
    assert {r.claim_id for r in first} == {r.claim_id for r in second}


def test_a_changed_claim_is_resent_alone_and_keeps_its_id(client, ledger, emulator):
    claims = make_claims(20)
    first = {r.claim.claim_submitter_identifier: r.claim_id for r in run(claims, client, ledger)}
    claims[7] = make_claim(
        claims[7]["claim_submitter_identifier"],
        charge_lines=[make_charge_line(), make_charge_line(hcpcs_code="36415", monetary_amount=15)],
    )
    second = run(claims, client, ledger)
    assert by_outcome(second) == {Outcome.UPDATED: 1, Outcome.UNCHANGED: 19}
    sent = [r for r in second if r.outcome == Outcome.UPDATED]
    assert [r.claim.claim_submitter_identifier for r in sent] == ["CLM-00007"]
    assert sent[0].claim_id == first["CLM-00007"]
    stored = {c["claim_submitter_identifier"]: c for c in emulator.claims()}
    assert len(stored["CLM-00007"]["content"]["charge_lines"]) == 2
    assert len(stored) == 20


def test_one_refused_claim_does_not_hold_back_its_batch(client, ledger, emulator):
    claims = make_claims(100)
    emulator.set_faults(reject_claims=["CLM-00042"])
    results = run(claims, client, ledger, batch_size=100)
    assert by_outcome(results) == {Outcome.SENT: 99, Outcome.REJECTED: 1}
    rejected = next(r for r in results if r.outcome == Outcome.REJECTED)
    assert rejected.claim.claim_submitter_identifier == "CLM-00042"
    assert "rejected" in rejected.reason.lower()
    assert PATIENT_NAME not in rejected.reason and MEMBER_ID not in rejected.reason
    assert len(emulator.claims()) == 99
    assert ledger.count(TENANT_ID) == 99


def test_unacknowledged_batches_stay_pending_and_a_rerun_sends_only_them(emulator, ledger):
    policy = FAST_RETRY.__class__(**{**FAST_RETRY.__dict__, "attempts": 2})
    with ImportApiClient(
        emulator.url, emulator.api_key, TENANT_ID, max_requests_per_second=0, retry=policy
    ) as api:
        claims = make_claims(30)
        run(claims[:10], api, ledger)
        emulator.set_faults(status_503=1.0)
        results = run(claims, api, ledger)
        assert by_outcome(results) == {Outcome.UNCHANGED: 10, Outcome.PENDING: 20}
        emulator.set_faults()
        received = emulator.stats()["claims_received"]
        rerun = run(claims, api, ledger)
        assert by_outcome(rerun) == {Outcome.UNCHANGED: 10, Outcome.SENT: 20}
        assert emulator.stats()["claims_received"] - received == 20


def test_force_resend_sends_everything_and_keeps_ids(client, ledger, emulator):
    claims = make_claims(12)
    first = {r.claim.claim_submitter_identifier: r.claim_id for r in run(claims, client, ledger)}
    received = emulator.stats()["claims_received"]
    again = run(claims, client, ledger, force_resend=True)
    assert by_outcome(again) == {Outcome.UPDATED: 12}
    assert {r.claim.claim_submitter_identifier: r.claim_id for r in again} == first
    # a new delivery attempt: the service applies it, it does not replay the first answer
    assert emulator.stats()["claims_received"] - received == 12
    assert emulator.stats()["idempotent_replays"] == 0


def test_dry_run_sends_nothing_and_hands_over_the_exact_bodies(client, ledger, emulator):
    claims = make_claims(15)
    bodies = []
    results = list(
        deliver(
            outgoing(claims),
            ledger=ledger,
            tenant_id=TENANT_ID,
            run_id="dry",
            client=None,
            options=DeliveryOptions(batch_size=10, dry_run=True),
            dry_run_sink=bodies.append,
        )
    )
    assert by_outcome(results) == {Outcome.DRY_RUN: 15}
    assert [len(json.loads(b)["claims"]) for b in bodies] == [10, 5]
    assert json.loads(bodies[0])["claims"][0] == claims[0]
    assert emulator.stats()["requests_total"] == 0 and ledger.count(TENANT_ID) == 0


def test_wrong_key_fails_within_one_request(emulator, ledger):
    with (
        ImportApiClient(emulator.url, "not-the-key", TENANT_ID, retry=FAST_RETRY) as api,
        pytest.raises(AuthenticationError),
    ):
        run(make_claims(50), api, ledger, max_in_flight=4)
    assert emulator.stats()["requests_total"] == 1
    assert ledger.count(TENANT_ID) == 0


def test_fault_mix_delivers_every_claim_once_with_bounded_reposts(client, ledger, emulator):
    claims = make_claims(600)
    emulator.set_faults(
        seed=11,
        status_429=0.10,
        status_500=0.10,
        drop_after_commit=0.05,
        slow=0.02,
        slow_seconds=0.2,
        retry_after_seconds=1,
    )
    results = run(claims, client, ledger, batch_size=20, max_in_flight=4)
    assert by_outcome(results) == {Outcome.SENT: 600}
    stored = emulator.claims()
    assert sorted(c["claim_submitter_identifier"] for c in stored) == sorted(
        c["claim_submitter_identifier"] for c in claims
    )
    assert emulator.stats()["claims_received"] <= 1.3 * len(claims)
    assert ledger.count(TENANT_ID) == 600


class _LedgerWatchingApi:
    """Acknowledges every batch, noting first how many acknowledged claims the ledger did not
    hold yet when it was posted (what a run killed at that moment would send again)."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.most_unrecorded = 0

    def post_batch(self, payloads, secrets=None):
        with self.lock:
            unrecorded = self.acknowledged - self.ledger.count(TENANT_ID)
            self.most_unrecorded = max(self.most_unrecorded, unrecorded)
            first = self.acknowledged
            self.acknowledged += len(payloads)
        time.sleep(0.002)
        return list(range(first + 1, first + len(payloads) + 1))


def test_the_ledger_never_lags_the_api_by_more_than_the_batches_in_flight(ledger):
    api = _LedgerWatchingApi(ledger)
    results = []
    for result in deliver(
        outgoing(make_claims(400)),
        ledger=ledger,
        tenant_id=TENANT_ID,
        run_id="test-run",
        client=api,
        options=DeliveryOptions(batch_size=10, max_in_flight=4),
    ):
        # a result is reported only once its acknowledgement is recorded
        key = result.claim.claim_submitter_identifier
        assert ledger.lookup(TENANT_ID, [key])[key].claim_id == result.claim_id
        results.append(result)
    assert by_outcome(results) == {Outcome.SENT: 400}
    assert 0 < api.most_unrecorded <= 3 * 10  # the other batches in flight, never more
    assert ledger.count(TENANT_ID) == 400


class _RefusingApi:
    """Refuses a batch as a whole; acknowledges its first half; refuses every part of its
    second half the same way without naming a claim."""

    def __init__(self, first_half):
        self.first_half = first_half

    def post_batch(self, payloads, secrets=None):
        keys = [json.loads(p)["claim_submitter_identifier"] for p in payloads]
        if keys == self.first_half:
            return list(range(1, len(keys) + 1))
        if len(keys) > len(self.first_half):
            raise BatchRejectedError(422, "claims[3] refused")
        raise BatchRejectedError(422, "request rejected by policy")


def test_claims_acknowledged_before_a_bisection_stops_the_run_stay_recorded(ledger):
    claims = make_claims(8)
    first_half = [c["claim_submitter_identifier"] for c in claims[:4]]
    with pytest.raises(ApiEndpointError, match="CLAIMS_API_URL"):
        run(claims, _RefusingApi(first_half), ledger, batch_size=8)
    assert sorted(ledger.lookup(TENANT_ID, first_half)) == first_half
    assert ledger.count(TENANT_ID) == 4
