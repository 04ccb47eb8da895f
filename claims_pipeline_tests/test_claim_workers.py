"""Claims built by worker processes (claims_pipeline/claim_workers.py) are the claims, the
rejections and the report that the step's own process builds: whole days and days cut into
parts, messy rows, parts that share a claim key, errors in a worker, no file left behind."""

import random
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from claims_pipeline import claim_days, claim_workers
from claims_pipeline.claim_days import DayPart, build_claim_days, build_day, plan_parts
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.names import CLAIMS, ENCOUNTERS, REJECTIONS
from claims_pipeline.rules import AmountLimits
from claims_pipeline.sources.lines import LINE_SCHEMA
from claims_pipeline.storage import EXTRACTED_AT, PartitionStore
from claims_pipeline_tests.rules.factories import SERVICE_DATE, TODAY, random_encounter_rows

DAYS = [SERVICE_DATE + timedelta(days=offset) for offset in range(3)]


@pytest.fixture
def parallel(monkeypatch):
    """Workers for runs of any size (the step keeps small runs in its own process)."""
    monkeypatch.setattr(claim_days, "PARALLEL_MIN_LINES", 1)


@pytest.fixture
def rebuilt(monkeypatch):
    """The days the step built again itself, in order (their parts overlapped)."""
    days = []
    monkeypatch.setattr(
        claim_workers, "build_day", lambda *args: days.append(args[1]) or build_day(*args)
    )
    return days


def day_rows(day, encounters, seed):
    rng = random.Random(seed)
    rows = []
    for number in range(encounters):
        for row in random_encounter_rows(rng, seed * 10_000 + number):
            rows.append({**row, "service_date": day})
    return rows


def store_with(path, days_rows, batch_rows=7):
    """A store whose ehr_encounters partitions hold these rows, in small batches."""
    store = PartitionStore(str(path))
    for day, rows in days_rows.items():
        facts = {EXTRACTED_AT: "2026-04-15T02:00:00.000000+00:00"}
        with store.writer(ENCOUNTERS, day.isoformat(), LINE_SCHEMA, facts) as out:
            for start in range(0, len(rows), batch_rows):
                chunk = rows[start : start + batch_rows]
                out.write_table(pa.Table.from_pylist(chunk, schema=LINE_SCHEMA))
    return store


def built(store, days, processes):
    report = build_claim_days(store, days, TODAY, AmountLimits(), processes=processes)
    files = {
        (asset, day.isoformat()): pq.read_table(store.path(asset, day.isoformat()))
        for asset in (CLAIMS, REJECTIONS)
        for day in days
    }
    return report, files


def summary(report):
    return (
        {day: vars(figures) for day, figures in report.days.items()},
        {
            payer: (m.claims, m.billed, m.rejected, m.held_back)
            for payer, m in report.by_payer.items()
        },
        {
            npi: (m.claims, m.billed, m.rejected, m.held_back)
            for npi, m in report.by_provider.items()
        },
        report.duplicate_keys,
    )


def assert_same(tmp_path, days_rows, processes=2):
    alone = store_with(tmp_path / "alone", days_rows)
    workers = store_with(tmp_path / "workers", days_rows)
    days = sorted(days_rows)
    report_alone, files_alone = built(alone, days, processes=1)
    report_workers, files_workers = built(workers, days, processes=processes)
    assert (report_alone.processes, report_workers.processes) == (1, processes)
    assert summary(report_workers) == summary(report_alone)
    assert list(summary(report_workers)[1]) == list(summary(report_alone)[1])  # payer order
    for key, table in files_alone.items():
        assert files_workers[key].equals(table), key
        assert files_workers[key].schema.metadata == table.schema.metadata  # the facts
    for asset in (CLAIMS, REJECTIONS):  # no scratch file left
        assert sorted(p.name for p in (tmp_path / "workers" / asset).iterdir()) == [
            ".lock",
            *(f"{day.isoformat()}.parquet" for day in days),
        ]
    return report_workers


def test_whole_days_built_by_workers_equal_the_days_built_alone(tmp_path, parallel):
    days_rows = {day: day_rows(day, 60, seed) for seed, day in enumerate(DAYS, 1)}
    report = assert_same(tmp_path, days_rows, processes=3)
    assert sum(figures.rejected for figures in report.days.values()) > 0  # messy rows too
    assert all(figures.claims > 0 for figures in report.days.values())


