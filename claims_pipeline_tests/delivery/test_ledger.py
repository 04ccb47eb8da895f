import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    update,
)

from claims_pipeline.delivery.ledger import (
    SCHEMA_VERSION,
    Acknowledgement,
    ClaimState,
    DeliveryLedger,
    claim_ledger,
    delivery_locks,
    schema_table,
)
from claims_pipeline.errors import ConfigurationError, DeliveryError
from claims_pipeline_tests.databases import fresh_database_fixture

DAY = date(2026, 11, 20)
NPI = "1234567893"


def ack(key, content_hash="h1", claim_id=1, npi=NPI, day=DAY):
    return Acknowledgement(npi, key, content_hash, claim_id, day)


@pytest.fixture
def ledger(tmp_path):
    return DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")


def test_one_row_per_encounter_per_tenant(ledger):
    ledger.record(7, [ack("A-1", "h1", 10), ack("A-2", "h2", 11)], run_id="run-1")
    ledger.record(8, [ack("A-1", "other", 99)], run_id="run-2")
    found = ledger.lookup(7, ["A-1", "A-2", "A-3"])
    assert {k: (e.content_hash, e.claim_id) for k, e in found.items()} == {
        "A-1": ("h1", 10),
        "A-2": ("h2", 11),
    }
    assert found["A-1"].state is ClaimState.DELIVERED and found["A-1"].service_date == DAY
    assert ledger.lookup(8, ["A-1"])["A-1"].claim_id == 99


def test_an_acknowledgement_under_a_new_npi_replaces_the_row_and_keeps_first_sent(ledger):
    ledger.record(7, [ack("A-1", "h1", 10)], run_id="run-1")
    with ledger.engine.connect() as conn:
        first = conn.execute(select(claim_ledger.c.first_sent_at)).scalar_one()
    ledger.record(7, [ack("A-1", "h2", 10, npi="1245319599")], run_id="run-2")
    with ledger.engine.connect() as conn:
        row = conn.execute(select(claim_ledger)).one()
    assert (row.content_hash, row.provider_npi, row.run_id) == ("h2", "1245319599", "run-2")
    assert row.first_sent_at == first and row.last_sent_at >= first
    assert ledger.count(7) == 1


def test_lookup_handles_more_keys_than_one_query_binds(ledger):
    ledger.record(1, [ack(f"K-{i}", claim_id=i) for i in range(1500)], run_id="r")
    assert len(ledger.lookup(1, [f"K-{i}" for i in range(2000)])) == 1500


def test_a_days_states_and_hashes_come_from_one_query_each(ledger):
    ledger.record(
        1, [ack("A-1", "h1"), ack("A-2", "h2"), ack("B-1", "h3", day=DAY + timedelta(1))], "r"
    )
    ledger.record(2, [ack("A-3", "other")], "r")
    ledger.mark(1, "A-2", ClaimState.WITHDRAWN, note="voided")
    assert ledger.states_on_days(1, [DAY]) == {
        "A-1": ClaimState.DELIVERED,
        "A-2": ClaimState.WITHDRAWN,
    }
    assert ledger.hashes_on_days(1, [DAY, DAY + timedelta(1)]) == {
        "A-1": "h1",
        "A-2": "h2",
        "B-1": "h3",
    }
    assert ledger.hashes_on_days(1, [DAY - timedelta(1)]) == {}


def test_recording_stores_values_as_sqlalchemy_binds_them(ledger):
    """Acknowledgements go to the driver with values converted once per write: the stored
    rows equal those of an ordinary SQLAlchemy insert, time zones and microseconds kept."""
    from claims_pipeline.delivery import ledger as ledger_module

    instants = [
        None,
        datetime(2026, 11, 20, 8, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 11, 20, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))),  # = the above
    ]
    acks = [
        Acknowledgement(NPI, f"A-{i}", f"h{i}", i, DAY, extracted_at)
        for i, extracted_at in enumerate(instants)
    ]
    ledger.record(1, acks, run_id="r1")
    now = datetime(2026, 11, 21, 1, 2, 3, 456789, tzinfo=UTC)
    expected = DeliveryLedger(f"sqlite:///{ledger.engine.url.database}.expected")
    with expected.engine.begin() as conn:
        conn.execute(
            insert(claim_ledger),
            ledger_module._acknowledged_rows(1, acks, "r1", now),
        )
    columns = [c for c in claim_ledger.c if not c.name.endswith(("_sent_at", "updated_at"))]
    with ledger.engine.connect() as conn, expected.engine.connect() as other:
        query = select(*columns).order_by(claim_ledger.c.claim_submitter_identifier)
        assert conn.execute(query).all() == other.execute(query).all()
        raw = "SELECT claim_submitter_identifier, extracted_at FROM claim_ledger ORDER BY 1"
        assert conn.exec_driver_sql(raw).all() == other.exec_driver_sql(raw).all()


