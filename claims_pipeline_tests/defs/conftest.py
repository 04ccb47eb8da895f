"""A seeded reference EHR, a live emulator and the environment the code location reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from claims_pipeline.demo.seed import SeedSummary, seed_demo
from claims_pipeline.emulator import EmulatorConfig, RunningEmulator, running_emulator

API_KEY = "e2e-key-3b6f0a9c41"
TENANT_ID = 31


@dataclass
class Pipeline:
    emulator: RunningEmulator
    seeded: SeedSummary
    data_dir: Path
    instance: dg.DagsterInstance

    def materialize(
        self,
        first: date,
        last: date | None = None,
        instance: dg.DagsterInstance | None = None,
        **kwargs: Any,
    ):
        """Run the claims_sync assets for one day or a range (one run), as a backfill does;
        on this pipeline's instance unless another is given."""
        from claims_pipeline.definitions import defs
        from claims_pipeline.defs.claims_sync.schedules import range_tags
        from claims_pipeline.defs.resources import build_resources

        last = last or first
        assets = [
            defs().get_assets_def(key) for key in ("ehr_encounters", "claims", "claims_import")
        ]
        return dg.materialize(
            list(dict.fromkeys(assets)),
            resources=build_resources(),
            instance=instance or self.instance,
            tags=range_tags(first, last),
            raise_on_error=False,
            **kwargs,
        )

    def latest(self, asset: str, day: date) -> dict[str, Any]:
        """Metadata of the latest materialization of one partition, as plain values."""
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        metadata = records[0].event_log_entry.asset_materialization.metadata
        return {key: getattr(value, "value", value) for key, value in metadata.items()}


YESTERDAY = date.today() - timedelta(days=1)


@contextmanager
def running_pipeline(
    directory: Path, monkeypatch: pytest.MonkeyPatch, days: int = 3, encounters_per_day: int = 40
) -> Iterator[Pipeline]:
    """A seeded EHR of ``days`` days ending yesterday, a live emulator, an ephemeral instance,
    and the environment pointing the code location at them."""
    ehr_url = f"sqlite:///{directory / 'ehr.sqlite'}"
    seeded = seed_demo(ehr_url, days=days, encounters_per_day=encounters_per_day)
    config = EmulatorConfig(
        db_path=directory / "emulator.sqlite", api_key=API_KEY, tenant_id=TENANT_ID
    )
    with running_emulator(config) as emulator, dg.DagsterInstance.ephemeral() as instance:
        for name, value in {
            "EHR_DATABASE_URL": ehr_url,
            "CLAIMS_API_URL": emulator.url,
            "CLAIMS_API_KEY": API_KEY,
            "CLAIMS_TENANT_ID": str(TENANT_ID),
            "CLAIMS_DATA_DIR": str(directory / "data"),
        }.items():
            monkeypatch.setenv(name, value)
        yield Pipeline(emulator, seeded, directory / "data", instance)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path, monkeypatch) as running:
        yield running
