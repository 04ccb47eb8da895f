"""Settings are checked before work starts, over real HTTP: a mis-pasted key stops the run by
name and the import API never sees a request."""

import dagster as dg
import pytest

from claims_pipeline.errors import ConfigurationError
from claims_pipeline_tests.defs.conftest import API_KEY, YESTERDAY


def _requests_seen(pipeline) -> int:
    return pipeline.emulator.stats()["requests_total"]


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_a_key_with_a_trailing_newline_stops_the_run_at_once_by_name(pipeline, monkeypatch, suffix):
    monkeypatch.setenv("CLAIMS_API_KEY", API_KEY + suffix)
    with pytest.raises(ConfigurationError) as raised:
        pipeline.materialize(YESTERDAY)
    message = str(raised.value)
    assert "CLAIMS_API_KEY" in message and "newline" in message
    assert API_KEY not in message
    assert _requests_seen(pipeline) == 0
    assert not (pipeline.data_dir / "ehr_encounters").exists()  # no work started


def test_a_key_that_changes_under_a_loaded_code_location_fails_the_import_by_name(
    pipeline, monkeypatch
):
    """The run worker resolves CLAIMS_API_KEY itself: its value is checked again when the
    API resource is set up (at the start of an in-process run, of the import step in a
    multiprocess one), before any client exists."""
    from claims_pipeline.definitions import defs
    from claims_pipeline.defs.claims_sync.schedules import range_tags
    from claims_pipeline.defs.resources import build_resources

    resources = build_resources()  # loaded with a good key
    assets = [defs().get_assets_def(key) for key in ("ehr_encounters", "claims", "claims_import")]
    monkeypatch.setenv("CLAIMS_API_KEY", API_KEY + "\n")
    result = dg.materialize(
        list(dict.fromkeys(assets)),
        resources=resources,
        instance=pipeline.instance,
        tags=range_tags(YESTERDAY, YESTERDAY),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "CLAIMS_API_KEY" in text and API_KEY not in text
    assert not result.asset_materializations_for_node("claims_import")
    assert _requests_seen(pipeline) == 0


def test_the_code_location_names_every_bad_setting_when_it_loads(monkeypatch):
    from claims_pipeline.defs.resources import build_resources

    monkeypatch.setenv("EHR_SCHEMA", "epic")
    monkeypatch.setenv("CLAIMS_TENANT_ID", "tenant-31")
    monkeypatch.setenv("CLAIMS_MAX_REJECTION_RATE", "20")
    with pytest.raises(ConfigurationError) as raised:
        build_resources()
    for name in ("EHR_SCHEMA", "CLAIMS_TENANT_ID", "CLAIMS_MAX_REJECTION_RATE"):
        assert name in str(raised.value)


def test_a_malformed_ehr_url_fails_the_first_step_by_name_without_its_password(tmp_path):
    from claims_pipeline.defs.resources import EhrDatabase

    @dg.asset
    def reads_the_ehr(ehr: EhrDatabase) -> None:
        ehr.engine().dispose()

    result = dg.materialize(
        [reads_the_ehr],
        resources={"ehr": EhrDatabase(url="postgresql+psycopg://reader:s3cr3t-pw@db:port/ehr")},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "EHR_DATABASE_URL" in text and "s3cr3t-pw" not in text