def test_held_release_and_resolve(ledger):
    ledger.record(1, [ack("A-1"), ack("A-2")], run_id="r")
    with pytest.raises(DeliveryError, match="A-1 of tenant 1 is not held"):
        ledger.release(1, "A-1")
    ledger.mark(1, "A-1", ClaimState.HELD, note="npi changed", held_npi="1245319599")
    entry = ledger.release(1, "A-1")
    assert entry.held_npi == "1245319599"
    assert ledger.lookup(1, ["A-1"])["A-1"].released_npi == "1245319599"
    with pytest.raises(DeliveryError, match="not withdrawn"):
        ledger.resolve(1, "A-2")
    ledger.mark(1, "A-2", ClaimState.WITHDRAWN, note="voided")
    assert [e.claim_submitter_identifier for e in ledger.open_entries(1)] == ["A-1", "A-2"]
    ledger.resolve(1, "A-2")
    assert ledger.lookup(1, ["A-2"])["A-2"].state is ClaimState.RESOLVED


def test_synced_days_keep_the_latest_fingerprint(ledger):
    ledger.record_days(1, {DAY: "1:a", DAY + timedelta(days=1): "1:b"}, "r1")
    ledger.record_days(1, {DAY: "2:c"}, "r2")
    assert ledger.synced_fingerprints(1, before=DAY + timedelta(days=5)) == {
        DAY: "2:c",
        DAY + timedelta(days=1): "1:b",
    }
    assert ledger.synced_fingerprints(1, before=DAY) == {}
    assert ledger.synced_fingerprints(2, before=DAY + timedelta(days=5)) == {}


