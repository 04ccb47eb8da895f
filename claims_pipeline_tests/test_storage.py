"""Partition files: atomic, owner-only, and the later extraction wins a race between runs."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from claims_pipeline.storage import EXTRACTED_AT, PartitionStore, format_instant

SCHEMA = pa.schema([pa.field("value", pa.int64())])


def write(store, value, extracted_at=None):
    facts = {EXTRACTED_AT: format_instant(extracted_at)} if extracted_at else None
    with store.writer("claims", "2026-11-20", SCHEMA, facts) as out:
        out.write_batch(pa.RecordBatch.from_pydict({"value": [value]}, schema=SCHEMA))


def stored(store):
    return [b.column(0).to_pylist() for b in store.read_batches("claims", "2026-11-20")][0]


def test_a_file_from_an_older_extraction_never_replaces_a_newer_one(tmp_path):
    store = PartitionStore(str(tmp_path))
    now = datetime.now(UTC)
    write(store, 2, now)
    write(store, 1, now - timedelta(seconds=1))  # a slower run that read the EHR earlier
    assert stored(store) == [2]
    assert store.facts("claims", "2026-11-20")[EXTRACTED_AT] == format_instant(now)
    write(store, 3, now + timedelta(microseconds=1))
    assert stored(store) == [3]
    assert [p.name for p in (tmp_path / "claims").iterdir() if p.suffix == ".tmp"] == []


def test_files_without_facts_replace_as_before(tmp_path):
    store = PartitionStore(str(tmp_path))
    write(store, 1)
    write(store, 2)
    assert stored(store) == [2] and store.facts("claims", "2026-11-20") == {}


def test_instants_sort_as_text_in_time_order():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [base, base + timedelta(microseconds=1), base + timedelta(seconds=1)]
    assert sorted(format_instant(i) for i in reversed(instants)) == [
        format_instant(i) for i in instants
    ]
