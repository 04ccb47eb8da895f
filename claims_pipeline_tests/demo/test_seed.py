"""The demo generator: deterministic, realistic, and wrong only where it says it is."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import simple_icd_10_cm as icd
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import luhn

from claims_pipeline.demo import catalog
from claims_pipeline.demo.seed import (
    DEFECT_SHARE,
    DEFECTS,
    INVALID_NPI,
    MISSING_MEMBER_ID,
    RETIRED_DIAGNOSIS_CODE,
    ZERO_UNITS,
    SeedSummary,
    is_seeded,
    seed_demo,
)
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.sources.reference import ReferenceSource, metadata
from claims_pipeline_tests.databases import fresh_database_fixture

TODAY = date(2026, 3, 10)
DAYS, PER_DAY = 7, 200
server_engine = fresh_database_fixture("server_engine")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[sa.Engine, SeedSummary]:
    url = sqlite_url(tmp_path_factory.mktemp("demo") / "ehr.db")
    summary = seed_demo(url, DAYS, PER_DAY, today=TODAY)
    engine = sa.create_engine(url)
    yield engine, summary
    engine.dispose()


@pytest.fixture(scope="module")
def lines(demo) -> list[dict]:
    engine, summary = demo
    with engine.connect() as conn:
        chunks = ReferenceSource().extract(conn, summary.first_service_date, TODAY, chunk_rows=500)
        return [row for chunk in chunks for row in chunk]


def dump(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            for table in metadata.sorted_tables
        }


def by_encounter(lines: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in lines:
        grouped.setdefault(row["encounter_id"], []).append(row)
    return grouped


def test_same_arguments_give_the_same_rows(demo, tmp_path):
    engine, summary = demo
    again_url = sqlite_url(tmp_path / "again.db")
    assert seed_demo(again_url, DAYS, PER_DAY, today=TODAY) == summary
    again = sa.create_engine(again_url)
    assert dump(again) == dump(engine)
    again.dispose()


def test_another_seed_gives_another_practice(demo, tmp_path):
    engine, _ = demo
    other = sa.create_engine(sqlite_url(tmp_path / "other.db"))
    seed_demo(str(other.url), DAYS, PER_DAY, today=TODAY, seed=8)
    assert dump(other)["patients"] != dump(engine)["patients"]
    other.dispose()


def test_summary_counts_what_was_written(demo, lines):
    engine, summary = demo
    tables = dump(engine)
    assert summary.encounters == len(tables["encounters"]) == DAYS * PER_DAY
    assert summary.patients == len(tables["patients"])
    assert summary.providers == len(tables["providers"])
    assert summary.charge_lines == len(tables["charges"])
    assert summary.billable_charge_lines == len(lines)
    statuses = Counter(row.status for row in tables["encounters"])
    assert set(statuses) == {"finalized", "draft", "cancelled"}
    assert summary.billable_encounters == statuses["finalized"]
    assert 0.85 < statuses["finalized"] / summary.encounters < 0.95
    assert len(by_encounter(lines)) == summary.billable_encounters


def test_dates_run_for_the_given_days_ending_yesterday(demo):
    engine, summary = demo
    assert summary.first_service_date == TODAY - timedelta(days=DAYS)
    assert summary.last_service_date == TODAY - timedelta(days=1)
    per_day = Counter(row.service_date for row in dump(engine)["encounters"])
    assert per_day == {TODAY - timedelta(days=n): PER_DAY for n in range(1, DAYS + 1)}


def test_dates_default_to_ending_yesterday(tmp_path):
    summary = seed_demo(sqlite_url(tmp_path / "today.db"), 2, 3)
    assert summary.last_service_date == date.today() - timedelta(days=1)


def test_about_three_percent_of_billable_encounters_carry_one_defect_each(demo):
    engine, summary = demo
    assert len(summary.defects) == round(summary.billable_encounters * DEFECT_SHARE)
    assert Counter(summary.defects.values()).keys() == set(DEFECTS)
    finalized = {str(row.id) for row in dump(engine)["encounters"] if row.status == "finalized"}
    assert summary.defects.keys() <= finalized


def npi_valid(npi: str | None) -> bool:
    return bool(npi and re.fullmatch(r"\d{10}", npi) and luhn.is_valid("80840" + npi))


def found_defects(lines: list[dict]) -> dict[str, str]:
    """Each encounter's planted-defect kinds, as claim validation would see them."""
    checks = {
        MISSING_MEMBER_ID: lambda rows: rows[0]["patient_member_id"] is None,
        RETIRED_DIAGNOSIS_CODE: lambda rows: (
            catalog.RETIRED_ICD10 in rows[0]["claim_diagnosis_codes"].split(",")
        ),
        INVALID_NPI: lambda rows: not all(npi_valid(r["provider_npi"]) for r in rows),
        ZERO_UNITS: lambda rows: any(r["units"] == "0" for r in rows),
    }
    found = {}
    for encounter, rows in by_encounter(lines).items():
        kinds = [kind for kind, check in checks.items() if check(rows)]
        if kinds:
            found[encounter] = ",".join(kinds)
    return found


