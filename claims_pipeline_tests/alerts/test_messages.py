"""What an alert says: counts, claim keys, day and the run's link; never the key."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from claims_pipeline.alerts import messages
from claims_pipeline.alerts.messages import (
    check_failed_alert,
    claims_need_attention,
    claims_need_attention_alert,
    run_failed_alert,
)

RUN_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_a_failed_run_names_job_days_steps_and_links_to_the_run():
    alert = run_failed_alert(
        job_name="claims_sync",
        run_id=RUN_ID,
        first_day="2026-11-24",
        last_day="2026-11-30",
        failed_steps=["claims_import"],
        error="Failure: claims_import did not deliver every claim: 3 pending",
        ui_base_url="https://dagster.example.org/",
    )
    text = alert.text()
    assert alert.title == "[claims_pipeline] Run of claims_sync failed (2026-11-24...2026-11-30)"
    assert "claims_import did not deliver every claim: 3 pending" in text
    assert f"Run: https://dagster.example.org/runs/{RUN_ID}" in text
    body = alert.as_json()
    assert body["event"] == "run_failed"
    assert body["day"] == "2026-11-24...2026-11-30"
    assert body["run_url"] == f"https://dagster.example.org/runs/{RUN_ID}"
    assert body["details"]["failed steps"] == "claims_import"


def test_without_a_ui_base_url_the_run_id_is_given_and_the_setting_named():
    alert = run_failed_alert(
        job_name="claims_sync",
        run_id=RUN_ID,
        first_day="2026-11-30",
        last_day="2026-11-30",
        failed_steps=[],
        error=None,
        ui_base_url=None,
    )
    assert alert.run_url is None
    assert alert.day == "2026-11-30"
    assert f"Run id: {RUN_ID} (set CLAIMS_UI_BASE_URL for a link)" in alert.text()
    assert alert.summary == f"Run {RUN_ID[:8]} of claims_sync failed in: no step (the run itself)."


def test_a_failure_that_will_be_retried_says_so():
    alert = run_failed_alert(
        job_name="claims_sync",
        run_id=RUN_ID,
        first_day=None,
        last_day=None,
        failed_steps=["claims_import"],
        error=None,
        ui_base_url=None,
        will_retry=True,
    )
    assert alert.summary.endswith("failed in: claims_import. It will be retried automatically.")


@given(
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=12, max_size=40),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_the_api_key_never_survives_into_a_run_failure_alert(key, before, after):
    alert = run_failed_alert(
        job_name="claims_sync",
        run_id=RUN_ID,
        first_day=None,
        last_day=None,
        failed_steps=["claims_import"],
        error=f"{before}{key}{after}",
        ui_base_url=None,
        secrets=[key],
    )
    assert key not in alert.text()
    assert key not in json.dumps(alert.as_json())


def test_dates_quoted_by_an_error_are_masked_they_may_be_a_birth_date():
    alert = run_failed_alert(
        job_name="claims_sync",
        run_id=RUN_ID,
        first_day="2026-11-30",
        last_day="2026-11-30",
        failed_steps=["claims"],
        error="ValueError: bad date 04/12/1985 in row",
        ui_base_url=None,
    )
    assert "04/12/1985" not in alert.text()
    assert "[date]" in alert.details["error"]


def test_unsettled_counts_read_four_entries_and_treat_a_missing_one_as_zero():
    metadata = {"sent": 40, "rejected_by_api": 2, "pending": 0, "held": 1, "dry_run": 0}
    assert claims_need_attention(metadata) == {"rejected_by_api": 2, "held": 1}
    assert claims_need_attention({"sent": 5}) == {}
    assert claims_need_attention({"withdrawn": True, "pending": "3"}) == {}  # not counts


def test_a_day_that_needs_attention_lists_counts_and_claim_keys_capped():
    keys = [f"REF-{n}" for n in range(100, 100 + messages.MAX_CLAIM_KEYS + 5)]
    alert = claims_need_attention_alert(
        day="2026-11-30",
        run_id=RUN_ID,
        counts={"rejected_by_api": len(keys), "withdrawn": 1},
        claim_keys={"rejected": keys, "withdrawn": ["REF-7"]},
        ui_base_url="http://127.0.0.1:3000",
    )
    assert alert.title == "[claims_pipeline] 26 claim(s) of 2026-11-30 need attention"
    assert alert.summary == "Delivery of 2026-11-30: 25 refused by the service, 1 withdrawn."
    assert len(alert.claim_keys["rejected"]) == messages.MAX_CLAIM_KEYS
    text = alert.text()
    assert "rejected: REF-100, REF-101" in text
    assert "(and 5 more)" in text
    assert "withdrawn: REF-7" in text
    assert alert.as_json()["counts"] == {"rejected_by_api": 25, "withdrawn": 1}


def test_a_failed_check_says_whether_it_blocked_and_keeps_its_figures():
    alert = check_failed_alert(
        asset="claims",
        check_name="rejection_rate_within_limit",
        severity="ERROR",
        blocking=True,
        day="2026-11-29...2026-11-30",
        run_id=RUN_ID,
        figures={"rejection_rate": 0.31, "duplicate_keys": 0},
        description="Rejection rate 31.0% (limit 20%): posting is blocked.",
        ui_base_url=None,
    )
    assert "blocking check rejection_rate_within_limit" in alert.title
    assert "Downstream steps of that run did not run." in alert.summary
    assert alert.counts == {"duplicate_keys": 0}
    assert alert.details["rejection_rate"] == "0.31"
