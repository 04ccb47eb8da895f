"""build_claim_days over a stored partition: claims and rejections per day, and what a
rejection reports of the encounter as billed (payer, rendering NPI, billed total)."""

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from claims_pipeline import claim_days
from claims_pipeline.claim_days import _DayBilling, build_claim_days
from claims_pipeline.names import CLAIMS, ENCOUNTERS, REJECTIONS
from claims_pipeline.rules import AmountLimits
from claims_pipeline.sources.lines import LINE_SCHEMA
from claims_pipeline.storage import PartitionStore
from claims_pipeline_tests.rules.factories import (
    SERVICE_DATE,
    TODAY,
    VALID_NPI,
    encounter_rows,
    line_row,
    no_lines_row,
)

DAY = SERVICE_DATE.isoformat()
OTHER_NPI = "1245319599"


def encounter(number, lines=None, **claim_level):
    key = {"encounter_id": f"E{number}", "claim_submitter_identifier": f"C{number}"}
    return encounter_rows(lines, **{**key, **claim_level})


def run(tmp_path, rows, batch_size=None, tracker=None):
    store = PartitionStore(str(tmp_path))
    with store.writer(ENCOUNTERS, DAY, LINE_SCHEMA) as out:
        for start in range(0, len(rows), batch_size or len(rows) or 1):
            chunk = rows[start : start + (batch_size or len(rows))]
            out.write_table(pa.Table.from_pylist(chunk, schema=LINE_SCHEMA))
    if tracker is None:
        report = build_claim_days(store, [SERVICE_DATE], TODAY, AmountLimits())
    else:
        original, claim_days._DayBilling = claim_days._DayBilling, tracker
        try:
            report = build_claim_days(store, [SERVICE_DATE], TODAY, AmountLimits())
        finally:
            claim_days._DayBilling = original
    claims = pq.read_table(store.path(CLAIMS, DAY)).to_pylist()
    rejections = pq.read_table(store.path(REJECTIONS, DAY)).to_pylist()
    return report, claims, {r["encounter_id"]: r for r in rejections}, rejections


def billed(rejection):
    return rejection["payer_name"], rejection["provider_npi"], rejection["billed_amount"]


def test_a_rejection_reports_the_encounters_payer_npi_and_billed_total(tmp_path):
    rows = [
        *encounter(1),
        *encounter(
            2,
            [{"line_amount": "10.50"}, {"line_amount": "0.25", "hcpcs_code": "x"}],
            payer_name="Humana",
        ),
    ]
    report, claims, by_encounter, _ = run(tmp_path, rows)
    assert [c["encounter_id"] for c in claims] == ["E1"]
    assert billed(by_encounter["E2"]) == ("Humana", VALID_NPI, "10.75")
    assert report.by_payer["Humana"].held_back == 10.75
    assert report.days[DAY].conserved


def test_an_amount_that_is_not_a_number_makes_the_billed_total_unknown(tmp_path):
    lines = [{"line_amount": "12.00"}, {"line_amount": "twelve"}, {"line_amount": "1.00"}]
    _, _, by_encounter, _ = run(tmp_path, encounter(3, lines))
    assert billed(by_encounter["E3"])[2] is None


def test_lines_without_an_amount_add_nothing(tmp_path):
    rows = [
        *encounter(4, [{"line_amount": None}, {"line_amount": "7.10"}]),
        no_lines_row(encounter_id="E5", claim_submitter_identifier="C5"),
    ]
    _, _, by_encounter, _ = run(tmp_path, rows)
    assert billed(by_encounter["E4"])[2] == "7.10"
    assert billed(by_encounter["E5"])[2] == "0"


def test_the_payer_and_npi_are_the_first_rows_even_when_later_rows_differ(tmp_path):
    rows = encounter(6, [{"line_amount": "abc"}, {"provider_npi": OTHER_NPI}])
    rows[1]["payer_name"] = "Cigna"
    _, _, by_encounter, _ = run(tmp_path, rows)
    assert billed(by_encounter["E6"])[:2] == ("Aetna", VALID_NPI)


