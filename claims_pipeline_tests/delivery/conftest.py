"""A live emulator and a ledger for the delivery tests (real HTTP on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from claims_pipeline.delivery.client import ImportApiClient, RetryPolicy
from claims_pipeline.delivery.ledger import DeliveryLedger
from claims_pipeline.emulator import RunningEmulator, running_emulator
from claims_pipeline_tests.emulator.factories import API_KEY, TENANT_ID, make_config

#: Fast retries for tests: the same policy shape, shorter waits.
FAST_RETRY = RetryPolicy(
    attempts=8,
    deadline_seconds=30,
    wait_initial=0.01,
    wait_max=0.05,
    wait_jitter=0.01,
    retry_after_cap=0.2,
)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running_emulator(make_config(tmp_path / "emulator.sqlite")) as running:
        yield running


@pytest.fixture
def client(emulator: RunningEmulator) -> Iterator[ImportApiClient]:
    with ImportApiClient(
        emulator.url, API_KEY, TENANT_ID, max_requests_per_second=0, retry=FAST_RETRY
    ) as api:
        yield api


@pytest.fixture
def ledger(tmp_path: Path) -> DeliveryLedger:
    return DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")


@pytest.fixture(autouse=True)
def _stamina_active() -> None:
    stamina.set_active(True)
