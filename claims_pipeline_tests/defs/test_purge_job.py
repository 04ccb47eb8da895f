"""``claims_purge``: the purge as a Dagster job, on a schedule that starts stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from claims_pipeline.components.claims_practice import served_practices
from claims_pipeline.defs.purge.jobs import nightly_claims_purge, purge_job
from claims_pipeline.defs.resources import ClaimsStorage
from claims_pipeline.storage import PartitionStore

SCHEMA = pa.schema([pa.field("service_date", pa.date32())])
TODAY = datetime.now(UTC).date()


def _stored(root: Path, days_ago: list[int]) -> PartitionStore:
    store = PartitionStore(str(root))
    for asset in ("ehr_encounters", "claims", "claim_rejections", "claims_import"):
        for ago in days_ago:
            day = TODAY - timedelta(days=ago)
            with store.writer(asset, day.isoformat(), SCHEMA) as out:
                out.write_table(pa.table({"service_date": [day]}, SCHEMA))
    return store


def _run(root: Path, **config) -> dg.ExecuteInProcessResult:
    return purge_job(served_practices()).execute_in_process(
        run_config={"ops": {"purge_stored_phi": {"config": config}}} if config else None,
        resources={"claims_storage": ClaimsStorage(data_dir=str(root))},
        raise_on_error=False,
    )


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("CLAIMS_TIMEZONE", "UTC")
    monkeypatch.delenv("CLAIMS_RETENTION", raising=False)
    monkeypatch.delenv("CLAIMS_LOOKBACK_DAYS", raising=False)


def test_the_job_purges_what_is_older_than_the_retention_and_keeps_delivery_results(tmp_path):
    store = _stored(tmp_path, [200, 91, 30, 1])
    result = _run(tmp_path)  # CLAIMS_RETENTION's default: 90 days
    assert result.success
    assert result.output_for_node("purge_stored_phi") == 6  # 2 days x 3 assets
    for asset in ("ehr_encounters", "claims", "claim_rejections"):
        assert len(store.partitions(asset)) == 2
    assert len(store.partitions("claims_import")) == 4
    (output,) = [e for e in result.all_node_events if e.is_successful_output]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["retention_days"] == 90
    assert metadata["cutoff"] == (TODAY - timedelta(days=90)).isoformat()
    assert metadata["claims_files"] == 2
    assert metadata["claims_dates"] == (
        f"{(TODAY - timedelta(days=200)).isoformat()}...{(TODAY - timedelta(days=91)).isoformat()}"
    )


def test_retention_from_the_setting_and_dry_run_from_config(tmp_path, monkeypatch):
    store = _stored(tmp_path, [40, 20])
    monkeypatch.setenv("CLAIMS_RETENTION", "4w")
    assert _run(tmp_path, dry_run=True).success
    assert len(store.partitions("claims")) == 2  # a dry run deletes nothing
    assert _run(tmp_path).success
    assert store.partitions("claims") == [(TODAY - timedelta(days=20)).isoformat()]


def test_a_retention_inside_the_look_back_window_is_refused(tmp_path, monkeypatch):
    store = _stored(tmp_path, [10])
    monkeypatch.setenv("CLAIMS_LOOKBACK_DAYS", "14")
    result = _run(tmp_path, older_than="7d")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert (
        "CLAIMS_RETENTION (7 days) must be longer than the look-back of the practice of the "
        "environment (14 days)" in failure.description
    )
    assert len(store.partitions("claims")) == 1


def test_a_malformed_retention_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAIMS_RETENTION", "three months")
    result = _run(tmp_path)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.description.startswith("CLAIMS_RETENTION (or older_than): not an age")


def test_the_schedule_starts_stopped_and_runs_the_purge_job():
    schedule = nightly_claims_purge(purge_job(served_practices()), "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "claims_purge"
    from claims_pipeline.definitions import defs

    loaded = defs()
    assert loaded.get_schedule_def("nightly_claims_purge").job_name == "claims_purge"
    assert loaded.resolve_job_def("claims_purge") is not None


def test_with_practice_files_each_practice_is_purged_in_its_own_folder(tmp_path, monkeypatch):
    from claims_pipeline.definitions import defs

    for name, tenant in (("alpha", 1), ("beta", 2)):
        folder = tmp_path / "practices" / name
        folder.mkdir(parents=True)
        (folder / "defs.yaml").write_text(
            "type: claims_pipeline.components.ClaimsPractice\nattributes:\n"
            f"  name: {name}\n  tenant_id: {tenant}\n  api_key_env: {name.upper()}_KEY\n"
            f"  ehr_url_env: {name.upper()}_EHR\n  first_date: '2025-01-01'\n"
        )
    monkeypatch.setenv("CLAIMS_PRACTICES_DIR", str(tmp_path / "practices"))
    monkeypatch.setenv("CLAIMS_DATA_DIR", str(tmp_path / "data"))
    alpha = _stored(tmp_path / "data" / "practices" / "alpha", [200, 1])
    beta = _stored(tmp_path / "data" / "practices" / "beta", [200, 1])
    loaded = defs()
    job = loaded.resolve_job_def("claims_purge")
    config = {"ops": {"purge_stored_phi": {"config": {"practice": "alpha"}}}}
    assert job.execute_in_process(run_config=config).success
    assert len(alpha.partitions("claims")) == 1
    assert len(beta.partitions("claims")) == 2  # beta is not touched
    assert job.execute_in_process().success  # every practice
    assert len(beta.partitions("claims")) == 1
    unknown = {"ops": {"purge_stored_phi": {"config": {"practice": "gamma"}}}}
    failed = job.execute_in_process(run_config=unknown, raise_on_error=False)
    assert not failed.success
