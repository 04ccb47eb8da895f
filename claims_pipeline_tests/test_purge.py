"""PHI at rest: owner-only from the moment it exists, purged after the retention period, with
the delivery ledger kept so that a re-run of a purged day sends nothing unchanged."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from claims_pipeline.cli import main
from claims_pipeline.delivery.ledger import Acknowledgement, DeliveryLedger
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.purge import (
    DRY_RUN_PAYLOADS,
    UNFINISHED_WRITES,
    parse_age,
    purge,
)
from claims_pipeline.storage import PartitionStore, owner_only
from claims_pipeline_tests.defs.conftest import TENANT_ID, YESTERDAY, Pipeline
from claims_pipeline_tests.defs.conftest import pipeline as pipeline  # noqa: F401 - the fixture

SCHEMA = pa.schema([pa.field("service_date", pa.date32()), pa.field("secret", pa.string())])
TODAY = date(2026, 6, 30)
ASSETS = ("ehr_encounters", "claims", "claim_rejections", "claims_import")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _write(store: PartitionStore, asset: str, day: date) -> None:
    with store.writer(asset, day.isoformat(), SCHEMA) as out:
        out.write_table(pa.table({"service_date": [day], "secret": ["Jane Testpatient"]}, SCHEMA))


def _modified_on(path: Path, day: date) -> None:
    when = datetime.combine(day, datetime.min.time(), UTC).timestamp() + 12 * 3600
    os.utime(path, (when, when))


# -- owner-only ----------------------------------------------------------------------------


def test_partition_files_and_directories_are_owner_only_whatever_the_umask(tmp_path: Path):
    root = tmp_path / "claims_data"
    with _umask(0o022):
        store = PartitionStore(str(root))
        _write(store, "claims", TODAY)
        with store.private_output(DRY_RUN_PAYLOADS, "run.jsonl") as out:
            out.write(b"{}\n")
    assert _mode(root) == 0o700
    assert _mode(root / "claims") == 0o700
    assert _mode(root / "claims" / f"{TODAY}.parquet") == 0o600
    assert _mode(root / DRY_RUN_PAYLOADS) == 0o700
    assert _mode(root / DRY_RUN_PAYLOADS / "run.jsonl") == 0o600


def test_the_sqlite_ledger_and_its_wal_are_owner_only(tmp_path: Path):
    directory = tmp_path / "new" / "dir"
    with _umask(0o022):
        ledger = DeliveryLedger(f"sqlite:///{directory / 'ledger.sqlite'}")
        ledger.record(
            TENANT_ID,
            [Acknowledgement("1234567893", "REF-1", "h" * 64, 7, date(2026, 11, 20))],
            "r",
        )
        files = sorted(directory.iterdir())
        modes = {path.name: _mode(path) for path in files}
        ledger.dispose()
    assert {"ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    assert _mode(directory) == 0o700


def test_the_cli_creates_everything_owner_only_and_restores_the_umask(tmp_path: Path):
    database = tmp_path / "ehr.sqlite"
    with _umask(0o022):
        assert main(["seed-demo", "--url", f"sqlite:///{database}", "--days", "1"]) == 0
        assert os.umask(0o022) == 0o022  # main put the umask back
    assert _mode(database) == 0o600
    with owner_only():
        assert os.umask(0o077) == 0o077


# -- purge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("12w", 84), (" 7D ", 7), ("1d", 1)])
def test_ages_are_days_or_weeks(text: str, days: int) -> None:
    assert parse_age(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["90", "0d", "3m", "-1d", "d", "90 days"])
def test_other_ages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="(age like|at least 1 day)"):
        parse_age(text)


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A data directory with partitions 100, 91, 90 and 10 days before TODAY for every asset,
    a dry run's payloads from 120 and 5 days ago, and a killed write's leftover."""
    root = tmp_path / "claims_data"
    store = PartitionStore(str(root))
    for asset in ASSETS:
        for age in (100, 91, 90, 10):
            _write(store, asset, TODAY - timedelta(days=age))
    for name, age in (("old-run.jsonl", 120), ("new-run.jsonl", 5)):
        with store.private_output(DRY_RUN_PAYLOADS, name) as out:
            out.write(b'{"claims": []}\n')
        _modified_on(root / DRY_RUN_PAYLOADS / name, TODAY - timedelta(days=age))
    leftover = root / "claims" / ".2026-01-01.0123abcd.tmp"
    leftover.write_bytes(b"half a file")
    _modified_on(leftover, TODAY - timedelta(days=200))
    (root / "claims" / "notes.txt").write_text("not ours")
    return root


