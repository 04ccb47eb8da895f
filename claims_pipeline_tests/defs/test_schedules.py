"""``nightly_claims_sync``: evaluated at fixed instants, including both daylight-saving changes
of America/New_York and a timezone whose night falls on the previous UTC day."""

import tempfile
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._utils.schedules import cron_string_iterator

from claims_pipeline import settings
from claims_pipeline.defs.claims_sync.schedules import build_nightly_schedule, nightly_schedule
from claims_pipeline.defs.resources import ClaimsApi, ClaimsStorage, EhrDatabase, QualityGates

NEW_YORK = "America/New_York"
FIRST_PARTITION = date(2025, 1, 1)


_EMPTY_LEDGER_DIR = tempfile.mkdtemp(prefix="claims-schedule-")


def empty_ledger_resources(directory: str = _EMPTY_LEDGER_DIR) -> dict[str, Any]:
    """Resources of a deployment that has synced nothing yet (so no earlier day is edited)."""
    return {
        "ehr": EhrDatabase(url=f"sqlite:///{directory}/ehr.sqlite"),
        "claims_api": ClaimsApi(base_url="http://127.0.0.1:9", api_key="k", tenant_id=1),
        "claims_storage": ClaimsStorage(data_dir=directory),
        "quality_gates": QualityGates(),
    }


def evaluate_all(
    schedule: dg.ScheduleDefinition, instant: datetime, resources: dict[str, Any] | None = None
) -> list[dg.RunRequest] | dg.SkipReason:
    with dg.build_schedule_context(
        scheduled_execution_time=instant, resources=resources or empty_ledger_resources()
    ) as context:
        return schedule(context)


def evaluate(schedule: dg.ScheduleDefinition, instant: datetime) -> dg.RunRequest | dg.SkipReason:
    """The look-back window's run (or the skip)."""
    result = evaluate_all(schedule, instant)
    if isinstance(result, list):
        assert len(result) == 1  # nothing synced yet: no earlier day can have changed
        return result[0]
    return result


def covered(request: dg.RunRequest) -> tuple[str, str]:
    return request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[
        ASSET_PARTITION_RANGE_END_TAG
    ]


def ticks(timezone: str, first_day: date, days: int) -> list[datetime]:
    """The instants at which Dagster's scheduler fires 02:00 in ``timezone``, from first_day."""
    start = datetime.combine(first_day, datetime.min.time(), ZoneInfo(timezone)).timestamp()
    times = cron_string_iterator(start, "0 2 * * *", timezone)
    return [next(times) for _ in range(days)]


def test_the_default_schedule_is_the_configured_one():
    from claims_pipeline.definitions import defs

    nightly_claims_sync = defs().get_schedule_def("nightly_claims_sync")
    assert nightly_claims_sync.name == "nightly_claims_sync"
    assert nightly_claims_sync.job_name == "claims_sync"
    assert nightly_claims_sync.cron_schedule == "0 2 * * *"
    assert nightly_claims_sync.execution_timezone == settings.require(settings.CLAIMS_TIMEZONE)
    lookback = settings.get_int(settings.CLAIMS_LOOKBACK_DAYS)
    zone = ZoneInfo(nightly_claims_sync.execution_timezone)
    request = evaluate(nightly_claims_sync, datetime(2026, 3, 10, 2, tzinfo=zone))
    assert covered(request) == (
        (date(2026, 3, 9) - timedelta(days=lookback)).isoformat(),
        "2026-03-09",
    )


