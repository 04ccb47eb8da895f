"""Day fingerprints find edits of any age on every database, and only the edited days."""

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from claims_pipeline.demo.seed import seed_demo
from claims_pipeline.errors import SourceError
from claims_pipeline.sources.changes import (
    EMPTY,
    changed_days,
    contiguous_ranges,
    day_fingerprints,
    fingerprints_alongside,
    fingerprints_for,
)
from claims_pipeline.sources.connection import read_only_engine
from claims_pipeline_tests.databases import fresh_database_fixture

TODAY = date(2026, 6, 1)
FIRST = TODAY - timedelta(days=6)

ehr_engine = fresh_database_fixture("ehr_engine", scope="function")


def fingerprints(engine):
    with engine.connect() as conn:
        return day_fingerprints(conn, "reference", FIRST, TODAY)


def test_edits_voids_deletes_and_moves_change_exactly_their_days(ehr_engine):
    seed_demo(
        ehr_engine.url.render_as_string(hide_password=False),
        days=6,
        encounters_per_day=5,
        today=TODAY,
    )
    synced = fingerprints(ehr_engine)
    assert sorted(synced) == [FIRST + timedelta(days=i) for i in range(6)]
    assert fingerprints(ehr_engine) == synced  # stable
    with ehr_engine.connect() as conn:
        ids = {
            day: conn.execute(
                sa.text("SELECT id FROM encounters WHERE service_date = :d ORDER BY id"), {"d": day}
            )
            .scalars()
            .all()
            for day in synced
        }
    days = sorted(synced)
    with ehr_engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE charges SET line_amount = line_amount + 1 WHERE id = "
                "(SELECT min(id) FROM charges WHERE encounter_id = :e)"
            ),
            {"e": ids[days[0]][0]},
        )
        conn.execute(
            sa.text("UPDATE encounters SET status = 'voided' WHERE id = :e"), {"e": ids[days[2]][0]}
        )
        conn.execute(
            sa.text("UPDATE diagnoses SET icd10_code = NULL WHERE encounter_id = :e"),
            {"e": ids[days[3]][0]},
        )
        conn.execute(
            sa.text("UPDATE encounters SET service_date = :d WHERE id = :e"),
            {"d": days[5], "e": ids[days[4]][0]},
        )
    with ehr_engine.connect() as conn:
        found = changed_days(conn, "reference", synced, TODAY)
        assert found == [days[0], days[2], days[3], days[4], days[5]]
        assert fingerprints_for(conn, "reference", [TODAY + timedelta(days=3)]) == {
            TODAY + timedelta(days=3): EMPTY
        }


def test_contiguous_ranges():
    d = date(2026, 1, 1)
    days = [
        d,
        d + timedelta(days=1),
        d + timedelta(days=3),
        d + timedelta(days=4),
        d + timedelta(days=9),
    ]
    assert contiguous_ranges(list(reversed(days))) == [
        (d, d + timedelta(days=1)),
        (d + timedelta(days=3), d + timedelta(days=4)),
        (d + timedelta(days=9), d + timedelta(days=9)),
    ]


def test_fingerprints_alongside_come_from_a_snapshot_taken_before_the_block(ehr_engine):
    # On SQLite another process hashes the rows, on the servers a second connection: either
    # way an edit committed after the block began (the lines read in the block may miss it)
    # must not be in the fingerprint, so that the next night's fingerprint differs.
    url = ehr_engine.url.render_as_string(hide_password=False)
    seed_demo(url, days=6, encounters_per_day=5, today=TODAY)
    if ehr_engine.dialect.name == "sqlite":  # readers and a writer at once, as an EHR runs it
        with ehr_engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    days = [FIRST + timedelta(days=i) for i in range(8)]  # two days past the data: EMPTY
    engine = read_only_engine(url)
    with engine.connect() as conn:
        expected = fingerprints_for(conn, "reference", days)
        with fingerprints_alongside(conn, "reference", days) as alongside:
            with ehr_engine.begin() as edit:
                edit.execute(sa.text("UPDATE charges SET line_amount = line_amount + 1"))
            assert alongside() == expected
        assert EMPTY in expected.values()
        after = fingerprints_for(conn, "reference", days)
    assert {day for day in days if after[day] != expected[day]} == {
        day for day in days if expected[day] != EMPTY
    }
    engine.dispose()


def test_a_failed_fingerprint_process_fails_the_extract_by_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with sa.create_engine(url).begin() as setup:
        setup.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
    engine = read_only_engine(url)
    with (
        engine.connect() as conn,
        pytest.raises(SourceError, match="Fingerprinting the EHR rows failed"),
        fingerprints_alongside(conn, "reference", [TODAY]) as alongside,
    ):
        alongside()
    engine.dispose()
