"""``claims-pipeline check-source`` end to end through ``cli.main``, with the settings in the
environment: a healthy OpenEMR database, one with a column dropped, and the configuration
mistakes a first-time user makes. Output never holds patient data or the password."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from claims_pipeline.cli import main
from claims_pipeline.sources import reference
from claims_pipeline.sources.check import check_source
from claims_pipeline.sources.openemr import metadata
from claims_pipeline_tests.databases import fresh_database_fixture
from claims_pipeline_tests.sources import test_openemr, test_reference

scratch_engine = fresh_database_fixture("scratch_engine", scope="function")

WINDOW = ["--from", "2026-03-01", "--to", "2026-03-02"]
PATIENT_VALUES = ("John", "Doe", "Núñez", "1985-04-12", "AET100", "CIG200")


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    schema: str,
    query_file: str | None = None,
) -> tuple[int, str]:
    monkeypatch.setenv("EHR_DATABASE_URL", url)
    monkeypatch.setenv("EHR_SCHEMA", schema)
    if query_file is None:
        monkeypatch.delenv("EHR_QUERY_FILE", raising=False)
    else:
        monkeypatch.setenv("EHR_QUERY_FILE", query_file)
    code = main(["check-source", *WINDOW])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_a_healthy_openemr_database_passes_with_its_count(scratch_engine, monkeypatch, capsys):
    metadata.create_all(scratch_engine)
    with scratch_engine.begin() as conn:
        test_openemr.load(conn, metadata)
    code, output = run(monkeypatch, capsys, url_of(scratch_engine), "openemr")
    assert code == 0, output
    assert "window: dates of service 2026-03-01 to 2026-03-02" in output
    assert "ok: the openemr adapter can read this database; 5 billable encounter(s)" in output
    assert not any(value in output for value in PATIENT_VALUES)


def test_a_dropped_openemr_column_fails_and_is_named(scratch_engine, monkeypatch, capsys):
    metadata.create_all(scratch_engine)
    with scratch_engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE billing DROP COLUMN justify"))
    code, output = run(monkeypatch, capsys, url_of(scratch_engine), "openemr")
    assert code != 0
    assert "problem: table 'billing' has no column 'justify'" in output
    assert "1 problem(s)" in output


def test_the_reference_schema_passes(scratch_engine, monkeypatch, capsys):
    reference.metadata.create_all(scratch_engine)
    with scratch_engine.begin() as conn:
        test_reference.load(conn, reference.metadata)
    code, output = run(monkeypatch, capsys, url_of(scratch_engine), "reference")
    assert code == 0, output
    # Finalized encounters on Mar 1-2: 8, 10, 11, 9, 12.
    assert "5 billable encounter(s)" in output


def test_an_empty_window_passes_with_a_note(scratch_engine, monkeypatch, capsys):
    metadata.create_all(scratch_engine)
    code, output = run(monkeypatch, capsys, url_of(scratch_engine), "openemr")
    assert code == 0, output
    assert "note: no billable encounters in the window" in output


def test_the_password_is_never_printed(monkeypatch, capsys):
    # Nothing listens on port 1: the connection is refused.
    url = "postgresql+psycopg://claims:s3cr3t-pw@127.0.0.1:1/ehr"
    code, output = run(monkeypatch, capsys, url, "openemr")
    assert code == 1
    assert "cannot connect to postgresql+psycopg://claims:***@127.0.0.1:1/ehr" in output
    assert "EHR_DATABASE_URL" in output
    assert "s3cr3t-pw" not in output


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path, monkeypatch, capsys):
    path = tmp_path / "no-such-ehr.sqlite"
    code, output = run(monkeypatch, capsys, f"sqlite:///{path}", "reference")
    assert code == 1
    assert "SQLite file that does not exist" in output
    assert not path.exists()


@pytest.mark.parametrize(
    ("schema", "query_file", "message"),
    [
        ("epic", None, "EHR_SCHEMA must be one of reference, openemr, sql"),
        ("sql", None, "EHR_SCHEMA=sql needs EHR_QUERY_FILE"),
        ("sql", "/nowhere/encounters.sql", "EHR_QUERY_FILE /nowhere/encounters.sql cannot be"),
    ],
)
def test_configuration_mistakes_name_the_setting(
    tmp_path, monkeypatch, capsys, schema, query_file, message
):
    path = tmp_path / "ehr.sqlite"
    sa.create_engine(f"sqlite:///{path}").connect().close()
    code, output = run(monkeypatch, capsys, f"sqlite:///{path}", schema, query_file)
    assert code == 1
    assert message in output


def test_a_url_that_is_not_a_url_is_named(monkeypatch, capsys):
    code, output = run(monkeypatch, capsys, "openemr on the billing server", "openemr")
    assert code == 1
    assert "EHR_DATABASE_URL is not a SQLAlchemy URL" in output


def test_a_missing_driver_names_the_extra():
    report = check_source(
        "mssql+nosuchdriver://u:pw@host/db", "reference", None, date(2026, 3, 1), date(2026, 3, 2)
    )
    assert not report.ok
    assert "claims_pipeline[mssql]" in report.problems[0]
    assert report.database == "mssql+nosuchdriver://u:***@host/db"


def test_from_after_to_is_a_usage_error(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setenv("EHR_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert main(["check-source", "--from", "2026-03-05", "--to", "2026-03-01"]) == 2
