"""`claims-pipeline demo` as a newcomer runs it: a fresh directory, twice."""

import os
import re
import subprocess
import sys

import pytest


def run_demo(directory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAIMS_", "EHR_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "claims_pipeline.cli", "demo", "--encounters-per-day", "30"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def totals(output):
    line = next(line for line in output.splitlines() if line.startswith("total"))
    encounters, sent, unchanged, rejected = map(int, re.findall(r"\d+", line))
    return encounters, sent, unchanged, rejected


@pytest.mark.slow  # the newcomer's demo, twice, in fresh processes: ~15 s
def test_demo_sends_then_sends_nothing(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    encounters, sent, unchanged, rejected = totals(first.stdout)
    assert sent > 0 and rejected > 0 and unchanged == 0
    assert encounters == sent + rejected
    assert re.search(
        r"(npi_invalid|missing_field|icd_not_billable|units_invalid) x\d", first.stdout
    )
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()  # `dagster dev` shows the runs

    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert totals(second.stdout) == (encounters, 0, sent, rejected)
    assert "Nothing sent" in second.stdout
