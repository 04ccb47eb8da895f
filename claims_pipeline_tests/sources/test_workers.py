"""Rows converted by worker processes (claims_pipeline/sources/workers.py) are the batches the
extract step's own process builds: both adapters, on SQLite and PostgreSQL, with unreadable
values; an error in a worker is the error the step would raise; a worker that dies fails the
read by name; no worker outlives the read."""

from __future__ import annotations

import os
import signal
from datetime import date, timedelta

import pyarrow as pa
import pytest

from claims_pipeline.demo import bulk
from claims_pipeline.errors import SourceError
from claims_pipeline.sources import base, get_source, workers
from claims_pipeline.sources.base import RowBlock, stream_batches
from claims_pipeline.sources.connection import read_only_engine
from claims_pipeline.sources.lines import LINE_SCHEMA
from claims_pipeline.sources.workers import BlockWorkers
from claims_pipeline_tests.databases import fresh_database_fixture
from claims_pipeline_tests.sources.test_base import _visits_engine

engine = fresh_database_fixture("engine", scope="function", dialects=("sqlite", "postgresql"))

LAST_DAY = date(2026, 3, 4)
FIRST_DAY = LAST_DAY - timedelta(days=2)
# Values the driver cannot read, planted on SQLite (PostgreSQL's types refuse them).
UNREADABLE = {
    "reference": [
        "UPDATE patients SET date_of_birth = '12/04/1985' WHERE id IN (3, 40)",
        "UPDATE patients SET first_name = CAST(X'4A6FFF' AS TEXT) WHERE id = 7",
        "UPDATE charges SET line_amount = 'twelve' WHERE id IN (5, 900)",
    ],
    "openemr": [
        "UPDATE patient_data SET DOB = '12/04/1985' WHERE pid IN (3, 40)",
        "UPDATE patient_data SET fname = CAST(X'4A6FFF' AS TEXT) WHERE pid = 7",
        "UPDATE billing SET fee = 'twelve' WHERE id IN (5, 900)",
    ],
}


@pytest.fixture
def started(monkeypatch):
    """Workers from the first row (the step converts a short read's rows itself); the worker
    processes started, to see that none outlives the read."""
    monkeypatch.setattr(base, "PARALLEL_AFTER_ROWS", 0)
    started = []

    def start_module(*args, **kwargs):
        started.append(workers.start_module(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(BlockWorkers, "start", staticmethod(start_module))
    return started


def alive(started):
    return [process for process in started if process.poll() is None]


def extract(url, schema, processes, chunk_rows=97):
    reader = read_only_engine(url)
    try:
        with reader.connect() as conn:
            batches = get_source(schema).extract_batches(
                conn, FIRST_DAY, LAST_DAY + timedelta(days=1), chunk_rows, processes
            )
            return pa.Table.from_batches(list(batches), schema=LINE_SCHEMA)
    finally:
        reader.dispose()


@pytest.mark.parametrize("schema", ["reference", "openemr"])
def test_workers_build_the_batches_the_step_builds(engine, started, schema):
    url = engine.url.render_as_string(hide_password=False)
    bulk.generate(url, 3_000, schema=schema, days=3, last_day=LAST_DAY)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for statement in UNREADABLE[schema]:
                conn.exec_driver_sql(statement)

    alone = extract(url, schema, processes=1)
    beside = extract(url, schema, processes=2)

    assert alone.num_rows >= 3_000
    assert len(set(alone.column("service_date").to_pylist())) == 3
    if engine.dialect.name == "sqlite":
        assert alone.column("unreadable_columns").null_count < alone.num_rows
    assert beside.equals(alone)
    assert started and not alive(started)


def build_failing_on_encounter_7(block: RowBlock) -> pa.RecordBatch:
    if 7 in block.columns["encounter"]:
        raise ValueError("encounter 7: charge lines without its encounter row")
    return pa.RecordBatch.from_pydict({"encounter": block.columns["encounter"]})


def build_killing_its_process(block: RowBlock) -> pa.RecordBatch:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("not reached")


def visits(tmp_path):
    """60 rows of 20 encounters (3 rows each), and the statement that reads them in order."""
    rows = [{"id": i, "encounter": i // 3, "service_date": LAST_DAY} for i in range(60)]
    return _visits_engine(tmp_path, rows)


def test_an_error_in_a_worker_is_the_error_the_step_would_raise(tmp_path, started):
    ehr, statement = visits(tmp_path)
    with ehr.connect() as conn:
        read = stream_batches(conn, statement, "encounter", 5, build_failing_on_encounter_7, 2)
        first = next(read)
        with pytest.raises(ValueError, match="^encounter 7: charge lines without"):
            list(read)
    assert first.column("encounter").to_pylist() == [0, 0, 0]
    assert started and not alive(started)


def test_a_worker_that_dies_fails_the_read_by_name(tmp_path, started):
    ehr, statement = visits(tmp_path)
    with (
        ehr.connect() as conn,
        pytest.raises(SourceError, match="extract worker process ended"),
    ):
        list(stream_batches(conn, statement, "encounter", 5, build_killing_its_process, 2))
    assert started and not alive(started)


def test_a_read_stopped_early_ends_its_workers(tmp_path, started):
    ehr, statement = visits(tmp_path)
    with ehr.connect() as conn:
        read = stream_batches(conn, statement, "encounter", 5, build_failing_on_encounter_7, 2)
        next(read)
        assert alive(started)
        read.close()
    assert started and not alive(started)


def test_a_short_read_starts_no_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "PARALLEL_AFTER_ROWS", 1_000)
    ehr, statement = visits(tmp_path)
    started = []
    monkeypatch.setattr(BlockWorkers, "start", staticmethod(lambda *a, **k: started.append(a)))
    with ehr.connect() as conn:
        batches = list(stream_batches(conn, statement, "encounter", 5, build_plain, 2))
    assert sum(batch.num_rows for batch in batches) == 60
    assert started == []


def build_plain(block: RowBlock) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"encounter": block.columns["encounter"]})
