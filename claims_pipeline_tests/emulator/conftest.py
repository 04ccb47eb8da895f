"""Fixtures of the emulator tests: a live emulator process and a client that holds the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claims_pipeline.emulator import EmulatorConfig, RunningEmulator, running_emulator
from claims_pipeline_tests.emulator.factories import API_KEY, make_config


@pytest.fixture
def config(tmp_path: Path) -> EmulatorConfig:
    return make_config(tmp_path / "emulator.sqlite")


@pytest.fixture
def emulator(config: EmulatorConfig) -> Iterator[RunningEmulator]:
    with running_emulator(config) as running:
        yield running


@pytest.fixture
def api(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    """An HTTP client of the running emulator that sends the right API key."""
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": API_KEY}, timeout=30) as client:
        yield client