def _partitions(root: Path, asset: str) -> list[str]:
    return sorted(p.stem for p in (root / asset).glob("*.parquet"))


def test_purge_deletes_payloads_past_retention_and_keeps_the_rest(stored: Path) -> None:
    report = purge(str(stored), timedelta(days=90), TODAY)
    assert report.cutoff == TODAY - timedelta(days=90)
    kept = [str(TODAY - timedelta(days=age)) for age in (90, 10)]
    for asset in ("ehr_encounters", "claims", "claim_rejections"):
        assert _partitions(stored, asset) == kept
        assert report.deleted[asset] == [str(TODAY - timedelta(days=age)) for age in (100, 91)]
    assert len(_partitions(stored, "claims_import")) == 4  # no PHI: the delivery record stays
    assert sorted(p.name for p in (stored / DRY_RUN_PAYLOADS).iterdir()) == ["new-run.jsonl"]
    assert report.deleted[DRY_RUN_PAYLOADS] == ["old-run.jsonl"]
    assert report.deleted[UNFINISHED_WRITES] == ["claims/.2026-01-01.0123abcd.tmp"]
    assert (stored / "claims" / "notes.txt").exists()
    assert report.total == 8


def test_a_dry_run_deletes_nothing_and_says_what_it_would(stored: Path) -> None:
    before = sorted(stored.rglob("*"))
    report = purge(str(stored), timedelta(days=90), TODAY, dry_run=True)
    assert sorted(stored.rglob("*")) == before
    assert report.dry_run and report.total == 8


def test_purge_refuses_a_directory_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CLAIMS_DATA_DIR"):
        purge(str(tmp_path / "typo"), timedelta(days=90), TODAY)
    assert not (tmp_path / "typo").exists()


def test_the_cli_prints_counts_never_contents(
    stored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI measures the retention from today: every partition of ``stored`` is older than
    a day, so all but claims_import's go."""
    argv = ["purge", "--older-than", "1d", "--data-dir", str(stored)]
    assert main([*argv, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "Would delete" in listing and "(dry run" in listing
    assert f"claims/{TODAY - timedelta(days=10)}" in listing
    assert len(_partitions(stored, "claims")) == 4
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Deleted 15 file(s)" in printed and "delivery ledger" in printed
    assert _partitions(stored, "claims") == []
    assert len(_partitions(stored, "claims_import")) == 4
    for text in (listing, printed):
        assert "Jane" not in text and "Testpatient" not in text


def test_the_cli_refuses_an_age_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["purge", "--older-than", "90"])
    assert exit_.value.code == 2
    assert "90d or 12w" in capsys.readouterr().err


# -- end to end: a purged day re-runs without re-sending ------------------------------------


def test_a_purged_day_reruns_and_sends_nothing_unchanged(pipeline: Pipeline) -> None:  # noqa: F811
    old, newer = YESTERDAY - timedelta(days=1), YESTERDAY
    assert pipeline.materialize(old, newer).success
    ledger = DeliveryLedger(f"sqlite:///{pipeline.data_dir / 'ledger.sqlite'}")
    keys_before = ledger.count(TENANT_ID)
    requests_before = pipeline.emulator.stats()["requests_total"]
    sent_before = pipeline.latest("claims_import", old)["sent"]
    assert keys_before > 0 and sent_before > 0

    # Seen from 90 days after `newer`: `old` is past a 90-day retention, `newer` is not.
    report = purge(str(pipeline.data_dir), timedelta(days=90), newer + timedelta(days=90))
    for asset in ("ehr_encounters", "claims", "claim_rejections"):
        assert report.deleted[asset] == [old.isoformat()]
        assert _partitions(pipeline.data_dir, asset) == [newer.isoformat()]
    assert _partitions(pipeline.data_dir, "claims_import") == [old.isoformat(), newer.isoformat()]
    assert ledger.count(TENANT_ID) == keys_before  # keys and hashes kept

    assert pipeline.materialize(old).success  # re-extracts and rebuilds the same claims
    figures = pipeline.latest("claims_import", old)
    assert figures["sent"] == 0
    assert figures["unchanged"] == sent_before
    assert pipeline.emulator.stats()["requests_total"] == requests_before
    assert _partitions(pipeline.data_dir, "claims") == [old.isoformat(), newer.isoformat()]
    ledger.dispose()