def test_exactly_the_planted_defects_are_there(demo, lines):
    _, summary = demo
    assert found_defects(lines) == summary.defects


def test_every_provider_npi_is_valid_except_the_planted_ones(demo):
    engine, summary = demo
    invalid = [row for row in dump(engine)["providers"] if not npi_valid(row.npi)]
    assert len(invalid) == Counter(summary.defects.values())[INVALID_NPI]


def test_every_diagnosis_is_billable_except_the_planted_retired_code(demo):
    engine, _ = demo
    tables = dump(engine)
    written = {row.icd10_code for row in tables["diagnoses"]}
    written |= {code for row in tables["charges"] for code in row.diagnosis_codes.split(",")}
    assert written - {catalog.RETIRED_ICD10} <= catalog.ALL_ICD10_CODES
    assert all(icd.is_valid_item(code) and icd.is_leaf(code) for code in catalog.ALL_ICD10_CODES)
    assert not icd.is_leaf(catalog.RETIRED_ICD10)


HCPCS = re.compile(r"\d{5}|\d{4}[FTU]|[A-V]\d{4}")
MODIFIER = re.compile(r"[A-Z0-9]{2}")


def test_everything_else_looks_like_a_valid_claim(lines):
    """A light stand-in for claim validation: the encounters without a planted defect carry
    everything a claim needs, in shapes the rules accept."""
    pos = {f.place_of_service for f in catalog.FACILITIES} | {"10"}
    for rows in by_encounter(lines).values():
        first = rows[0]
        assert first["patient_name"] and first["provider_name"] and first["provider_street"]
        assert first["patient_gender"] in {"Male", "Female", "Unknown"}
        assert first["payer_name"] and first["visit_number"]
        assert len(re.sub(r"\D", "", first["payer_phone"]).removeprefix("1")) == 10
        assert first["place_of_service"] in pos
        assert first["patient_dob"] < first["service_date"]
        claim_codes = first["claim_diagnosis_codes"].split(",")
        assert 1 <= len(claim_codes) == len(set(claim_codes)) <= 12
        for row in rows:
            assert HCPCS.fullmatch(row["hcpcs_code"])
            assert all(MODIFIER.fullmatch(m) for m in (row["modifiers"] or "").split(":") if m)
            linked = row["line_diagnosis_codes"].split(",")
            assert 1 <= len(linked) <= 4 and set(linked) <= set(claim_codes)
            assert Decimal(row["line_amount"]) > 0
            assert row["line_service_date_from"] in (None, row["service_date"])


def test_the_demo_uses_the_adapter_paths(lines):
    # Blank units, explicit line dates, modifiers, line providers and POS overrides all occur.
    assert any(row["units"] is None for row in lines)
    assert any(row["line_service_date_from"] is not None for row in lines)
    assert {"25", "95", "RT"} <= {row["modifiers"] for row in lines}
    assert any(row["place_of_service"] == "10" for row in lines)
    assert any(
        row["provider_npi"] != rows[0]["provider_npi"]
        for rows in by_encounter(lines).values()
        for row in rows
    )


def test_is_seeded_and_refusing_to_seed_twice(tmp_path):
    url = sqlite_url(tmp_path / "ehr.db")
    assert not is_seeded(url)
    seed_demo(url, 1, 5, today=TODAY)
    assert is_seeded(url)
    with pytest.raises(ConfigurationError, match="already holds encounters"):
        seed_demo(url, 1, 5, today=TODAY)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    days=st.integers(1, 4),
    per_day=st.integers(0, 120),
    seed=st.integers(0, 2**32),
)
def test_any_run_plants_its_share_of_defects_on_billable_encounters(tmp_path, days, per_day, seed):
    path = tmp_path / f"ehr-{uuid.uuid4().hex}.db"  # hypothesis may replay an example
    summary = seed_demo(sqlite_url(path), days, per_day, today=TODAY, seed=seed)
    assert summary.encounters == days * per_day
    assert len(summary.defects) == round(summary.billable_encounters * DEFECT_SHARE)
    engine = sa.create_engine(sqlite_url(path))
    with engine.connect() as conn:
        rows = [
            row
            for chunk in ReferenceSource().extract(conn, summary.first_service_date, TODAY)
            for row in chunk
        ]
    engine.dispose()
    assert len(by_encounter(rows)) == summary.billable_encounters
    assert len(rows) == summary.billable_charge_lines
    assert found_defects(rows) == summary.defects


def test_every_dialect_reads_back_the_same_lines(server_engine, lines):
    seed_demo(server_engine.url.render_as_string(hide_password=False), DAYS, PER_DAY, today=TODAY)
    with server_engine.connect() as conn:
        chunks = ReferenceSource().extract(
            conn, TODAY - timedelta(days=DAYS), TODAY, chunk_rows=500
        )
        assert [row for chunk in chunks for row in chunk] == lines
