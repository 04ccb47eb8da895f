"""``claims-pipeline demo``: seed the demo EHR if absent, start the import API emulator on a free
loopback port, run ``claims_sync`` for the last days through a real Dagster instance, and print
what happened per day. Prints counts, claim keys and reason codes only, never PHI."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from claims_pipeline import settings
from claims_pipeline.storage import PartitionStore

if TYPE_CHECKING:
    from dagster import DagsterEvent

DEMO_TENANT_ID = 1
SEED_DAYS = 30


def dagster_home() -> Path:
    """$DAGSTER_HOME, else ./.dagster_home: persistent, so `dagster dev` shows the runs."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    project_yaml = Path(__file__).resolve().parents[2] / "dagster.yaml"
    if not instance_yaml.exists() and project_yaml.exists():
        shutil.copyfile(project_yaml, instance_yaml)
    return home


def run_demo(days: int = 7, encounters_per_day: int = 60) -> int:
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    data_dir = settings.data_dir()
    os.environ[settings.CLAIMS_DATA_DIR.name] = str(data_dir)
    store = PartitionStore(str(data_dir))  # creates the directory, owner-only
    ehr_url = settings.ehr_database_url()

    from claims_pipeline.demo.seed import is_seeded, seed_demo

    if not settings.get(settings.EHR_DATABASE_URL) and not is_seeded(ehr_url):
        print(f"Seeding the demo EHR ({SEED_DAYS} days x {encounters_per_day} encounters/day)...")
        seed_demo(ehr_url, days=SEED_DAYS, encounters_per_day=encounters_per_day)

    from claims_pipeline.emulator.config import EmulatorConfig
    from claims_pipeline.emulator.server import running_emulator

    api_key = secrets.token_urlsafe(24)  # lives only in this process and the emulator's
    config = EmulatorConfig(
        db_path=str(data_dir / "emulator.sqlite"), api_key=api_key, tenant_id=DEMO_TENANT_ID
    )
    with running_emulator(config) as emulator:
        os.environ.update(
            {
                settings.CLAIMS_API_URL.name: emulator.url,
                settings.CLAIMS_API_KEY.name: api_key,
                settings.CLAIMS_TENANT_ID.name: str(DEMO_TENANT_ID),
            }
        )
        last = date.today() - timedelta(days=1)
        first = last - timedelta(days=days - 1)
        print(f"Import API emulator listening on {emulator.url}")
        print(f"Running claims_sync for {first} ... {last} (DAGSTER_HOME={home})")
        started = time.monotonic()
        success, error = run_job("claims_sync", first, last)
        elapsed = time.monotonic() - started
    if not success:
        print(f"claims_sync failed after {elapsed:.1f}s: {error}")
        return 1
    _print_summary(store, first, last)
    print(f"\nclaims_sync succeeded in {elapsed:.1f}s.")
    print(f"See the runs:      DAGSTER_HOME={home} dagster dev")
    print(f"PHI at rest lives in {data_dir} (delete it to start over).")
    return 0


def run_job(name: str, first: date, last: date) -> tuple[bool, str | None]:
    """Run job ``name`` over the dates first..last (one run) on $DAGSTER_HOME's instance."""
    import dagster as dg

    from claims_pipeline.definitions import defs
    from claims_pipeline.defs.claims_sync.schedules import range_tags

    job = defs().resolve_job_def(name)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags=range_tags(first, last) | {"claims_pipeline/trigger": "demo"},
            raise_on_error=False,
        )
        if result.success:
            return True, None
        return False, failure_summary(result.all_events)


def failure_summary(events: Sequence[DagsterEvent]) -> str:
    """Why a run failed, from its events: each failed step's error, each failed check."""
    from dagster import DagsterEventType

    failures = [
        event.step_failure_data.error.message.strip()
        for event in events
        if event.is_step_failure and event.step_failure_data.error
    ]
    checks = [
        f"check {event.asset_check_evaluation_data.check_name} failed"
        for event in events
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and not event.asset_check_evaluation_data.passed
    ]
    return "; ".join(failures + checks) or "see the run in the Dagster UI"


def _print_summary(store: PartitionStore, first: date, last: date) -> None:
    header = (
        f"{'date':<12}{'encounters':>11}{'sent':>7}{'unchanged':>11}{'rejected':>10}  top reasons"
    )
    print("\n" + header + "\n" + "-" * len(header))
    totals: Counter[str] = Counter()
    day = first
    while day <= last:
        key = day.isoformat()
        outcomes: Counter[str] = Counter()
        for batch in store.read_batches("claims_import", key, columns=["outcome", "reason"]):
            outcomes.update(batch.column("outcome").to_pylist())
        reasons: Counter[str] = Counter()
        rejected = 0
        for batch in store.read_batches("claim_rejections", key, columns=["reason_codes"]):
            for codes in batch.column("reason_codes").to_pylist():
                rejected += 1
                reasons.update(codes.split(","))
        reasons["api_rejected"] += outcomes["rejected"]
        rejected += outcomes["rejected"]
        encounters = rejected + outcomes["sent"] + outcomes["unchanged"] + outcomes["pending"]
        top = ", ".join(f"{code} x{n}" for code, n in reasons.most_common(3) if n)
        print(
            f"{key:<12}{encounters:>11}{outcomes['sent']:>7}{outcomes['unchanged']:>11}"
            f"{rejected:>10}  {top}"
        )
        totals.update(encounters=encounters, sent=outcomes["sent"], rejected=rejected)
        totals.update(unchanged=outcomes["unchanged"])
        day += timedelta(days=1)
    print(
        f"{'total':<12}{totals['encounters']:>11}{totals['sent']:>7}{totals['unchanged']:>11}"
        f"{totals['rejected']:>10}"
    )
    if totals["sent"] == 0:
        print(
            f"\nNothing sent: all {totals['unchanged']} valid claims were already delivered "
            "and are unchanged."
        )
