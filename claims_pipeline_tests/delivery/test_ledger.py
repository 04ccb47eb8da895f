from sqlalchemy import select, update

from claims_pipeline.delivery.ledger import (
    SCHEMA_VERSION,
    Acknowledgement,
    DeliveryLedger,
    ledger_table,
    schema_table,
)
from claims_pipeline.errors import ConfigurationError
from claims_pipeline_tests.databases import fresh_database_fixture


def ack(key, content_hash="h1", claim_id=1, npi="1234567893"):
    return Acknowledgement(npi, key, content_hash, claim_id, "2026-11-20")


def test_records_and_looks_up_per_tenant(tmp_path):
    ledger = DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")
    ledger.record(7, [ack("A-1", "h1", 10), ack("A-2", "h2", 11)], run_id="run-1")
    ledger.record(8, [ack("A-1", "other", 99)], run_id="run-2")
    found = ledger.lookup(7, [("1234567893", "A-1"), ("1234567893", "A-2"), ("1234567893", "A-3")])
    assert {k: (v.content_hash, v.claim_id) for k, v in found.items()} == {
        ("1234567893", "A-1"): ("h1", 10),
        ("1234567893", "A-2"): ("h2", 11),
    }
    assert ledger.lookup(8, [("1234567893", "A-1")])[("1234567893", "A-1")].claim_id == 99


def test_re_recording_updates_hash_and_keeps_first_sent(tmp_path):
    ledger = DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")
    ledger.record(7, [ack("A-1", "h1", 10)], run_id="run-1")
    with ledger.engine.connect() as conn:
        first = conn.execute(select(ledger_table.c.first_sent_at)).scalar_one()
    ledger.record(7, [ack("A-1", "h2", 10)], run_id="run-2")
    with ledger.engine.connect() as conn:
        row = conn.execute(select(ledger_table)).one()
    assert (row.content_hash, row.run_id, row.first_sent_at) == ("h2", "run-2", first)
    assert row.last_sent_at >= first
    assert ledger.count(7) == 1


def test_lookup_handles_more_keys_than_one_query_binds(tmp_path):
    ledger = DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")
    ledger.record(1, [ack(f"K-{i}", claim_id=i) for i in range(1500)], run_id="r")
    found = ledger.lookup(1, [("1234567893", f"K-{i}") for i in range(2000)])
    assert len(found) == 1500


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
    try:
        DeliveryLedger(url)
    except ConfigurationError as error:
        assert "CLAIMS_LEDGER_URL" in str(error)
    else:
        raise AssertionError("a newer ledger schema must be refused")


ledger_engine = fresh_database_fixture("ledger_engine", scope="function")


def test_ledger_on_every_database(ledger_engine):
    """SQLite by default, PostgreSQL in production, MySQL/MariaDB where a practice has it."""
    url = ledger_engine.url.render_as_string(hide_password=False)
    ledger = DeliveryLedger(url)
    ledger.record(3, [ack(f"K-{i}", f"h{i}", 100 + i) for i in range(450)], run_id="r1")
    ledger.record(3, [ack("K-0", "changed", 100)], run_id="r2")
    found = ledger.lookup(3, [("1234567893", f"K-{i}") for i in range(500)])
    assert len(found) == 450
    assert found[("1234567893", "K-0")].content_hash == "changed"
    assert found[("1234567893", "K-449")].claim_id == 549
    assert DeliveryLedger(url).count(3) == 450  # reopened: schema kept, rows kept
    ledger.dispose()


def test_dialects_without_an_upsert_replace_rows_and_keep_first_sent(tmp_path, monkeypatch):
    """SQL Server has no INSERT .. ON CONFLICT: the portable path must behave the same."""
    from claims_pipeline.delivery import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "_upsert", lambda dialect: None)
    ledger = DeliveryLedger(f"sqlite:///{tmp_path}/ledger.sqlite")
    ledger.record(7, [ack("A-1", "h1", 10), ack("A-2", "h1", 11)], run_id="run-1")
    with ledger.engine.connect() as conn:
        first = dict(
            conn.execute(
                select(ledger_table.c.claim_submitter_identifier, ledger_table.c.first_sent_at)
            ).all()
        )
    ledger.record(7, [ack("A-1", "h2", 10), ack("A-3", "h3", 12)], run_id="run-2")
    with ledger.engine.connect() as conn:
        rows = {r.claim_submitter_identifier: r for r in conn.execute(select(ledger_table))}
    assert {k: (r.content_hash, r.run_id) for k, r in rows.items()} == {
        "A-1": ("h2", "run-2"),
        "A-2": ("h1", "run-1"),
        "A-3": ("h3", "run-2"),
    }
    assert rows["A-1"].first_sent_at == first["A-1"]