def test_a_day_cut_into_parts_equals_the_day_built_alone(tmp_path, parallel, rebuilt):
    days_rows = {DAYS[0]: day_rows(DAYS[0], 200, 7), DAYS[1]: day_rows(DAYS[1], 20, 8)}
    store = store_with(tmp_path / "plan", days_rows)
    plan = plan_parts(store, sorted(days_rows), processes=2)
    assert plan is not None and len([p for p in plan if p.day == DAYS[0].isoformat()]) == 2
    assert DayPart(DAYS[1].isoformat()) in plan
    assert_same(tmp_path, days_rows)
    assert rebuilt == []  # the parts' files were joined, not built again


def test_parts_are_cut_where_an_encounter_begins(tmp_path, parallel):
    rows = day_rows(DAYS[0], 120, 3)
    store = store_with(tmp_path, {DAYS[0]: rows})
    plan = plan_parts(store, [DAYS[0]], processes=4)
    assert plan is not None and len(plan) == 4
    assert plan[0].start == 0 and plan[-1].stop is None
    for before, after in zip(plan, plan[1:], strict=False):
        assert before.stop == after.start
        cut = after.start
        assert rows[cut]["encounter_id"] != rows[cut - 1]["encounter_id"]


def test_an_encounter_that_comes_back_in_a_later_part_is_built_again_in_order(
    tmp_path, parallel, rebuilt
):
    rows = day_rows(DAYS[0], 100, 5)
    rows.append({**rows[0]})  # the first encounter's line again, at the end: a split encounter
    report = assert_same(tmp_path, {DAYS[0]: rows})
    assert rebuilt == [DAYS[0].isoformat()]
    assert report.days[DAYS[0].isoformat()].reasons["duplicate_claim_key"] == 1


def test_parts_sharing_a_claim_key_are_built_again_in_order(tmp_path, parallel, rebuilt):
    rows = day_rows(DAYS[0], 100, 9)
    first, last = rows[0], rows[-1]
    # the last encounter reuses the first one's claim key: the second is a duplicate
    twin = {
        "claim_submitter_identifier": first["claim_submitter_identifier"],
        "provider_npi": first["provider_npi"],
    }
    rows = [{**row, **twin} if row["encounter_id"] == last["encounter_id"] else row for row in rows]
    report = assert_same(tmp_path, {DAYS[0]: rows})
    assert rebuilt == [DAYS[0].isoformat()]
    assert report.days[DAYS[0].isoformat()].reasons["duplicate_claim_key"] == 1


def test_small_runs_stay_in_the_steps_process(tmp_path):
    store = store_with(tmp_path, {DAYS[0]: day_rows(DAYS[0], 10, 1)})
    assert plan_parts(store, [DAYS[0]], processes=8) is None  # below PARALLEL_MIN_LINES
    assert plan_parts(store, [DAYS[0]], processes=1) is None


def test_a_workers_error_reaches_the_step_with_its_kind_and_leaves_no_file(tmp_path, parallel):
    days_rows = {DAYS[0]: day_rows(DAYS[0], 200, 2)}
    store = store_with(tmp_path, days_rows)
    missing = DAYS[1]  # never extracted
    with pytest.raises(ConfigurationError, match=f"materialize {ENCOUNTERS}"):
        build_claim_days(store, [DAYS[0], missing], TODAY, AmountLimits(), processes=2)
    for asset in (CLAIMS, REJECTIONS):
        leftovers = [p.name for p in (tmp_path / asset).iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []


def test_a_day_larger_than_a_part_is_cut_into_more_parts_than_workers(
    tmp_path, parallel, rebuilt, monkeypatch
):
    monkeypatch.setattr(claim_days, "PART_MAX_LINES", 100)
    days_rows = {DAYS[0]: day_rows(DAYS[0], 200, 11), DAYS[1]: day_rows(DAYS[1], 20, 12)}
    lines = len(days_rows[DAYS[0]])
    store = store_with(tmp_path / "plan", days_rows)
    plan = plan_parts(store, sorted(days_rows), processes=2)
    assert plan is not None
    parts = [part for part in plan if part.day == DAYS[0].isoformat()]
    assert len(parts) == -(-lines // 100) > 2
    # cut where an encounter begins (at most 5 lines each): about 100 lines a part
    assert all((part.stop or lines) - part.start <= 105 for part in parts)
    assert DayPart(DAYS[1].isoformat()) in plan
    assert_same(tmp_path, days_rows)
    assert rebuilt == []
