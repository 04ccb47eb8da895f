import importlib.util

import dagster as dg
import pytest

from claims_pipeline.defs.executors import executor_from_environment
from claims_pipeline.errors import ConfigurationError


def test_multiprocess_by_default(monkeypatch):
    monkeypatch.delenv("CLAIMS_EXECUTOR", raising=False)
    assert executor_from_environment() is dg.multiprocess_executor


def test_in_process_on_request(monkeypatch):
    monkeypatch.setenv("CLAIMS_EXECUTOR", "in_process")
    assert executor_from_environment() is dg.in_process_executor


@pytest.mark.parametrize("name", ["k8s", "celery"])
def test_an_integration_executor_or_the_extra_to_install(monkeypatch, name):
    monkeypatch.setenv("CLAIMS_EXECUTOR", name)
    if importlib.util.find_spec(f"dagster_{name}") is None:
        with pytest.raises(ConfigurationError, match=rf"claims_pipeline\[{name}\]"):
            executor_from_environment()
    else:
        assert isinstance(executor_from_environment(), dg.ExecutorDefinition)


def test_an_unknown_executor_names_the_setting(monkeypatch):
    monkeypatch.setenv("CLAIMS_EXECUTOR", "threads")
    with pytest.raises(ConfigurationError, match="CLAIMS_EXECUTOR"):
        executor_from_environment()
