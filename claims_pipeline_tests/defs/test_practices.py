"""Many practices in one deployment: practice files under CLAIMS_PRACTICES_DIR, each with its
own EHR (schema), tenant, key, time zone, assets, job, schedule, pool, data and ledger; one
emulator serving every tenant, each with its own key (a key sent with another tenant's id is
refused with 403, as by the real service)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from claims_pipeline.components.claims_practice import load_practices
from claims_pipeline.defs.claims_sync.schedules import range_tags
from claims_pipeline.demo.bulk import generate
from claims_pipeline.demo.seed import seed_demo
from claims_pipeline.emulator import EmulatorConfig, RunningEmulator, running_emulator
from claims_pipeline.errors import ConfigurationError

YESTERDAY = date.today() - timedelta(days=1)
# Complete days in every time zone, whatever the hour of the test.
FIRST, LAST = YESTERDAY - timedelta(days=2), YESTERDAY - timedelta(days=1)
KEYS = {"alpha": "alpha-key-71c0d2e9aa", "beta": "beta-key-0f83b6c1d4", "gamma": "gamma-key-5e"}
TENANTS = {"alpha": 101, "beta": 202, "gamma": 303}


def write_practice(directory: Path, name: str, **attributes) -> Path:
    path = directory / name / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    attributes = {
        "name": name,
        "tenant_id": TENANTS[name],
        "api_key_env": f"{name.upper()}_CLAIMS_API_KEY",
        "ehr_url_env": f"{name.upper()}_EHR_DATABASE_URL",
        "first_date": (YESTERDAY - timedelta(days=30)).isoformat(),
        **attributes,
    }
    attributes = {name: value for name, value in attributes.items() if value is not None}
    path.write_text(
        yaml.safe_dump(
            {"type": "claims_pipeline.components.ClaimsPractice", "attributes": attributes}
        )
    )
    return path


@dataclass
class Deployment:
    emulator: RunningEmulator
    practices: Path
    data: Path
    instance: dg.DagsterInstance

    def sync(self, practice: str) -> dg.ExecuteInProcessResult:
        """The practice's claims_sync job over FIRST..LAST, one run, as a backfill does."""
        from claims_pipeline.definitions import defs

        return (
            defs()
            .resolve_job_def(f"claims_sync_{practice}")
            .execute_in_process(
                instance=self.instance, tags=range_tags(FIRST, LAST), raise_on_error=False
            )
        )

    def stored_keys(self, practice: str, asset: str = "claims") -> set[str]:
        """claim_submitter_identifier of every claim stored for the practice in FIRST..LAST."""
        keys: set[str] = set()
        for day in (FIRST, LAST):
            path = self.data / "practices" / practice / asset / f"{day.isoformat()}.parquet"
            keys |= set(pq.read_table(path).column("claim_submitter_identifier").to_pylist())
        return keys

    def received(self, practice: str) -> dict[str, dict]:
        return {
            claim["claim_submitter_identifier"]: claim
            for claim in self.emulator.claims(TENANTS[practice])
        }


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """alpha: reference schema, America/Chicago; beta: OpenEMR tables, Pacific/Auckland."""
    alpha_url = f"sqlite:///{tmp_path / 'alpha.sqlite'}"
    beta_url = f"sqlite:///{tmp_path / 'beta.sqlite'}"
    seed_demo(alpha_url, days=4, encounters_per_day=15)
    generate(beta_url, 120, schema="openemr", days=4, last_day=YESTERDAY)
    practices = tmp_path / "practices"
    write_practice(practices, "alpha", timezone="America/Chicago")
    write_practice(
        practices, "beta", ehr_schema="openemr", timezone="Pacific/Auckland", lookback_days=3
    )
    config = EmulatorConfig(
        db_path=tmp_path / "emulator.sqlite",
        api_key=KEYS["alpha"],
        tenant_id=TENANTS["alpha"],
        other_tenants={TENANTS["beta"]: KEYS["beta"], TENANTS["gamma"]: KEYS["gamma"]},
    )
    with running_emulator(config) as emulator, dg.DagsterInstance.ephemeral() as instance:
        for name in ("EHR_DATABASE_URL", "CLAIMS_API_KEY", "CLAIMS_TENANT_ID", "CLAIMS_LEDGER_URL"):
            monkeypatch.delenv(name, raising=False)
        environment = {
            "CLAIMS_PRACTICES_DIR": str(practices),
            "CLAIMS_API_URL": emulator.url,
            "CLAIMS_DATA_DIR": str(tmp_path / "data"),
            "CLAIMS_MAX_REQUESTS_PER_SECOND": "1000",
            "CLAIMS_MAX_REJECTION_RATE": "1",
            "ALPHA_CLAIMS_API_KEY": KEYS["alpha"],
            "BETA_CLAIMS_API_KEY": KEYS["beta"],
            "ALPHA_EHR_DATABASE_URL": alpha_url,
            "BETA_EHR_DATABASE_URL": beta_url,
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield Deployment(emulator, practices, tmp_path / "data", instance)


def test_each_tenant_receives_exactly_its_own_claims(deployment):
    assert deployment.sync("alpha").success
    assert deployment.sync("beta").success
    alpha, beta = deployment.received("alpha"), deployment.received("beta")
    assert alpha and beta
    assert set(alpha) == deployment.stored_keys("alpha")
    assert set(beta) == deployment.stored_keys("beta")
    # Each EHR's own claims: the reference adapter's keys and OpenEMR's never mix.
    assert not set(alpha) & set(beta)
    assert {claim["content"]["claim_submitter_identifier"] for claim in beta.values()} == set(beta)
    # Each practice's PHI at rest and ledger live in its own directory.
    for practice in ("alpha", "beta"):
        own = deployment.data / "practices" / practice
        assert (own / "ledger.sqlite").is_file()
        assert sorted(p.name for p in own.iterdir() if p.is_dir()) == [
            "claim_rejections",
            "claims",
            "claims_import",
            "ehr_encounters",
        ]
    assert not (deployment.data / "claims").exists()


def test_a_key_is_never_sent_with_another_practices_tenant(deployment, monkeypatch):
    # alpha's variable holds beta's key: the service refuses it for alpha's tenant (403), the
    # run fails naming alpha's variable, and beta's tenant receives nothing.
    monkeypatch.setenv("ALPHA_CLAIMS_API_KEY", KEYS["beta"])
    result = deployment.sync("alpha")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "check ALPHA_CLAIMS_API_KEY or tenant_id of practice file alpha" in failure.message
    assert KEYS["beta"] not in failure.message
    assert deployment.received("beta") == {}
    assert deployment.received("alpha") == {}
    # The emulator, like the service, answers a key only with its own tenant id.
    response = httpx.post(
        f"{deployment.emulator.url}/claims-import",
        params={"tenant_id": TENANTS["beta"]},
        headers={"X-API-Key": KEYS["alpha"]},
        json={"claims": []},
    )
    assert response.status_code == 403


def test_a_broken_ehr_fails_only_its_own_practice(deployment, monkeypatch):
    monkeypatch.setenv("BETA_EHR_DATABASE_URL", f"sqlite:///{deployment.data}/missing.sqlite")
    broken = deployment.sync("beta")
    assert not broken.success
    healthy = deployment.sync("alpha")
    assert healthy.success
    assert set(deployment.received("alpha")) == deployment.stored_keys("alpha")
    assert deployment.received("beta") == {}


def test_each_practice_has_its_assets_partitions_job_schedule_and_pool(deployment):
    from claims_pipeline.definitions import defs

    loaded = defs()
    for practice, zone, first in (
        ("alpha", "America/Chicago", YESTERDAY - timedelta(days=30)),
        ("beta", "Pacific/Auckland", YESTERDAY - timedelta(days=30)),
    ):
        keys = {key for key in loaded.resolve_all_asset_keys() if key.path[0] == practice}
        assert {key.path[1] for key in keys} == {
            "ehr_encounters",
            "claims",
            "claim_rejections",
            "claims_import",
        }
        delivery = loaded.get_assets_def([practice, "claims_import"])
        assert delivery.node_def.pool == f"claims_api_{practice}"
        assert delivery.partitions_def.timezone == zone
        assert delivery.partitions_def.start.date() == first
        assert (
            loaded.get_assets_def([practice, "claims"]).group_names_by_key[
                dg.AssetKey([practice, "claims"])
            ]
            == practice
        )
        schedule = loaded.get_schedule_def(f"nightly_claims_sync_{practice}")
        assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", zone)
        job = loaded.resolve_job_def(f"claims_sync_{practice}")
        # A run of one practice's job touches its assets alone.
        assert {key.path[0] for key in job.asset_layer.executable_asset_keys} == {practice}
    # The environment's plain practice is not served when practice files are.
    assert dg.AssetKey("claims") not in loaded.resolve_all_asset_keys()


def test_a_third_practice_file_adds_its_assets_schedule_pool_and_sensor(deployment):
    from claims_pipeline.definitions import defs

    write_practice(deployment.practices, "gamma", timezone="Europe/Berlin")
    loaded = defs()
    assert dg.AssetKey(["gamma", "claims_import"]) in loaded.resolve_all_asset_keys()
    assert loaded.get_assets_def(["gamma", "claims_import"]).node_def.pool == "claims_api_gamma"
    assert loaded.get_schedule_def("nightly_claims_sync_gamma").execution_timezone == (
        "Europe/Berlin"
    )
    assert loaded.get_sensor_def("claims_unsettled_day_alert_gamma") is not None
    assert {"gamma__ehr", "gamma__claims_api", "gamma__claims_storage"} <= set(loaded.resources)


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"first_date": "01/02/2025"}, "first_date"),
        ({"api_key_env": "not a variable"}, "api_key_env"),
        ({"tenant_id": 0}, "tenant_id"),
        ({"surprise": 1}, "surprise"),
        ({"ehr_url": "postgresql://u:hunter2@db/ehr", "ehr_url_env": None}, "ehr_url"),
    ],
)
def test_a_wrong_practice_file_is_refused_naming_the_file_and_attribute(
    tmp_path, monkeypatch, attributes, named
):
    path = write_practice(tmp_path, "alpha", **attributes)
    monkeypatch.setenv("CLAIMS_PRACTICES_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError) as raised:
        load_practices()
    assert str(path) in str(raised.value)
    assert named in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_two_practices_may_not_share_a_tenant_or_a_key(tmp_path, monkeypatch):
    write_practice(tmp_path, "alpha")
    write_practice(tmp_path, "beta", tenant_id=TENANTS["alpha"])
    monkeypatch.setenv("CLAIMS_PRACTICES_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="share tenant_id 101"):
        load_practices()


def test_a_folder_must_be_named_as_its_practice(tmp_path, monkeypatch):
    path = write_practice(tmp_path, "alpha")
    path.parent.rename(tmp_path / "other")
    monkeypatch.setenv("CLAIMS_PRACTICES_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="differs from its folder"):
        load_practices()


def test_the_cli_works_on_one_practice_by_name(deployment, monkeypatch, capsys):
    from claims_pipeline.cli import main

    assert deployment.sync("alpha").success
    key = sorted(deployment.received("alpha"))[0]
    assert main(["claim", "show", key, "--practice", "alpha"]) == 0
    assert "delivered" in capsys.readouterr().out
    assert main(["claim", "show", key, "--practice", "beta"]) == 1  # beta's ledger, tenant 202
    assert "unknown to the ledger of tenant 202" in capsys.readouterr().out
    assert main(["purge", "--older-than", "1d", "--dry-run", "--practice", "alpha"]) == 0
    assert str(deployment.data / "practices" / "alpha") in capsys.readouterr().out
    assert main(["claim", "list", "--practice", "delta"]) == 2
    assert "(practices: alpha, beta)" in capsys.readouterr().err


def test_no_run_of_any_practice_shows_phi_or_a_key(deployment, monkeypatch, tmp_path):
    from claims_pipeline_tests.leak_scan import instance_haystacks, needles_from_ehr

    assert deployment.sync("alpha").success
    monkeypatch.setenv("BETA_CLAIMS_API_KEY", KEYS["alpha"])  # a refused key, in an error
    assert not deployment.sync("beta").success
    monkeypatch.setenv("BETA_CLAIMS_API_KEY", KEYS["beta"])
    assert deployment.sync("beta").success
    needles = needles_from_ehr(f"sqlite:///{tmp_path / 'alpha.sqlite'}", KEYS.values())
    hits = needles.scan(instance_haystacks(deployment.instance))
    assert not hits, "\n".join(map(str, hits))


def test_each_nightly_schedule_asks_for_its_practices_own_yesterday(deployment):
    from datetime import UTC, datetime, time
    from zoneinfo import ZoneInfo

    from claims_pipeline.definitions import defs

    loaded = defs()
    # 11:00 UTC: 05:00 or 06:00 in Chicago, midnight or the next morning in Auckland.
    tick = datetime.combine(date.today(), time(11), UTC)
    for practice, zone, lookback in (
        ("alpha", "America/Chicago", 7),
        ("beta", "Pacific/Auckland", 3),
    ):
        schedule = loaded.get_schedule_def(f"nightly_claims_sync_{practice}")
        resources = {k: v for k, v in loaded.resources.items() if k.startswith(f"{practice}__")}
        with dg.build_schedule_context(
            scheduled_execution_time=tick, resources=resources
        ) as context:
            (request,) = schedule.evaluate_tick(context).run_requests
        yesterday = tick.astimezone(ZoneInfo(zone)).date() - timedelta(days=1)
        assert request.tags["dagster/asset_partition_range_end"] == yesterday.isoformat()
        start = yesterday - timedelta(days=lookback)
        assert request.tags["dagster/asset_partition_range_start"] == start.isoformat()
        assert schedule.job_name == f"claims_sync_{practice}"


def test_the_code_location_loads_with_practice_files_in_a_fresh_process(deployment):
    """What a code server does on start, as `dg check defs` does it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_a_practice_with_its_own_alert_destination_gets_its_failures(deployment, monkeypatch):
    from claims_pipeline.alerts.destinations import ALERT_SETTINGS
    from claims_pipeline.defs.alerts.sensors import claims_run_failure_alert
    from claims_pipeline_tests.alerts.receivers import http_receiver

    for setting in ALERT_SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    write_practice(deployment.practices, "alpha", timezone="UTC", alerts_env_prefix="ALPHA_")
    missing = f"sqlite:///{deployment.data}/missing.sqlite"
    monkeypatch.setenv("ALPHA_EHR_DATABASE_URL", missing)
    monkeypatch.setenv("BETA_EHR_DATABASE_URL", missing)
    with http_receiver() as receiver:
        monkeypatch.setenv("ALPHA_CLAIMS_ALERT_WEBHOOK_URL", f"{receiver.url}/alpha")
        outcomes = {}
        for practice in ("alpha", "beta"):
            result = deployment.sync(practice)
            assert not result.success
            context = dg.build_run_status_sensor_context(
                sensor_name=claims_run_failure_alert.name,
                dagster_event=result.get_run_failure_event(),
                dagster_instance=deployment.instance,
                dagster_run=result.dagster_run,
            ).for_run_failure()
            outcomes[practice] = claims_run_failure_alert(context)
        # alpha's failure went to alpha's own destination; beta has none (nor the deployment).
        (alert,) = [request.json() for request in receiver.requests]
        assert "claims_sync_alpha" in json.dumps(alert)
        assert outcomes["alpha"] is None
        assert "No alert destination" in outcomes["beta"].skip_message