def test_reopening_keeps_rows_and_version(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    DeliveryLedger(url).record(1, [ack("A-1")], run_id="r")
    reopened = DeliveryLedger(url)
    assert reopened.count(1) == 1
    with reopened.engine.connect() as conn:
        assert conn.execute(select(schema_table.c.version)).scalars().all() == [SCHEMA_VERSION]


def test_a_ledger_from_a_newer_release_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    ledger = DeliveryLedger(url)
    with ledger.engine.begin() as conn:
        conn.execute(update(schema_table).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(ConfigurationError, match="CLAIMS_LEDGER_URL"):
        DeliveryLedger(url)


def test_the_lock_makes_a_second_holder_wait_until_the_first_leaves(ledger):
    order = []
    first = ledger.lock(1, "run-a", poll_seconds=0.05)
    first.__enter__()

    def second():
        with ledger.lock(1, "run-b", poll_seconds=0.05):
            order.append("b")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.4)
    order.append("a")  # b is still waiting
    first.__exit__(None, None, None)
    thread.join(10)
    assert order == ["a", "b"]
    with ledger.lock(2, "run-c", poll_seconds=0.05):  # another tenant is independent
        pass


def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it(ledger):
    stale = ledger.lock(1, "killed-run", lease_seconds=0.2, poll_seconds=0.05)
    stale.__enter__()
    stale._stop.set()  # a killed process renews nothing
    with ledger.lock(1, "next-run", wait_seconds=5, poll_seconds=0.05) as taken:
        assert taken.waited >= 0.1
        with pytest.raises(DeliveryError, match="taken over"):
            stale.renew()
    with ledger.engine.connect() as conn:
        assert conn.execute(select(delivery_locks)).all() == []


def test_waiting_too_long_names_the_holder(ledger):
    with (
        ledger.lock(1, "long-run", poll_seconds=0.05),
        pytest.raises(DeliveryError, match="long-run"),
        ledger.lock(1, "other", wait_seconds=0.2, poll_seconds=0.05),
    ):
        pass


ledger_engine = fresh_database_fixture("ledger_engine", scope="function")


def test_ledger_on_every_database(ledger_engine):
    """SQLite by default, PostgreSQL in production, MySQL/MariaDB where a practice has it;
    keys that differ only by case are two claims everywhere."""
    url = ledger_engine.url.render_as_string(hide_password=False)
    ledger = DeliveryLedger(url)
    ledger.record(3, [ack(f"K-{i}", f"h{i}", 100 + i) for i in range(450)], run_id="r1")
    ledger.record(3, [ack("K-0", "changed", 100)], run_id="r2")
    ledger.record(3, [ack("abc-1", "lower", 1), ack("ABC-1", "upper", 2)], run_id="r3")
    found = ledger.lookup(3, [f"K-{i}" for i in range(500)] + ["abc-1", "ABC-1", "Abc-1"])
    assert len(found) == 452
    assert found["K-0"].content_hash == "changed"
    assert found["K-449"].claim_id == 549
    assert (found["abc-1"].content_hash, found["ABC-1"].content_hash) == ("lower", "upper")
    with ledger.lock(3, "r4", poll_seconds=0.05) as lock:
        lock.renew()
    assert DeliveryLedger(url).count(3) == 452  # reopened: schema kept, rows kept
    ledger.dispose()


def test_a_ledger_from_before_the_day_index_gains_it(ledger_engine):
    """The end-of-run checks read the ledger one date of service at a time: without the index
    each read scans every row the tenant ever sent (30 days of 500,000 claims: 15 million)."""
    url = ledger_engine.url.render_as_string(hide_password=False)
    DeliveryLedger(url).record(3, [ack("K-1", "h1", 1)], run_id="r1")
    with ledger_engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP INDEX ix_claim_ledger_day"
            + (" ON claim_ledger" if ledger_engine.dialect.name in ("mysql", "mariadb") else "")
        )
    assert "ix_claim_ledger_day" not in {
        i["name"] for i in inspect(ledger_engine).get_indexes("claim_ledger")
    }
    ledger = DeliveryLedger(url)
    indexes = {
        i["name"]: i["column_names"] for i in inspect(ledger_engine).get_indexes("claim_ledger")
    }
    assert indexes["ix_claim_ledger_day"] == ["tenant_id", "service_date"]
    assert ledger.hashes_on_days(3, [DAY]) == {"K-1": "h1"}
    DeliveryLedger(url).dispose()  # opening again does not try to create it twice
    ledger.dispose()


def test_a_days_claims_are_read_through_the_day_index(ledger):
    ledger.record(1, [ack(f"K-{i}", claim_id=i) for i in range(50)], run_id="r")
    c = claim_ledger.c
    query = select(c.claim_submitter_identifier, c.content_hash).where(
        c.tenant_id == 1, c.service_date.in_([DAY])
    )
    with ledger.engine.connect() as conn:
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "ix_claim_ledger_day" in plan


def _version_1_ledger(engine):
    """The tables and rows a release with ledger schema 1 left behind."""
    legacy = MetaData()
    table = Table(
        "claims_delivery_ledger",
        legacy,
        Column("tenant_id", BigInteger, primary_key=True, autoincrement=False),
        Column("provider_npi", String(10), primary_key=True),
        Column("claim_submitter_identifier", String(20), primary_key=True),
        Column("content_hash", String(64), nullable=False),
        Column("claim_id", BigInteger, nullable=False),
        Column("partition_key", String(32)),
        Column("run_id", String(64)),
        Column("first_sent_at", DateTime(timezone=True), nullable=False),
        Column("last_sent_at", DateTime(timezone=True), nullable=False),
    )
    version = Table(
        "claims_delivery_ledger_schema",
        legacy,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )
    legacy.create_all(engine)
    earlier = datetime(2026, 11, 1, tzinfo=UTC)
    later = earlier + timedelta(days=1)
    row = {"tenant_id": 3, "run_id": "old", "first_sent_at": earlier}
    with engine.begin() as conn:
        conn.execute(insert(version), {"version": 1, "applied_at": earlier})
        conn.execute(
            insert(table),
            [
                row
                | {
                    "provider_npi": NPI,
                    "claim_submitter_identifier": f"K-{i}",
                    "content_hash": f"h{i}",
                    "claim_id": 100 + i,
                    "partition_key": "2026-10-30",
                    "last_sent_at": earlier,
                }
                for i in range(5)
            ]
            # sent twice under two NPIs by the old release: the later one is what counts
            + [
                row
                | {
                    "provider_npi": "1245319599",
                    "claim_submitter_identifier": "K-0",
                    "content_hash": "h0-new",
                    "claim_id": 900,
                    "partition_key": "2026-10-31",
                    "last_sent_at": later,
                }
            ],
        )


