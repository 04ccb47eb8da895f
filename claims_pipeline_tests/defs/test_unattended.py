"""Left alone under ``dagster dev``: a failed run reaches the operator's webhook, and a run whose
worker is SIGKILLed mid-delivery is marked failed, its ``claims_api`` slot is freed and a
following run delivers every claim, each within a bounded time.

Both are slow (a real webserver, daemon and code server; the daemon's sensor and monitoring
loops): ``pytest -m 'not slow'`` leaves them out. Measured times are printed (``-s``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
import pytest
import yaml

from claims_pipeline.defs.claims_sync.schedules import range_tags
from claims_pipeline_tests.alerts.receivers import http_receiver
from claims_pipeline_tests.dagster_dev import (
    PROJECT_DAGSTER_YAML,
    DagsterDev,
    running_dagster_dev,
    seeded_environment,
)

pytestmark = pytest.mark.slow

API_KEY = "unattended-key-8c2f51d0e3"
WRONG_KEY = "unattended-wrong-4a9e07b6c1"
TENANT_ID = 57
LOCATION = {"repositoryLocationName": "claims_pipeline", "repositoryName": "__repository__"}
T = TypeVar("T")

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { runId status } }
}
"""
RETRIES = """
query Retries($root: String!) {
  runsOrError(filter: {tags: [{key: "dagster/root_run_id", value: $root}]}) {
    ... on Runs { results { runId status } }
  }
}
"""
RUN_MESSAGES = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId, limit: 2000) {
    ... on EventConnection { events { __typename ... on MessageEvent { message stepKey } } }
  }
}
"""
POOL = """
query Pool {
  instance { concurrencyLimit(concurrencyKey: "claims_api") { claimedSlots { runId stepKey } } }
}
"""
SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 5) { status } } }
  }
}
"""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, dev: DagsterDev) -> T:
    """``probe()`` once it is truthy, polled every 0.5 s; fails naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise dev.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def launch_claims_sync(dev: DagsterDev, first: date, last: date) -> str:
    params = {
        "selector": {**LOCATION, "jobName": "claims_sync"},
        "runConfigData": {},
        "executionMetadata": {
            "tags": [{"key": k, "value": v} for k, v in range_tags(first, last).items()]
        },
    }
    launched = dev.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise dev.fail(f"claims_sync was not launched: {launched}")
    return launched["run"]["runId"]


def retry(dev: DagsterDev, run_id: str) -> str | None:
    """The id of a successful automatic retry of ``run_id``; fails if every retry failed."""
    runs = dev.graphql(RETRIES, {"root": run_id})["runsOrError"]["results"]
    if len(runs) >= 2 and all(r["status"] == "FAILURE" for r in runs):
        raise dev.fail(f"every retry of {run_id} failed: {runs}")
    return next((r["runId"] for r in runs if r["status"] == "SUCCESS"), None)


def run_status(dev: DagsterDev, run_id: str) -> str:
    return dev.graphql(RUN, {"runId": run_id})["runOrError"]["status"]


def run_messages(dev: DagsterDev, run_id: str) -> list[dict[str, Any]]:
    return dev.graphql(RUN_MESSAGES, {"runId": run_id})["logsForRun"]["events"]


def claimed_slots(dev: DagsterDev) -> list[dict[str, str]]:
    return dev.graphql(POOL)["instance"]["concurrencyLimit"]["claimedSlots"]


def sensor_has_ticked(dev: DagsterDev, name: str) -> bool:
    selector = {**LOCATION, "sensorName": name}
    found = dev.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    return bool(found.get("sensorState", {}).get("ticks"))


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def days_ending_yesterday(count: int) -> list[date]:
    yesterday = date.today() - timedelta(days=1)
    return [yesterday - timedelta(days=n) for n in reversed(range(count))]


def test_a_failed_claims_sync_run_reaches_the_webhook(tmp_path: Path):
    days = days_ending_yesterday(2)
    with (
        seeded_environment(tmp_path, days, api_key=API_KEY, tenant_id=TENANT_ID) as (env, _),
        http_receiver() as receiver,
    ):
        env |= {
            "CLAIMS_API_KEY": WRONG_KEY,  # the run fails at its first request, by name
            "CLAIMS_ALERT_WEBHOOK_URL": f"{receiver.url}/claims-alerts",
            "CLAIMS_UI_BASE_URL": "http://dagster.clinic.test",
        }
        with running_dagster_dev(tmp_path / "home", env) as dev:
            # A run-status sensor starts from its first tick: a failure before it is history.
            wait_until(
                "the first tick of claims_run_failure_alert",
                lambda: sensor_has_ticked(dev, "claims_run_failure_alert"),
                90,
                dev,
            )
            run_id = launch_claims_sync(dev, days[0], days[-1])
            wait_until(
                "the run to fail",
                lambda: run_status(dev, run_id) == "FAILURE",
                120,
                dev,
            )
            failed_at = time.monotonic()
            (request,) = receiver.wait_for(1, timeout=90)
            alerted_after = time.monotonic() - failed_at
    print(f"\nwebhook called {alerted_after:.1f} s after the run was seen failed")
    body = request.json()
    assert request.path == "/claims-alerts"
    assert body["event"] == "run_failed"
    assert body["details"]["job"] == "claims_sync"
    assert body["details"]["failed steps"] == "claims_import"
    assert "retried" not in body["summary"]  # a refused key is not retried (dagster.yaml)
    assert body["day"] == f"{days[0].isoformat()}...{days[-1].isoformat()}"
    assert body["run_url"] == f"http://dagster.clinic.test/runs/{run_id}"
    assert WRONG_KEY not in request.body.decode() and API_KEY not in request.body.decode()


def fast_monitoring_yaml(home: Path) -> None:
    """The project's dagster.yaml with the monitoring loop and the slot release shortened
    from a minute to seconds, so that the test takes about a minute."""
    config = yaml.safe_load(PROJECT_DAGSTER_YAML.read_text())
    config["run_monitoring"] |= {"poll_interval_seconds": 3, "free_slots_after_run_end_seconds": 3}
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("with_steps", [True, False], ids=["worker-and-steps", "worker-only"])
def test_a_killed_run_worker_is_failed_frees_its_slot_and_a_retry_delivers(
    tmp_path: Path, with_steps: bool
):
    days = days_ending_yesterday(3)
    home = tmp_path / "home"
    fast_monitoring_yaml(home)
    with seeded_environment(
        tmp_path, days, api_key=API_KEY, tenant_id=TENANT_ID, encounters_per_day=40
    ) as (env, emulator):
        # Small batches, one at a time, each answered slowly: delivery takes tens of seconds.
        env |= {"CLAIMS_BATCH_SIZE": "4", "CLAIMS_MAX_IN_FLIGHT": "1"}
        emulator.set_faults(slow=1.0, slow_seconds=0.5)
        with running_dagster_dev(home, env) as dev:
            run_id = launch_claims_sync(dev, days[0], days[-1])
            wait_until(
                "claims_import to be posting",
                lambda: emulator.stats()["claims_stored"] >= 8,
                180,
                dev,
            )
            assert [s["stepKey"] for s in claimed_slots(dev)] == ["claims_import"]
            worker = next(
                int(event["message"].split("pid: ")[1].rstrip(")."))
                for event in run_messages(dev, run_id)
                if event.get("message", "").startswith("Started process for run (pid:")
            )
            # With its steps: the run worker and its step processes die at once, as on an OOM
            # kill or a lost host, and nobody is left to release the slot. Worker only: the
            # delivery step is orphaned and goes on to the end of its own claims.
            tree = [worker, *descendants(worker)] if with_steps else [worker]
            for pid in tree:
                os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            stored_at_kill = emulator.stats()["claims_stored"]
            emulator.set_faults()

            wait_until(
                "the killed run to be failed", lambda: run_status(dev, run_id) == "FAILURE", 60, dev
            )
            failed_after = time.monotonic() - killed_at
            wait_until(
                "the killed run's claims_api slot to be freed",
                lambda: all(s["runId"] != run_id for s in claimed_slots(dev)),
                90,
                dev,
            )
            freed_after = time.monotonic() - killed_at

            if with_steps:
                # claims_import never finished: run_retries re-launches it from that step.
                following_id = wait_until(
                    "the retry run to deliver", lambda: retry(dev, run_id), 180, dev
                )
                following = "retry"
            else:
                # The orphaned step may finish the delivery itself, and then there is nothing
                # left to retry: the next run (the next night's) must go through.
                following_id = launch_claims_sync(dev, days[0], days[-1])
                wait_until(
                    "the following run to deliver",
                    lambda: run_status(dev, following_id) == "SUCCESS",
                    180,
                    dev,
                )
                following = "following run"
            delivered_after = time.monotonic() - killed_at
            wait_until("every slot to be released", lambda: claimed_slots(dev) == [], 30, dev)
        held = [claim["claim_submitter_identifier"] for claim in emulator.claims()]

    print(
        f"\nkilled {len(tree)} process(es) after {stored_at_kill} claims were stored; "
        f"run marked failed after {failed_after:.1f} s, claims_api slot freed after "
        f"{freed_after:.1f} s, {following} {following_id[:8]} delivered after "
        f"{delivered_after:.1f} s"
    )
    assert stored_at_kill < 3 * 40  # killed mid-delivery, not after it
    stored = {
        row["claim_submitter_identifier"]
        for day in days
        for row in pq.read_table(
            tmp_path / "data" / "claims" / f"{day.isoformat()}.parquet",
            columns=["claim_submitter_identifier"],
        ).to_pylist()
    }
    assert sorted(held) == sorted(stored)  # every valid claim, each once
    assert failed_after < 30
    assert freed_after < 60
    assert delivered_after < 150