def test_a_split_encounter_reports_every_row_billed_so_far(tmp_path):
    first = encounter(7, [{"line_amount": "100.00"}])
    second = encounter(7, [{"line_amount": "20.00", "line_number": 2}], payer_name="Cigna")
    rows = [*first, *encounter(8), *second, *encounter(9)]
    _, claims, _, rejections = run(tmp_path, rows)
    assert [c["encounter_id"] for c in claims] == ["E7", "E8", "E9"]
    # the second occurrence is the duplicate; it reports both occurrences' lines as billed,
    # under the payer of the first row read
    assert [billed(r) for r in rejections] == [("Aetna", VALID_NPI, "120.00")]
    assert rejections[0]["reason_codes"] == "duplicate_claim_key"


def test_batches_do_not_change_what_is_reported(tmp_path):
    rows = [
        *encounter(
            10,
            [
                {"line_amount": "1.10"},
                {"line_amount": "2.20", "hcpcs_code": "bad"},
                {"line_amount": "3.30"},
            ],
        ),
        *encounter(11, [{"line_amount": "x"}, {}], payer_name=None, patient_member_id=None),
        line_row(encounter_id="E10", claim_submitter_identifier="C10", line_amount="4.40"),
    ]
    whole = run(tmp_path / "whole", rows)[3]
    assert whole == run(tmp_path / "single", rows, batch_size=1)[3]
    assert whole == run(tmp_path / "pairs", rows, batch_size=2)[3]
    assert [billed(r) for r in whole] == [
        ("Aetna", VALID_NPI, "6.60"),
        (None, VALID_NPI, None),
        ("Aetna", VALID_NPI, "11.00"),
    ]


class _KeepingAll(_DayBilling):
    """The tracker as it was before rows grouped by encounter kept only the unreported ones."""

    def __init__(self, keep_all: bool = True) -> None:
        super().__init__(keep_all=True)


@settings(max_examples=40)
@given(
    amounts=st.lists(
        st.lists(st.sampled_from(["1.00", "2.50", "bad", None, "0.10"]), min_size=1, max_size=3),
        min_size=1,
        max_size=6,
    ),
    order=st.randoms(use_true_random=False),
    splits=st.integers(0, 4),
)
def test_rows_in_any_order_report_what_keeping_every_encounter_reports(amounts, order, splits):
    """Grouped rows keep only unreported encounters; a split encounter (rows of another in
    between) switches to keeping all: the reports are the same either way."""
    runs = [encounter(n, [{"line_amount": a} for a in lines]) for n, lines in enumerate(amounts)]
    for _ in range(splits):  # move a run's last row after another encounter's rows
        source = order.randrange(len(runs))
        if len(runs[source]) > 1:
            runs.insert(order.randrange(source, len(runs)) + 1, [runs[source].pop()])
    rows = [row for run_rows in runs for row in run_rows]
    with tempfile.TemporaryDirectory() as bounded, tempfile.TemporaryDirectory() as everything:
        expected = run(Path(everything), rows, tracker=_KeepingAll)
        got = run(Path(bounded), rows)
    assert got[3] == expected[3]
    mix = [
        {payer: (m.claims, m.billed, m.rejected, m.held_back) for payer, m in r.by_payer.items()}
        for r in (got[0], expected[0])
    ]
    assert mix[0] == mix[1]


def test_grouped_rows_keep_only_the_encounters_not_yet_reported(tmp_path, monkeypatch):
    sizes = []
    reported = _DayBilling.reported

    def counting(self, encounter_id):
        sizes.append(len(self.entries))
        return reported(self, encounter_id)

    monkeypatch.setattr(_DayBilling, "reported", counting)
    rows = [row for n in range(200) for row in encounter(n, [{"line_amount": "bad"}, {}])]
    _, _, by_encounter, _ = run(tmp_path, rows)
    assert len(by_encounter) == 200 and len(sizes) == 200
    assert max(sizes) == 1
