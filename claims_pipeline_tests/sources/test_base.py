from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from claims_pipeline.sources.base import (
    UNREADABLE,
    UNREADABLE_KEY,
    LenientRows,
    RowBlock,
    as_date,
    as_text,
    convert_each,
    decode_text,
    read_date,
    read_int,
    read_text,
    stream_batches,
    to_record_batch,
)
from claims_pipeline.sources.connection import read_only_engine


def test_driver_values_are_coerced_and_unreadable_dates_count_as_unknown():
    batch = to_record_batch(
        [
            {
                "service_date": datetime(2026, 11, 20, 9, 30),
                "encounter_id": 17,
                "claim_submitter_identifier": "17-4",
                "patient_dob": "04/12/1985",  # text a custom query may return: never guessed
                "line_service_date_from": "0000-00-00",
                "line_service_date_to": "2026-11-20",
                "line_number": 1,
            }
        ]
    ).to_pylist()[0]
    assert batch["service_date"] == date(2026, 11, 20)
    assert batch["encounter_id"] == "17"
    assert batch["patient_dob"] is None
    assert batch["line_service_date_from"] is None
    assert batch["line_service_date_to"] == date(2026, 11, 20)


def test_typed_rows_and_raw_driver_rows_store_the_same_values():
    from decimal import Decimal

    typed = {
        "service_date": date(2026, 11, 20),
        "encounter_id": "17",
        "claim_submitter_identifier": "17-4",
        "units": "2",
        "line_amount": "150.00",
        "line_number": 1,
    }
    raw = typed | {"encounter_id": 17, "units": Decimal("2"), "line_amount": Decimal("150.00")}
    assert to_record_batch([typed]).to_pylist() == to_record_batch([raw]).to_pylist()


# -- reading what the driver hands over -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (None, None),
        ("", None),
        ("0000-00-00", None),  # MySQL's "no date"
        ("0000-00-00 00:00:00", None),
        ("2026-03-02", date(2026, 3, 2)),
        ("2026-03-02 10:15:00", date(2026, 3, 2)),
        (datetime(2026, 3, 2, 10, 15), date(2026, 3, 2)),
        ("04/12/1985", UNREADABLE),
        ("1985-02-30", UNREADABLE),
        (19850412, UNREADABLE),
        (b"2026-03-02", UNREADABLE),
        (UNREADABLE, UNREADABLE),
    ],
)
def test_read_date_names_what_is_not_a_date(value, read):
    assert read_date(value) is read if read in (None, UNREADABLE) else read_date(value) == read
    assert as_date(value) == (None if read is UNREADABLE else read)


def test_text_that_is_not_utf8_is_unreadable_not_an_error():
    assert decode_text("Núñez".encode()) == "Núñez"
    assert decode_text(b"\xff\xfeJo") is UNREADABLE
    assert read_text(b"\xc3\x28") is UNREADABLE and as_text(b"\xc3\x28") is None
    assert read_text(b" ok ") == "ok" and read_text(12345) == "12345"
    assert read_int("12") == 12 and read_int("twelve") is UNREADABLE and read_int(None) is None


