"""Partition files: atomic, owner-only, and the later extraction wins a race between runs."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from claims_pipeline.sources.lines import LINE_SCHEMA
from claims_pipeline.storage import EXTRACTED_AT, PartitionStore, format_instant, python_rows

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


ROW_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32()),
        pa.field("text", pa.string()),
        pa.field("number", pa.int32()),
        pa.field("other_day", pa.date32()),
    ]
)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "day": st.none() | st.dates(),
                "text": st.none() | st.text(),
                "number": st.none() | st.integers(-(2**31), 2**31 - 1),
                "other_day": st.none() | st.dates(),
            }
        ),
        max_size=30,
    )
)
def test_python_rows_are_the_batchs_own_rows(rows):
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
    converted = list(python_rows(batch))
    assert converted == batch.to_pylist()
    assert [list(map(type, row.values())) for row in converted] == [
        list(map(type, row.values())) for row in batch.to_pylist()
    ]


def test_python_rows_of_a_line_batch_keep_every_column_in_order():
    batch = pa.RecordBatch.from_pylist(
        [{"service_date": datetime(2026, 11, 20).date()}] * 2, schema=LINE_SCHEMA
    )
    assert [list(row) for row in python_rows(batch)] == [LINE_SCHEMA.names] * 2
    assert list(python_rows(batch)) == batch.to_pylist()


def test_a_date_past_9999_fails_as_pyarrow_fails():
    days = pa.array([2_932_897], pa.int32()).cast(pa.date32())  # 10000-01-01
    batch = pa.RecordBatch.from_arrays([days], names=["day"])
    with pytest.raises(OverflowError):
        batch.to_pylist()
    with pytest.raises(OverflowError):
        list(python_rows(batch))


@given(
    groups=st.lists(st.integers(min_value=1, max_value=9), max_size=6),
    from_row=st.integers(min_value=0, max_value=60),
    batch_size=st.integers(min_value=1, max_value=8),
)
def test_reading_from_a_row_gives_the_rows_from_there_on(
    tmp_path_factory, groups, from_row, batch_size
):
    store = PartitionStore(str(tmp_path_factory.mktemp("from_row")))
    values = list(range(sum(groups)))
    with store.writer("claims", "2026-11-20", SCHEMA) as out:
        start = 0
        for size in groups:  # one row group per batch written
            chunk = values[start : start + size]
            out.write_batch(pa.RecordBatch.from_pydict({"value": chunk}, schema=SCHEMA))
            start += size
    batches = list(store.read_batches("claims", "2026-11-20", batch_size, from_row=from_row))
    assert [v for b in batches for v in b.column(0).to_pylist()] == values[from_row:]
    assert all(0 < b.num_rows <= batch_size for b in batches)
