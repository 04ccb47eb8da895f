"""``claims-pipeline demo --practices N``: N demo practices in one deployment, each with its own
EHR (schema), tenant, key and time zone, written as practice files (CLAIMS_PRACTICES_DIR) and
synced by their own jobs against one emulator serving every tenant. Prints one row per
practice: counts only, never PHI."""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from claims_pipeline import practices, settings
from claims_pipeline.storage import PartitionStore


@dataclass(frozen=True)
class DemoPractice:
    name: str
    tenant_id: int
    ehr_schema: str
    timezone: str
    seed: int


#: The practices the demo can seed: different adapters, time zones and synthetic patients.
DEMO_PRACTICES = (
    DemoPractice("riverside", 1001, "reference", "America/Chicago", 7),
    DemoPractice("lakeside", 1002, "sql", "America/New_York", 11),
    DemoPractice("summit", 1003, "openemr", "Pacific/Honolulu", 13),
)
QUERY_FILE = Path(__file__).with_name("reference_query.sql")


def write_practice_files(directory: Path, chosen: list[DemoPractice], first: date) -> None:
    """One ``<name>/defs.yaml`` per practice; secrets stay in the variables they name."""
    for practice in chosen:
        prefix = practice.name.upper()
        attributes: dict[str, object] = {
            "name": practice.name,
            "tenant_id": practice.tenant_id,
            "api_key_env": f"{prefix}_CLAIMS_API_KEY",
            "ehr_url_env": f"{prefix}_EHR_DATABASE_URL",
            "ehr_schema": practice.ehr_schema,
            "timezone": practice.timezone,
            "first_date": first.isoformat(),
        }
        if practice.ehr_schema == "sql":
            attributes["query_file"] = str(QUERY_FILE)
        folder = directory / practice.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / practices.PRACTICE_FILE).write_text(
            yaml.safe_dump(
                {"type": "claims_pipeline.components.ClaimsPractice", "attributes": attributes},
                sort_keys=False,
            )
        )


def run_practices_demo(count: int, days: int, encounters_per_day: int, seed_days: int) -> int:
    """Seed ``count`` practices (if absent), sync each one's last ``days`` days (in its own
    time zone) through its own job, and print a table; 1 when a practice's run failed."""
    from claims_pipeline.demo.run import dagster_home, run_job
    from claims_pipeline.emulator.config import EmulatorConfig
    from claims_pipeline.emulator.server import running_emulator

    if not 1 <= count <= len(DEMO_PRACTICES):
        print(f"error: --practices must be 1 to {len(DEMO_PRACTICES)}.")
        return 2
    chosen = list(DEMO_PRACTICES[:count])
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    data_dir = settings.data_dir()
    os.environ[settings.CLAIMS_DATA_DIR.name] = str(data_dir)
    PartitionStore(str(data_dir))  # creates the directory, owner-only
    directory = data_dir / "demo_practices"
    write_practice_files(directory, chosen, date.today() - timedelta(days=seed_days + 1))
    os.environ[practices.CLAIMS_PRACTICES_DIR.name] = str(directory)
    keys = {p.tenant_id: secrets.token_urlsafe(24) for p in chosen}
    for practice in chosen:
        path = data_dir / f"demo_ehr_{practice.name}.sqlite"
        url = f"sqlite:///{path}"
        if not path.exists():
            print(f"Seeding {practice.name}'s EHR ({practice.ehr_schema}, {seed_days} days)...")
            seed(practice, url, seed_days, encounters_per_day)
        prefix = practice.name.upper()
        os.environ[f"{prefix}_EHR_DATABASE_URL"] = url
        os.environ[f"{prefix}_CLAIMS_API_KEY"] = keys[practice.tenant_id]
    first_tenant = chosen[0].tenant_id
    config = EmulatorConfig(
        db_path=data_dir / "emulator.sqlite",
        api_key=keys[first_tenant],
        tenant_id=first_tenant,
        other_tenants={tenant: key for tenant, key in keys.items() if tenant != first_tenant},
    )
    rows = []
    failed = False
    with running_emulator(config) as emulator:
        os.environ[settings.CLAIMS_API_URL.name] = emulator.url
        print(f"Import API emulator (tenants {', '.join(map(str, keys))}) on {emulator.url}")
        for practice in chosen:
            # yesterday in the practice's time zone: its last complete partition
            last = datetime.now(ZoneInfo(practice.timezone)).date() - timedelta(days=1)
            first = last - timedelta(days=days - 1)
            started = time.monotonic()
            success, error = run_job(f"claims_sync_{practice.name}", first, last)
            elapsed = time.monotonic() - started
            if not success:
                failed = True
                print(f"claims_sync_{practice.name} failed after {elapsed:.1f}s: {error}")
            store = PartitionStore(practices.data_dir_of(practice.name))
            rows.append((practice, first, last, _tally(store, first, last), elapsed))
    _print_table(rows)
    print(f"\nPractice files: {directory}  (CLAIMS_PRACTICES_DIR)")
    print(f"See the runs:    DAGSTER_HOME={home} CLAIMS_PRACTICES_DIR={directory} dagster dev")
    print(f"PHI at rest lives in {data_dir}/practices/<name> (delete it to start over).")
    return 1 if failed else 0


def seed(practice: DemoPractice, url: str, days: int, encounters_per_day: int) -> None:
    """A synthetic EHR of the practice's schema, days ending yesterday: OpenEMR's tables from
    the bulk generator (three lines an encounter on average), else the reference schema (read
    by the reference or the sql adapter)."""
    if practice.ehr_schema == "openemr":
        from claims_pipeline.demo.bulk import generate

        generate(
            url, days * encounters_per_day * 3, schema="openemr", days=days, seed=practice.seed
        )
    else:
        from claims_pipeline.demo.seed import seed_demo

        seed_demo(url, days=days, encounters_per_day=encounters_per_day, seed=practice.seed)


def _tally(store: PartitionStore, first: date, last: date) -> Counter[str]:
    """Delivery outcomes and validation rejections of the days first..last."""
    totals: Counter[str] = Counter()
    day = first
    while day <= last:
        for batch in store.read_batches("claims_import", day.isoformat(), columns=["outcome"]):
            totals.update(batch.column("outcome").to_pylist())
        for batch in store.read_batches("claim_rejections", day.isoformat(), columns=["fields"]):
            totals["held_back"] += batch.num_rows
        day += timedelta(days=1)
    return totals


def _print_table(rows: list[tuple[DemoPractice, date, date, Counter[str], float]]) -> None:
    header = (
        f"{'practice':<11}{'tenant':>7}  {'schema':<10}{'time zone':<18}{'days':<24}"
        f"{'sent':>6}{'unchanged':>10}{'rejected':>9}{'seconds':>9}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for practice, first, last, totals, elapsed in rows:
        rejected = totals["rejected"] + totals["held_back"]
        print(
            f"{practice.name:<11}{practice.tenant_id:>7}  {practice.ehr_schema:<10}"
            f"{practice.timezone:<18}{f'{first} ... {last}':<24}"
            f"{totals['sent'] + totals['updated']:>6}{totals['unchanged']:>10}{rejected:>9}"
            f"{elapsed:>9.1f}"
        )
