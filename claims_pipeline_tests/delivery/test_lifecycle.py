"""A claim's life after its first delivery, over real HTTP against the emulator: corrections,
provider changes, concurrent deliveries, a wrong URL and a refusal that names no claim."""

import json
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from claims_pipeline.contract import canonical_json, content_hash
from claims_pipeline.delivery.client import ApiEndpointError, ImportApiClient
from claims_pipeline.delivery.ledger import ClaimState, DeliveryLedger
from claims_pipeline.delivery.sink import DeliveryOptions, Outcome, deliver
from claims_pipeline_tests.delivery.conftest import FAST_RETRY
from claims_pipeline_tests.delivery.test_sink import outgoing
from claims_pipeline_tests.emulator.factories import (
    TENANT_ID,
    make_charge_line,
    make_claim,
    make_claims,
)

DAY = date(2026, 11, 20)
NEW_NPI = "1245319599"


def run(claims, client, ledger, extracted_at=None, **options):
    return list(
        deliver(
            outgoing(claims, DAY, extracted_at),
            ledger=ledger,
            tenant_id=TENANT_ID,
            run_id="test-run",
            client=client,
            options=DeliveryOptions(**({"batch_size": 10} | options)),
        )
    )


def outcomes(results):
    return sorted(r.outcome.value for r in results)


def with_fee(key, amount):
    return make_claim(key, charge_lines=[make_charge_line(monetary_amount=amount)])


def held_at_service(emulator):
    return {
        (c["provider_npi"], c["claim_submitter_identifier"]): c["content"]
        for c in emulator.claims()
    }


def test_a_fee_going_b_c_b_lands_b(client, ledger, emulator):
    for amount in (150, 175, 150):
        assert outcomes(run([with_fee("CLM-1", amount)], client, ledger)) in (
            ["sent"],
            ["updated"],
        )
    stored = held_at_service(emulator)
    assert stored[("1234567893", "CLM-1")]["charge_lines"][0]["monetary_amount"] == 150
    assert emulator.stats()["idempotent_replays"] == 0
    entry = ledger.lookup(TENANT_ID, ["CLM-1"])["CLM-1"]
    assert entry.content_hash == content_hash(with_fee("CLM-1", 150))


def test_a_provider_change_is_held_until_released(client, ledger, emulator):
    claims = make_claims(3)
    run(claims, client, ledger)
    requests = emulator.stats()["requests_total"]
    moved = [claims[0] | {"provider_npi": NEW_NPI}, *claims[1:]]

    results = run(moved, client, ledger)
    assert outcomes(results) == ["held", "unchanged", "unchanged"]
    held = next(r for r in results if r.outcome is Outcome.HELD)
    assert "1234567893" in held.reason and NEW_NPI in held.reason
    assert emulator.stats()["requests_total"] == requests  # nothing sent
    entry = ledger.lookup(TENANT_ID, ["CLM-00000"])["CLM-00000"]
    assert (entry.state, entry.provider_npi, entry.held_npi) == (
        ClaimState.HELD,
        "1234567893",
        NEW_NPI,
    )
    assert outcomes(run(moved, client, ledger)) == ["held", "unchanged", "unchanged"]

    ledger.release(TENANT_ID, "CLM-00000")  # the operator voided the old claim at the service
    assert outcomes(run(moved, client, ledger)) == ["unchanged", "unchanged", "updated"]
    assert (NEW_NPI, "CLM-00000") in held_at_service(emulator)
    entry = ledger.lookup(TENANT_ID, ["CLM-00000"])["CLM-00000"]
    assert (entry.state, entry.provider_npi, entry.held_npi) == (
        ClaimState.DELIVERED,
        NEW_NPI,
        None,
    )


def test_moving_back_to_the_old_provider_clears_the_hold(client, ledger, emulator):
    claim = make_claim("CLM-1")
    run([claim], client, ledger)
    run([claim | {"provider_npi": NEW_NPI}], client, ledger)
    assert outcomes(run([claim], client, ledger)) == ["unchanged"]
    assert ledger.lookup(TENANT_ID, ["CLM-1"])["CLM-1"].state is ClaimState.DELIVERED


def test_an_older_extraction_never_overwrites_a_newer_one(client, ledger, emulator):
    now = datetime.now(UTC)
    run([with_fee("CLM-1", 175)], client, ledger, extracted_at=now)
    late = run([with_fee("CLM-1", 150)], client, ledger, extracted_at=now - timedelta(seconds=5))
    assert outcomes(late) == ["superseded"]
    stored = held_at_service(emulator)[("1234567893", "CLM-1")]
    assert stored["charge_lines"][0]["monetary_amount"] == 175