def _sqlite_holding(path, table, values):
    """A SQLite file with ``table`` holding ``values`` (SQL, so that it can hold what SQLite
    stores and no driver would write: text that is not UTF-8, BLOBs, text in a number)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {table.name} VALUES {values}")
    return engine


@pytest.mark.parametrize("text_factory", [decode_text, bytes])
def test_lenient_rows_null_and_name_each_value_sqlite_cannot_convert(tmp_path, text_factory):
    table = sa.Table(
        "charges",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service_date", sa.Date),
        sa.Column("line_amount", sa.Numeric(12, 2)),
        sa.Column("line_number", sa.Integer),
        sa.Column("code", sa.String(10)),
    )
    engine = _sqlite_holding(
        tmp_path / "ehr.db",
        table,
        "(1, '2026-03-02', 220, 1, '99213'),"
        " (2, '03/02/2026', 'twelve', 'one', CAST(X'39FF' AS TEXT)),"
        " (3, '2026-03-02', 150.5, 2, X'3939')",
    )
    lenient = LenientRows(sa.select(table).order_by(table.c.id), engine.dialect)

    @sa.event.listens_for(engine, "connect")
    def _decode(dbapi_connection, _record):
        # the connections' own factory, or bytes: what stream_batches reads with
        dbapi_connection.text_factory = text_factory

    engine.dispose()
    with engine.connect() as conn:
        result = conn.execute(lenient.statement)
        rows = list(lenient.block(list(result.keys()), list(result)).rows())
    good, bad, blob = rows
    # What SQLAlchemy itself gives for good values: 220 at scale 2 is 220.00.
    assert (good["service_date"], str(good["line_amount"])) == (date(2026, 3, 2), "220.00")
    assert UNREADABLE_KEY not in good and UNREADABLE_KEY not in blob
    assert bad[UNREADABLE_KEY] == [
        "charges.code",
        "charges.line_amount",
        "charges.line_number",
        "charges.service_date",
    ]
    assert all(bad[key] is None for key in ("service_date", "line_amount", "line_number", "code"))
    # a BLOB of UTF-8 reads as its text, as the adapters' text columns read it
    assert str(blob["line_amount"]) == "150.50" and blob["code"] == "99"


def _visits_engine(tmp_path, rows):
    table = sa.Table(
        "visits",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("encounter", sa.Integer),
        sa.Column("service_date", sa.Date),
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'visits.db'}")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return engine, sa.select(table).order_by(table.c.id)


def as_is(block: RowBlock) -> RowBlock:
    return block


@pytest.mark.parametrize("block_rows", [1, 2, 3, 4, 100])
def test_blocks_never_split_a_group_and_keep_every_row_in_order(tmp_path, block_rows):
    # Encounter 2 has more rows than most block sizes: it must still come out whole.
    groups = [1, 2, 2, 2, 2, 2, 3, 4, 4, 5]
    rows = [
        {"id": i, "encounter": g, "service_date": date(2026, 3, 2)} for i, g in enumerate(groups)
    ]
    engine, statement = _visits_engine(tmp_path, rows)
    with engine.connect() as conn:
        blocks = list(stream_batches(conn, statement, "encounter", block_rows, as_is))
    assert [g for block in blocks for g in block.columns["encounter"]] == groups
    assert [i for block in blocks for i in block.columns["id"]] == list(range(len(groups)))
    seen: set[int] = set()
    for block in blocks:
        inside = set(block.columns["encounter"])
        assert not inside & seen, "a group went on in a later block"
        seen |= inside
    assert all(len(block) for block in blocks)
    if block_rows == 1:  # every group on its own
        assert [sorted(set(block.columns["encounter"])) for block in blocks] == [
            [1],
            [2],
            [3],
            [4],
            [5],
        ]


def test_blocks_carry_unreadable_values_across_a_split(tmp_path):
    engine, statement = _visits_engine(
        tmp_path,
        [{"id": i, "encounter": i // 2, "service_date": date(2026, 3, 2)} for i in range(6)],
    )
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE visits SET service_date = '03/02/2026' WHERE id IN (1, 4)")
    with engine.connect() as conn:
        blocks = list(stream_batches(conn, statement, "encounter", 3, as_is))
    rows = [row for block in blocks for row in block.rows()]
    assert [row["id"] for row in rows if UNREADABLE_KEY in row] == [1, 4]
    assert all(row["service_date"] is None for row in rows if UNREADABLE_KEY in row)
    assert rows[4][UNREADABLE_KEY] == ["visits.service_date"]


def test_row_blocks_concatenate_with_their_unreadable_rows_renumbered():
    head = RowBlock({"a": [1], "b": ["x"]}, {})
    tail = RowBlock({"a": [2, 3], "b": [None, "z"]}, {0: ["t.b"], 1: ["t.a"]})
    block = RowBlock({"a": [1, 2, 3], "b": ["x", None, "z"]}, {1: ["t.b"], 2: ["t.a"]})
    assert RowBlock.concat([head, tail]) == block
    assert list(block.rows())[1] == {"a": 2, "b": None, UNREADABLE_KEY: ["t.b"]}


def test_convert_each_shares_a_result_only_between_values_that_read_alike():
    seen: list[object] = []

    def text(value):
        seen.append(value)
        return as_text(value)

    assert convert_each(text, ["99213", "99213", None, "99213"]) == [
        "99213",
        "99213",
        None,
        "99213",
    ]
    assert sorted(map(str, seen)) == ["99213", "None"]  # once per distinct value
    # Equal but not alike: each converted on its own.
    mixed = [Decimal("1.0"), Decimal("1.00"), 1, 1.0, True]
    assert convert_each(as_text, mixed) == ["1.0", "1.00", "1", "1.0", "True"]
    assert convert_each(lambda a, b: f"{a}|{b}", ["x", "x", "y"], [1, 1, 1]) == [
        "x|1",
        "x|1",
        "y|1",
    ]


def test_a_read_takes_sqlite_text_as_bytes_and_gives_the_connection_back_as_it_was(tmp_path):
    table = sa.Table(
        "notes",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("encounter", sa.Integer),
        sa.Column("note", sa.String(20)),
    )
    _sqlite_holding(
        tmp_path / "notes.db",
        table,
        "(1, 1, 'Núñez'), (2, 1, CAST(X'4A6FFF' AS TEXT)), (3, 2, 'ok'), (4, 3, 'fine')",
    )
    engine = read_only_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    statement = sa.select(table).order_by(table.c.id)
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        blocks = stream_batches(conn, statement, "encounter", 1, as_is)
        first = next(blocks)
        assert driver.text_factory is bytes  # while the read goes on
        rows = [*first.rows(), *(row for block in blocks for row in block.rows())]
        assert [row["note"] for row in rows] == ["Núñez", None, "ok", "fine"]
        assert rows[1][UNREADABLE_KEY] == ["notes.note"]
        assert driver.text_factory is decode_text
        early = stream_batches(conn, statement, "encounter", 1, as_is)
        next(early)
        early.close()  # a read stopped early gives it back too
        assert driver.text_factory is decode_text
        assert conn.exec_driver_sql("SELECT note FROM notes WHERE id = 2").scalar() is UNREADABLE
