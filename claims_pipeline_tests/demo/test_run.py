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


def practice_rows(output):
    """{practice: (tenant, sent, unchanged, rejected)} from the per-practice table."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in ("riverside", "lakeside", "summit"):
            rows[fields[0]] = (int(fields[1]), *map(int, fields[-4:-1]))
    return rows


@pytest.mark.slow  # three practices, twice, in fresh processes: ~50 s
def test_three_practices_each_sync_into_their_own_tenant(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAIMS_", "EHR_", "DAGSTER_"))}
    command = [sys.executable, "-m", "claims_pipeline.cli", "demo", "--practices", "3"]
    command += ["--days", "3", "--encounters-per-day", "10"]
    run = lambda: subprocess.run(  # noqa: E731
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    first = run()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = practice_rows(first.stdout)
    assert {name: row[0] for name, row in rows.items()} == {
        "riverside": 1001,
        "lakeside": 1002,
        "summit": 1003,
    }
    assert all(sent > 0 and unchanged == 0 for _, sent, unchanged, _ in rows.values())
    data = tmp_path / ".dagster_home" / "claims_data"
    for name in rows:
        assert (data / "practices" / name / "ledger.sqlite").is_file()
        assert (data / "demo_practices" / name / "defs.yaml").is_file()
    second = run()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = practice_rows(second.stdout)
    assert {name: (sent, unchanged) for name, (_, sent, unchanged, _) in again.items()} == {
        name: (0, sent) for name, (_, sent, _, _) in rows.items()
    }