def test_a_version_1_ledger_migrates_in_place(ledger_engine):
    _version_1_ledger(ledger_engine)
    url = ledger_engine.url.render_as_string(hide_password=False)
    ledger = DeliveryLedger(url)
    found = ledger.lookup(3, [f"K-{i}" for i in range(5)])
    assert {k: (e.provider_npi, e.content_hash, e.claim_id) for k, e in found.items()} == {
        "K-0": ("1245319599", "h0-new", 900),
        **{f"K-{i}": (NPI, f"h{i}", 100 + i) for i in range(1, 5)},
    }
    assert found["K-1"].service_date == date(2026, 10, 30)
    assert {e.state for e in found.values()} == {ClaimState.DELIVERED}
    with ledger.engine.connect() as conn:
        assert max(conn.execute(select(schema_table.c.version)).scalars()) == SCHEMA_VERSION
    assert DeliveryLedger(url).count(3) == 5  # a second open copies nothing again
    ledger.dispose()


def test_refused_and_pending_claims_stay_open_until_delivered_or_resolved(ledger):
    from decimal import Decimal

    from claims_pipeline.delivery.ledger import Attempt

    refused = Attempt("A-1", DAY, "rejected", "HTTP 422: units", "Aetna", NPI, Decimal("150.10"))
    ledger.record_attempts(1, [refused, Attempt("A-2", DAY, "pending", "HTTP 503")], "r1")
    ledger.record_attempts(1, [refused], "r2")
    unsent = {u.claim_submitter_identifier: u for u in ledger.unsent(1)}
    assert set(unsent) == {"A-1", "A-2"}
    assert (unsent["A-1"].attempts, unsent["A-1"].billed_amount) == (2, Decimal("150.10"))
    assert [a.run_id for a in ledger.attempts(1, "A-1")] == ["r1", "r2"]
    ledger.record(1, [ack("A-2")], run_id="r3")  # delivered at last
    ledger.resolve(1, "A-1")  # a person gave up on it
    assert ledger.unsent(1) == []
    assert [a.outcome for a in ledger.attempts(1, "A-1")] == ["rejected", "rejected", "resolved"]
    with pytest.raises(DeliveryError, match="not withdrawn, refused or pending"):
        ledger.resolve(1, "A-1")


@pytest.mark.parametrize("upsert", [True, False], ids=["upsert", "sql-server-path"])
def test_an_acknowledgement_clears_a_hold_and_keeps_first_sent(tmp_path, monkeypatch, upsert):
    """SQL Server has no INSERT .. ON CONFLICT: its path must behave the same."""
    from claims_pipeline.delivery import ledger as ledger_module

    if not upsert:
        monkeypatch.setattr(ledger_module, "_upsert", lambda dialect: None)
    ledger = DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")
    ledger.record(7, [ack("A-1", "h1", 10), ack("A-2", "h1", 11)], run_id="run-1")
    ledger.mark(7, "A-1", ClaimState.HELD, note="npi changed", held_npi="1245319599")
    ledger.release(7, "A-1")
    with ledger.engine.connect() as conn:
        first = conn.execute(
            select(claim_ledger.c.first_sent_at).where(
                claim_ledger.c.claim_submitter_identifier == "A-1"
            )
        ).scalar_one()
    ledger.record(7, [ack("A-1", "h2", 10, npi="1245319599"), ack("A-3", "h3", 12)], "run-2")
    with ledger.engine.connect() as conn:
        rows = {r.claim_submitter_identifier: r for r in conn.execute(select(claim_ledger))}
    assert {k: (r.content_hash, r.run_id, r.state) for k, r in rows.items()} == {
        "A-1": ("h2", "run-2", "delivered"),
        "A-2": ("h1", "run-1", "delivered"),
        "A-3": ("h3", "run-2", "delivered"),
    }
    assert (rows["A-1"].held_npi, rows["A-1"].released_npi, rows["A-1"].note) == (None,) * 3
    assert rows["A-1"].provider_npi == "1245319599" and rows["A-1"].first_sent_at == first
