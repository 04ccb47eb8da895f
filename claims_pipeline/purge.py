"""Retention of PHI at rest: delete what is stored about patients once it is older than a
retention period, keep what makes delivery idempotent.

Deleted, by date of service (the partition key) before ``today - older_than``:
``ehr_encounters`` (extracted charge lines), ``claims`` (payloads as posted) and
``claim_rejections`` (claim keys, reasons); by file age: dry runs' payload files and the
leftovers of writes a killed step never finished.

Kept: the delivery ledger (claim keys, content hashes, claim_ids: no PHI), so a re-run of a
purged day re-extracts it from the EHR, rebuilds the same claims and sends nothing that the API
already holds; and ``claims_import`` (per claim: key, outcome, claim_id, a scrubbed reason; no
PHI), the record of what was delivered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.fs as pafs

from claims_pipeline.errors import ConfigurationError
from claims_pipeline.names import CLAIMS, DRY_RUN_DIR, ENCOUNTERS, IMPORT, REJECTIONS
from claims_pipeline.phi import hide_url_password
from claims_pipeline.storage import PartitionStore

#: Assets whose partition files hold PHI (or point at patients) and are purged by date.
PURGED_ASSETS: tuple[str, ...] = (ENCOUNTERS, CLAIMS, REJECTIONS)
#: Assets kept whatever their age: no PHI, and the record of what was delivered.
KEPT_ASSETS: tuple[str, ...] = (IMPORT,)
#: Where a dry run of claims_import writes the payloads it would have posted (one file a run).
DRY_RUN_PAYLOADS = DRY_RUN_DIR
UNFINISHED_WRITES = "unfinished writes"

MINIMUM_RETENTION = timedelta(days=1)
_AGE = re.compile(r"^\s*(\d+)\s*([dw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> timedelta:
    """``90d`` or ``12w`` as a timedelta (at least one day)."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age like 90d or 12w: {text!r}")
    count, unit = int(match.group(1)), match.group(2).lower()
    age = timedelta(days=count * (7 if unit == "w" else 1))
    if age < MINIMUM_RETENTION:
        raise ValueError("the retention period must be at least 1 day")
    return age


@dataclass(frozen=True)
class PurgeReport:
    """What :func:`purge` deleted (or, in a dry run, would delete): per category the partition
    keys or file names, never their contents."""

    data_dir: str  # for display: a password in an object-store URI is masked
    cutoff: date  # dates of service before this day were purged
    dry_run: bool
    deleted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.deleted.values())


def purge(
    data_dir: str,
    older_than: timedelta,
    today: date,
    *,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete the stored PHI under ``data_dir`` whose date of service is before
    ``today - older_than`` (see the module docstring for what is deleted and what is kept)."""
    if older_than < MINIMUM_RETENTION:
        raise ConfigurationError("The retention period must be at least 1 day.")
    if "://" not in data_dir and not _is_directory(data_dir):
        raise ConfigurationError(
            f"CLAIMS_DATA_DIR {data_dir} is not a directory: nothing to purge there."
        )
    store = PartitionStore(data_dir)
    cutoff = today - timedelta(days=older_than.days)
    deleted: dict[str, list[str]] = {}
    for asset in PURGED_ASSETS:
        keys = [key for key in store.partitions(asset) if _before(key, cutoff)]
        for key in keys:
            if not dry_run:
                store.fs.delete_file(store.path(asset, key))
        deleted[asset] = keys
    old_enough = datetime.combine(cutoff, datetime.min.time(), UTC)
    deleted[DRY_RUN_PAYLOADS] = _delete_old_files(store, DRY_RUN_PAYLOADS, old_enough, dry_run)
    deleted[UNFINISHED_WRITES] = [
        f"{asset}/{name}"
        for asset in (*PURGED_ASSETS, *KEPT_ASSETS)
        for name in _delete_old_files(store, asset, old_enough, dry_run, unfinished=True)
    ]
    return PurgeReport(hide_url_password(store.root), cutoff, dry_run, deleted)


def _is_directory(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def _before(partition_key: str, cutoff: date) -> bool:
    try:
        return date.fromisoformat(partition_key) < cutoff
    except ValueError:  # not a partition file of ours: leave it alone
        return False


def _delete_old_files(
    store: PartitionStore,
    directory: str,
    older_than: datetime,
    dry_run: bool,
    unfinished: bool = False,
) -> list[str]:
    """Files in ``{root}/{directory}`` last modified before ``older_than``: with ``unfinished``
    only the temporary files of interrupted writes (``.<partition>.<id>.tmp``)."""
    selector = pafs.FileSelector(f"{store.root}/{directory}", allow_not_found=True)
    names = []
    for info in store.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.mtime is None:
            continue
        is_temporary = info.base_name.startswith(".") and info.base_name.endswith(".tmp")
        if unfinished != is_temporary:
            continue
        modified = info.mtime if info.mtime.tzinfo else info.mtime.replace(tzinfo=UTC)
        if modified < older_than:
            if not dry_run:
                store.fs.delete_file(info.path)
            names.append(info.base_name)
    return sorted(names)


def describe(report: PurgeReport, older_than: timedelta) -> str:
    """The report for people: counts and date ranges, never a file's contents."""
    verb = "Would delete" if report.dry_run else "Deleted"
    lines = [
        f"Retention {older_than.days} day(s): purging dates of service before {report.cutoff} "
        f"under {report.data_dir}" + (" (dry run: nothing is deleted)" if report.dry_run else "")
    ]
    for category, names in report.deleted.items():
        span = f"  {names[0]} ... {names[-1]}" if names and category in PURGED_ASSETS else ""
        lines.append(f"  {category:<24}{len(names):>6} file(s){span}")
        if report.dry_run:
            prefix = "" if category == UNFINISHED_WRITES else f"{category}/"
            lines.extend(f"    {prefix}{name}" for name in names)
    lines.append(
        f"{verb} {report.total} file(s). Kept: the delivery ledger (claim keys and content "
        "hashes, so a re-run sends nothing unchanged) and claims_import results (no PHI)."
    )
    return "\n".join(lines)