@pytest.mark.parametrize("newer_first", [False, True])
def test_overlapping_deliveries_end_with_the_latest_content(emulator, tmp_path, newer_first):
    """Two deliveries of the same claims at once, each with its own ledger connection (as two
    Dagster instances would have), end equal to the later extraction whichever posts first."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    start = datetime.now(UTC)
    older = (start, [with_fee(f"CLM-{i}", 150) for i in range(40)])
    newer = (start + timedelta(seconds=1), [with_fee(f"CLM-{i}", 175) for i in range(40)])
    order = [newer, older] if newer_first else [older, newer]
    errors = []

    def delivery(extracted_at, claims):
        ledger = DeliveryLedger(url)
        try:
            with (
                ledger.lock(TENANT_ID, f"run-{extracted_at}", poll_seconds=0.05) as lock,
                ImportApiClient(
                    emulator.url, emulator.api_key, TENANT_ID, max_requests_per_second=0
                ) as api,
            ):
                for _ in deliver(
                    outgoing(claims, DAY, extracted_at),
                    ledger=ledger,
                    tenant_id=TENANT_ID,
                    run_id="r",
                    client=api,
                    options=DeliveryOptions(batch_size=5, max_in_flight=2),
                    still_locked=lock.check,
                ):
                    pass
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            ledger.dispose()

    threads = [threading.Thread(target=delivery, args=args) for args in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    stored = held_at_service(emulator)
    assert len(stored) == 40
    assert {c["charge_lines"][0]["monetary_amount"] for c in stored.values()} == {175}
    ledger = DeliveryLedger(url)
    assert {e.content_hash for e in ledger.lookup(TENANT_ID, stored_keys(stored)).values()} == {
        content_hash(with_fee(f"CLM-{i}", 175)) for i in range(40)
    }


def stored_keys(stored):
    return [key for _, key in stored]


def test_a_wrong_path_stops_after_one_request_naming_the_setting(emulator, ledger):
    with ImportApiClient(
        emulator.url + "/v2/wrong", emulator.api_key, TENANT_ID, retry=FAST_RETRY
    ) as api:
        with pytest.raises(ApiEndpointError, match="CLAIMS_API_URL"):
            run(make_claims(50), api, ledger, max_in_flight=4)
        assert api.stats.requests == 1
    assert ledger.count(TENANT_ID) == 0


class _SameRefusal(BaseHTTPRequestHandler):
    """A gateway that refuses every request the same way, naming no claim."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"detail": "request rejected by policy"}'
        self.send_response(422)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_refusal_that_names_no_claim_stops_after_three_requests(ledger):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SameRefusal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with ImportApiClient(url, "gateway-test-key-5d81", TENANT_ID, retry=FAST_RETRY) as api:
            with pytest.raises(ApiEndpointError, match="CLAIMS_API_URL"):
                run(make_claims(40), api, ledger, batch_size=20)
            assert api.stats.requests == 3
    finally:
        server.shutdown()
    assert ledger.count(TENANT_ID) == 0


def test_claims_from_a_version_1_ledger_are_not_sent_again(client, emulator, tmp_path):
    from claims_pipeline_tests.delivery.test_ledger import _version_1_ledger

    claims = make_claims(5)
    first = DeliveryLedger(f"sqlite:///{tmp_path}/first.sqlite")
    ids = {r.claim.claim_submitter_identifier: r.claim_id for r in run(claims, client, first)}
    # the same acknowledgements, as a version 1 release recorded them
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path}/v1.sqlite")
    _version_1_ledger(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM claims_delivery_ledger"))
        for claim in claims:
            conn.execute(
                sa.text(
                    "INSERT INTO claims_delivery_ledger VALUES (:t, :npi, :key, :hash, :id, "
                    "'2026-11-20', 'old', '2026-11-21 00:00:00', '2026-11-21 00:00:00')"
                ),
                {
                    "t": TENANT_ID,
                    "npi": claim["provider_npi"],
                    "key": claim["claim_submitter_identifier"],
                    "hash": content_hash(claim),
                    "id": ids[claim["claim_submitter_identifier"]],
                },
            )
    engine.dispose()
    requests = emulator.stats()["requests_total"]
    migrated = DeliveryLedger(f"sqlite:///{tmp_path}/v1.sqlite")
    assert outcomes(run(claims, client, migrated)) == ["unchanged"] * 5
    assert emulator.stats()["requests_total"] == requests


def test_payload_text_is_what_was_posted(client, ledger, emulator):
    claim = make_claim("CLM-9")
    run([claim], client, ledger)
    assert held_at_service(emulator)[("1234567893", "CLM-9")] == json.loads(canonical_json(claim))
