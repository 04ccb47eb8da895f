"""Settings are checked before any work: each problem names the variable and its fix, never
the value."""

from __future__ import annotations

import pytest

from claims_pipeline import settings
from claims_pipeline.errors import ConfigurationError

KEY = "k3y-Zq81-secret"


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("CLAIMS_API_KEY", KEY + "\n", "trailing newline"),
        ("CLAIMS_API_KEY", KEY + "\r\n", "trailing newline"),
        ("CLAIMS_API_KEY", " " + KEY, "a space"),
        ("CLAIMS_API_KEY", KEY[:4] + "\t" + KEY[4:], "control character"),
        ("CLAIMS_API_KEY", KEY + "é", "non-ASCII"),
        ("CLAIMS_TENANT_ID", "0", "whole number from 1"),
        ("CLAIMS_TENANT_ID", "-4", "whole number from 1"),
        ("CLAIMS_TENANT_ID", "4.0", "whole number from 1"),
        ("CLAIMS_TENANT_ID", "tenant-4", "whole number from 1"),
        ("CLAIMS_TENANT_ID", "4\n", "control characters"),
        ("CLAIMS_BATCH_SIZE", "0", "from 1 to 1000"),
        ("CLAIMS_BATCH_SIZE", "5000", "from 1 to 1000"),
        ("CLAIMS_MAX_IN_FLIGHT", "0", "from 1 to 64"),
        ("CLAIMS_MAX_REQUESTS_PER_SECOND", "0", "above 0"),
        ("CLAIMS_MAX_REQUESTS_PER_SECOND", "nan", "above 0"),
        ("CLAIMS_MAX_REJECTION_RATE", "20", "from 0 to 1"),
        ("CLAIMS_MAX_REJECTION_RATE", "-0.1", "from 0 to 1"),
        ("CLAIMS_LOOKBACK_DAYS", "a week", "whole number"),
        ("CLAIMS_API_URL", "api.example.com", "http(s) URL"),
        ("CLAIMS_API_URL", "ftp://api.example.com", "http(s) URL"),
        ("CLAIMS_API_URL", "http://api.example.com", "https"),
        ("EHR_DATABASE_URL", "postgres is at db-host", "SQLAlchemy URL"),
        ("CLAIMS_LEDGER_URL", "::not-a-url::", "SQLAlchemy URL"),
        ("EHR_SCHEMA", "epic", "reference, openemr, sql"),
        ("EHR_SCHEMA", "OpenEMR", "reference, openemr, sql"),
        ("CLAIMS_EXECUTOR", "threads", "multiprocess"),
        ("CLAIMS_TIMEZONE", "Mars/Olympus", "IANA timezone"),
        ("CLAIMS_PARTITIONS_START", "01/02/2025", "YYYY-MM-DD"),
        ("CLAIMS_MAX_LINE_AMOUNT", "0", "from 0.01"),
        ("CLAIMS_MAX_LINE_AMOUNT", "100.001", "at most 2 decimals"),
        ("CLAIMS_MAX_CLAIM_AMOUNT", "1e12", "from 0.01"),
    ],
)
def test_each_bad_setting_is_named_with_its_fix_and_without_its_value(name, value, fix):
    problems = settings.check_environment({name: value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(name + " ")
    assert fix in problems[0]
    if len(value.strip()) > 3:
        assert value.strip() not in problems[0]


def test_the_error_lists_every_problem_and_never_the_key():
    with pytest.raises(ConfigurationError) as raised:
        settings.require_valid_environment(
            {"CLAIMS_API_KEY": KEY + "\n", "CLAIMS_TENANT_ID": "x", "EHR_SCHEMA": "epic"}
        )
    message = str(raised.value)
    for name in ("CLAIMS_API_KEY", "CLAIMS_TENANT_ID", "EHR_SCHEMA"):
        assert name in message
    assert KEY not in message


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"CLAIMS_API_KEY": KEY, "CLAIMS_TENANT_ID": "42", "CLAIMS_API_URL": "http://127.0.0.1:8"},
        {"EHR_DATABASE_URL": "postgresql+psycopg://reader:pw@db/ehr", "EHR_SCHEMA": "openemr"},
        {"EHR_SCHEMA": "sql", "EHR_QUERY_FILE": "/srv/ehr/claims.sql"},
        {"CLAIMS_MAX_REJECTION_RATE": "1", "CLAIMS_MAX_REQUESTS_PER_SECOND": "0.5"},
        {"CLAIMS_MAX_LINE_AMOUNT": "25000.50", "CLAIMS_MAX_CLAIM_AMOUNT": "99999999.99"},
        {"CLAIMS_TENANT_ID": ""},  # empty counts as unset: required where used, not here
    ],
)
def test_acceptable_settings_raise_nothing(environ):
    assert settings.check_environment(environ) == []


def test_sql_schema_needs_a_query_file():
    (problem,) = settings.check_environment({"EHR_SCHEMA": "sql"})
    assert "EHR_QUERY_FILE" in problem


def test_a_line_cap_above_the_claim_cap_is_refused():
    (problem,) = settings.check_environment(
        {"CLAIMS_MAX_LINE_AMOUNT": "5000", "CLAIMS_MAX_CLAIM_AMOUNT": "1000"}
    )
    assert "CLAIMS_MAX_LINE_AMOUNT" in problem and "CLAIMS_MAX_CLAIM_AMOUNT" in problem


def test_every_setting_with_a_default_accepts_its_default():
    for setting in settings.SETTINGS:
        if setting.default is not None:
            assert settings.setting_problems(setting, setting.default) == [], setting.name


def test_the_readme_settings_table_lists_every_setting():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for setting in settings.SETTINGS:
        assert f"| `{setting.name}` |" in readme, setting.name


def test_build_processes_are_the_setting_or_the_cpus_a_container_may_use(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("CLAIMS_BUILD_PROCESSES", "6")
    assert settings.build_processes(cpu_max) == 6  # set: taken as is
    monkeypatch.delenv("CLAIMS_BUILD_PROCESSES")
    assert settings.build_processes(cpu_max) == settings.AUTO_BUILD_PROCESSES  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert settings.build_processes(cpu_max) == settings.AUTO_BUILD_PROCESSES  # no limit
    cpu_max.write_text("200000 100000\n")  # limits.cpu: 2
    assert settings.build_processes(cpu_max) == 2
    cpu_max.write_text("50000 100000\n")  # half a CPU
    assert settings.build_processes(cpu_max) == 1
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    cpu_max.write_text("max 100000\n")
    assert settings.build_processes(cpu_max) == 3