def test_one_run_for_yesterday_plus_the_lookback_window():
    schedule = build_nightly_schedule("UTC", 7, FIRST_PARTITION)
    request = evaluate(schedule, datetime(2026, 3, 10, 2, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest)
    assert covered(request) == ("2026-03-02", "2026-03-09")
    assert request.run_key == "nightly-2026-03-09"
    assert request.partition_key is None  # a range, not one partition


def test_the_same_tick_evaluated_twice_has_the_same_run_key():
    schedule = build_nightly_schedule("UTC", 3, FIRST_PARTITION)
    instant = datetime(2026, 6, 1, 2, tzinfo=UTC)
    first, again = evaluate(schedule, instant), evaluate(schedule, instant)
    assert first.run_key == again.run_key
    assert evaluate(schedule, instant + timedelta(days=1)).run_key != first.run_key


def test_the_window_never_starts_before_the_first_partition():
    schedule = build_nightly_schedule("UTC", 7, date(2026, 3, 5))
    request = evaluate(schedule, datetime(2026, 3, 8, 2, tzinfo=UTC))
    assert covered(request) == ("2026-03-05", "2026-03-07")


def test_nothing_to_do_before_the_first_partition_is_a_skip():
    schedule = build_nightly_schedule("UTC", 7, date(2026, 3, 5))
    result = evaluate(schedule, datetime(2026, 3, 5, 2, tzinfo=UTC))
    assert isinstance(result, dg.SkipReason)
    assert "2026-03-05" in result.skip_message


def test_zero_lookback_covers_yesterday_only():
    schedule = build_nightly_schedule("UTC", 0, FIRST_PARTITION)
    assert covered(evaluate(schedule, datetime(2026, 3, 10, 2, tzinfo=UTC))) == (
        "2026-03-09",
        "2026-03-09",
    )


@pytest.mark.parametrize(
    ("first_day", "change_day", "utc_offsets"),
    [
        # Spring forward: 02:00 does not exist on 2026-03-08; Dagster fires at 03:00 EDT.
        (date(2026, 3, 6), date(2026, 3, 8), [-5, -5, -4, -4, -4]),
        # Fall back: 02:00 on 2026-11-01 exists once (it is 01:00 that repeats).
        (date(2026, 10, 30), date(2026, 11, 1), [-4, -4, -5, -5, -5]),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_one_run_per_night_across_a_daylight_saving_change(first_day, change_day, utc_offsets):
    schedule = build_nightly_schedule(NEW_YORK, 7, FIRST_PARTITION)
    instants = ticks(NEW_YORK, first_day, 5)
    assert [t.utcoffset() / timedelta(hours=1) for t in instants] == utc_offsets
    local_days = [t.date() for t in instants]
    assert local_days == [first_day + timedelta(days=i) for i in range(5)]
    assert change_day in local_days

    requests = [evaluate(schedule, t) for t in instants]
    for day, request in zip(local_days, requests, strict=True):
        yesterday = day - timedelta(days=1)
        assert covered(request) == (
            (yesterday - timedelta(days=7)).isoformat(),
            yesterday.isoformat(),
        )
        assert request.run_key == f"nightly-{yesterday.isoformat()}"
    assert len({r.run_key for r in requests}) == len(requests)

    # The same instants expressed in UTC give the same runs: days are taken in New York.
    assert [covered(evaluate(schedule, t.astimezone(UTC))) for t in instants] == [
        covered(r) for r in requests
    ]


def test_yesterday_is_taken_in_the_configured_timezone_not_in_utc():
    # 02:00 in Auckland on 2026-03-10 (NZDT, UTC+13) is 13:00 UTC on 2026-03-09.
    auckland = "Pacific/Auckland"
    schedule = build_nightly_schedule(auckland, 2, FIRST_PARTITION)
    (tick,) = ticks(auckland, date(2026, 3, 10), 1)
    as_utc = tick.astimezone(UTC)
    assert as_utc.date() == date(2026, 3, 9)
    for instant in (tick, as_utc):
        assert covered(evaluate(schedule, instant)) == ("2026-03-07", "2026-03-09")


def test_the_schedule_reads_its_settings_when_definitions_load(monkeypatch):
    """Nothing is read at import: a setting changed before loading is the one used."""
    from claims_pipeline.defs.claims_sync.schedules import claims_sync_job

    monkeypatch.setenv("CLAIMS_TIMEZONE", NEW_YORK)
    monkeypatch.setenv("CLAIMS_LOOKBACK_DAYS", "3")
    schedule = nightly_schedule(claims_sync_job())
    assert schedule.execution_timezone == NEW_YORK
    request = evaluate(schedule, datetime(2026, 3, 10, 2, tzinfo=ZoneInfo(NEW_YORK)))
    assert covered(request) == ("2026-03-06", "2026-03-09")
