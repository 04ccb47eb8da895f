"""Regenerate the UI screenshots in docs/img/ from a real ``dagster dev``.

    python docs/screenshots.py

Seeds a synthetic EHR for the last three days, starts the import-API emulator and ``dagster dev``
(the project's dagster.yaml, SQLite, a temporary DAGSTER_HOME), backfills the three days
through the webserver's GraphQL API as the UI's "Materialize" button does, and photographs
with headless Chromium (Debian: ``apt-get install -y chromium``):

- ``docs/img/asset-graph.png``: the ``claims`` asset group's lineage;
- ``docs/img/claims-import-materialization.png``: the latest ``claims_import`` materialization
  of the last day, with that day's own delivery figures.

Everything runs on loopback and is deleted afterwards; the data is synthetic.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from datetime import date, timedelta
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # claims_pipeline_tests, also without an editable install

from claims_pipeline_tests.dagster_dev import (  # noqa: E402
    running_dagster_dev,
    seeded_environment,
)

IMAGES = DOCS / "img"
ASSETS = ["ehr_encounters", "claims", "claim_rejections", "claims_import"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
    "--virtual-time-budget=15000",
]
SCREENSHOT_TIMEOUT = 120


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("Chromium not found: apt-get update && apt-get install -y chromium")


def screenshot(chromium: str, url: str, target: Path, scratch: Path) -> None:
    """One headless Chromium, in its own process group and empty profile, photographs ``url``."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=scratch))
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}"]
    # The command is a browser found on PATH with fixed flags and a loopback URL.
    process = subprocess.Popen(  # noqa: S603
        [*command, url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        process.wait(timeout=SCREENSHOT_TIMEOUT)
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # renderer and helper processes too
        process.wait()
    if not target.exists() or target.stat().st_size < 10_000:
        raise SystemExit(f"Chromium did not write a usable screenshot of {url}")
    print(f"wrote {target.relative_to(DOCS.parent)}")


def main() -> int:
    chromium = find_chromium()
    last = date.today() - timedelta(days=1)
    days = [last - timedelta(days=offset) for offset in (2, 1, 0)]
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="claims-screenshots-") as scratch_dir:
        scratch = Path(scratch_dir)
        with (
            seeded_environment(scratch, days, api_key="screenshots-key", tenant_id=1) as (env, _),
            running_dagster_dev(scratch / "dagster_home", env) as dev,
        ):
            print(f"dagster dev on {dev.url}; backfilling {days[0]}...{days[-1]}")
            backfill_id = dev.launch_backfill(ASSETS, [day.isoformat() for day in days])
            backfill = dev.wait_for_backfill(backfill_id)
            if backfill["status"] not in {"COMPLETED", "COMPLETED_SUCCESS"}:
                raise dev.fail(f"backfill ended {backfill['status']}: {backfill['error']}")
            screenshot(
                chromium,
                f"{dev.url}/locations/claims_pipeline/asset-groups/claims",
                IMAGES / "asset-graph.png",
                scratch,
            )
            screenshot(
                chromium,
                f"{dev.url}/assets/claims_import?view=events&partition={last.isoformat()}",
                IMAGES / "claims-import-materialization.png",
                scratch,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
