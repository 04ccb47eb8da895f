from datetime import date
from decimal import Decimal

import pytest

from claims_pipeline.contract import CLAIM_FIELDS
from claims_pipeline.rules.assembly import (
    assemble_claim,
    format_place_of_service,
    format_provider_address,
    group_encounters,
    normalise_gender,
    normalise_icd_code,
    normalise_phone,
    split_diagnosis_codes,
    split_modifiers,
)
from claims_pipeline_tests.rules.factories import (
    SERVICE_DATE,
    assert_line_schema,
    encounter_rows,
    no_lines_row,
)


def test_factories_make_line_schema_rows():
    assert_line_schema(encounter_rows([{}, {}]) + [no_lines_row()])


def test_a_claim_has_the_api_fields_in_api_order():
    claim = assemble_claim(encounter_rows())
    assert tuple(claim) == CLAIM_FIELDS


def test_one_office_visit():
    claim = assemble_claim(encounter_rows())
    assert claim == {
        "patient_name": "John Doe",
        "patient_dob": date(1985, 4, 12),
        "patient_gender": "M",
        "provider_name": "Dr. Smith",
        "provider_address": "123 Medical Dr, Suite 100, San Francisco, CA 94102",
        "provider_npi": "1234567893",
        "patient_member_id": "MEM987654",
        "payer_name": "Aetna",
        "claim_submitter_identifier": "42-1001",
        "facility_code_value": "11",
        "icd_codes": ["M54.50", "G89.29"],
        "visit_number": "1001",
        "payer_phone_number": "+18005551234",
        "charge_lines": [
            {
                "hcpcs_code": "99213",
                "monetary_amount": Decimal("150.00"),
                "units": Decimal(1),
                "diagnosis_code_pointers": ["1", "2"],
                "service_date_from": SERVICE_DATE,
                "service_date_to": SERVICE_DATE,
                "modifiers": None,
            }
        ],
    }


def test_group_encounters_keeps_contiguous_rows_together_in_input_order():
    rows = (
        encounter_rows([{}, {}], encounter_id="A")
        + encounter_rows([{}], encounter_id="B")
        + encounter_rows([{}, {}, {}], encounter_id="C")
    )
    groups = list(group_encounters(iter(rows)))
    assert [(g[0]["encounter_id"], len(g)) for g in groups] == [("A", 2), ("B", 1), ("C", 3)]


def test_split_encounter_rows_come_out_as_two_groups():
    rows = encounter_rows(encounter_id="A") + encounter_rows(encounter_id="B")
    rows += encounter_rows(encounter_id="A")
    assert [g[0]["encounter_id"] for g in group_encounters(rows)] == ["A", "B", "A"]


def test_diagnoses_in_order_of_first_use_then_unused_encounter_codes():
    rows = encounter_rows(
        [
            {"line_diagnosis_codes": "J06.9,I10"},
            {"line_diagnosis_codes": "I10,E11.9"},
            {"line_diagnosis_codes": "E11.9"},
        ],
        claim_diagnosis_codes="E11.9,Z23,I10,J06.9,G89.29",
    )
    claim = assemble_claim(rows)
    assert claim["icd_codes"] == ["J06.9", "I10", "E11.9", "Z23", "G89.29"]
    pointers = [line["diagnosis_code_pointers"] for line in claim["charge_lines"]]
    assert pointers == [["1", "2"], ["2", "3"], ["3"]]


def test_diagnosis_codes_are_normalised_before_they_are_compared():
    rows = encounter_rows(
        [{"line_diagnosis_codes": " m5450 , G8929"}, {"line_diagnosis_codes": "M54.50"}],
        claim_diagnosis_codes="M5450,g89.29,,",
    )
    claim = assemble_claim(rows)
    assert claim["icd_codes"] == ["M54.50", "G89.29"]
    assert [line["diagnosis_code_pointers"] for line in claim["charge_lines"]] == [
        ["1", "2"],
        ["1"],
    ]


def test_a_code_repeated_on_one_line_is_pointed_at_once():
    claim = assemble_claim(encounter_rows([{"line_diagnosis_codes": "I10,I10,E11.9"}]))
    assert claim["charge_lines"][0]["diagnosis_code_pointers"] == ["1", "2"]


def test_a_line_pointing_at_five_diagnoses_keeps_all_five_for_the_validator():
    codes = "M54.50,E11.9,I10,J06.9,G89.29"
    claim = assemble_claim(encounter_rows([{"line_diagnosis_codes": codes}]))
    assert claim["charge_lines"][0]["diagnosis_code_pointers"] == ["1", "2", "3", "4", "5"]


def test_a_line_without_diagnoses_points_at_nothing():
    claim = assemble_claim(encounter_rows([{"line_diagnosis_codes": None}]))
    assert claim["charge_lines"][0]["diagnosis_code_pointers"] == []
    assert claim["icd_codes"] == ["M54.50", "G89.29"]


@pytest.mark.parametrize(
    "raw, code",
    [("M5450", "M54.50"), (" m54.50 ", "M54.50"), ("I10", "I10"), ("s72001a", "S72.001A")],
)
def test_normalise_icd_code(raw, code):
    assert normalise_icd_code(raw) == code


def test_split_diagnosis_codes_drops_empties_and_repeats():
    assert split_diagnosis_codes("I10,, i10 ,E119") == ("I10", "E11.9")
    assert split_diagnosis_codes(None) == ()
    assert split_diagnosis_codes("") == ()


@pytest.mark.parametrize(
    "raw, modifiers",
    [
        ("25", ("25",)),
        ("25:59", ("25", "59")),
        ("25 59", ("25", "59")),
        ("gt,95", ("GT", "95")),
        ("25;59", ("25", "59")),
        (":25::59:", ("25", "59")),
        ("25 : 59", ("25", "59")),
        ("  ", ()),
        ("", ()),
        (None, ()),
    ],
)
def test_split_modifiers(raw, modifiers):
    assert split_modifiers(raw) == modifiers


def test_modifiers_are_left_out_when_there_are_none_and_listed_otherwise():
    rows = encounter_rows([{"modifiers": None}, {"modifiers": " : "}, {"modifiers": "25:59"}])
    lines = assemble_claim(rows)["charge_lines"]
    assert [line["modifiers"] for line in lines] == [None, None, ["25", "59"]]


@pytest.mark.parametrize(
    "units, expected",
    [(None, Decimal(1)), ("", Decimal(1)), ("2", Decimal(2)), ("0.5", Decimal("0.5"))],
)
def test_units_default_to_one(units, expected):
    assert assemble_claim(encounter_rows([{"units": units}]))["charge_lines"][0]["units"] == (
        expected
    )


def test_the_line_amount_is_the_line_total_as_given():
    rows = encounter_rows([{"units": "3", "line_amount": "240.00"}])
    line = assemble_claim(rows)["charge_lines"][0]
    assert line["monetary_amount"] == Decimal("240.00")
    assert line["units"] == 3


@pytest.mark.parametrize("column", ["units", "line_amount"])
def test_unparsable_numbers_are_passed_through_for_the_validator(column):
    line = assemble_claim(encounter_rows([{column: "1O0"}]))["charge_lines"][0]
    field = "units" if column == "units" else "monetary_amount"
    assert line[field] == "1O0"


def test_numbers_from_a_driver_are_accepted_as_decimals():
    line = assemble_claim(encounter_rows([{"units": 2, "line_amount": Decimal("80.5")}]))
    assert line["charge_lines"][0]["units"] == Decimal(2)
    assert line["charge_lines"][0]["monetary_amount"] == Decimal("80.5")


def test_service_dates_default_to_the_encounter_date():
    line = assemble_claim(encounter_rows())["charge_lines"][0]
    assert (line["service_date_from"], line["service_date_to"]) == (SERVICE_DATE, SERVICE_DATE)


def test_a_line_with_its_own_start_date_and_no_end_is_a_one_day_service():
    day = date(2026, 3, 4)
    line = assemble_claim(encounter_rows([{"line_service_date_from": day}]))["charge_lines"][0]
    assert (line["service_date_from"], line["service_date_to"]) == (day, day)


def test_a_line_with_its_own_dates_keeps_them():
    start, end = date(2026, 3, 2), date(2026, 3, 6)
    rows = encounter_rows([{"line_service_date_from": start, "line_service_date_to": end}])
    line = assemble_claim(rows)["charge_lines"][0]
    assert (line["service_date_from"], line["service_date_to"]) == (start, end)


def test_procedure_codes_are_stripped_and_upper_cased():
    rows = encounter_rows([{"hcpcs_code": " j1100 "}])
    assert assemble_claim(rows)["charge_lines"][0]["hcpcs_code"] == "J1100"


def test_the_provider_comes_from_the_first_charge_line():
    rows = encounter_rows(
        [
            {
                "provider_name": "Dr. Jones",
                "provider_npi": "1987654328",
                "provider_city": "Oakland",
            },
            {"provider_name": "Dr. Smith", "provider_npi": "1234567893"},
        ]
    )
    claim = assemble_claim(rows)
    assert claim["provider_name"] == "Dr. Jones"
    assert claim["provider_npi"] == "1987654328"
    assert claim["provider_address"] == "123 Medical Dr, Suite 100, Oakland, CA 94102"


def test_claim_level_fields_come_from_the_first_row():
    rows = encounter_rows([{"payer_name": "Aetna"}, {"payer_name": "Cigna"}])
    assert assemble_claim(rows)["payer_name"] == "Aetna"


def test_identifiers_are_taken_as_the_adapter_derived_them():
    rows = encounter_rows(claim_submitter_identifier="7-31", visit_number="31")
    claim = assemble_claim(rows)
    assert (claim["claim_submitter_identifier"], claim["visit_number"]) == ("7-31", "31")


def test_an_encounter_without_procedures_has_no_charge_lines():
    claim = assemble_claim([no_lines_row(claim_diagnosis_codes="I10,E11.9")])
    assert claim["charge_lines"] == []
    assert claim["icd_codes"] == ["I10", "E11.9"]
    assert claim["provider_npi"] == "1234567893"


def test_a_line_with_a_number_but_no_procedure_code_is_kept_to_be_rejected():
    rows = encounter_rows([{}, {"hcpcs_code": None}])
    lines = assemble_claim(rows)["charge_lines"]
    assert [line["hcpcs_code"] for line in lines] == ["99213", None]


def test_blank_text_is_missing():
    claim = assemble_claim(encounter_rows(payer_name="  ", patient_member_id=""))
    assert (claim["payer_name"], claim["patient_member_id"]) == (None, None)


@pytest.mark.parametrize(
    "raw, gender",
    [
        ("Male", "M"),
        ("male", "M"),
        ("MALE", "M"),
        ("M", "M"),
        ("m", "M"),
        (" Male ", "M"),
        ("Female", "F"),
        ("female", "F"),
        ("F", "F"),
        ("f", "F"),
        ("unknown", "U"),
        ("UNK", "U"),
        ("U", "U"),
        ("other", "U"),
        ("Nonbinary", "U"),
        ("Non-binary", "U"),
        ("Choose not to disclose", "U"),
        ("N/A", "U"),
        ("", "U"),
        (None, "U"),
        # not a word: a shifted column, passed through for the validator to reject
        ("1985-04-12", "1985-04-12"),
        ("3", "3"),
        ("M/F", "M/F"),
    ],
)
def test_normalise_gender(raw, gender):
    assert normalise_gender(raw) == gender


@pytest.mark.parametrize(
    "raw, phone",
    [
        ("(800) 555-1234", "+18005551234"),
        ("1-800-555-1234", "+18005551234"),
        ("555-1234", "555-1234"),  # cannot be normalised: left for phone_invalid
        ("  ", None),
        (None, None),
    ],
)
def test_normalise_phone(raw, phone):
    assert normalise_phone(raw) == phone


@pytest.mark.parametrize(
    "parts, address",
    [
        (
            ("123 Medical Dr, Suite 100", "San Francisco", "CA", "94102"),
            "123 Medical Dr, Suite 100, San Francisco, CA 94102",
        ),
        ((None, "San Francisco", "CA", "94102"), "San Francisco, CA 94102"),
        (("1 Main St", "Springfield", None, "62701"), "1 Main St, Springfield, 62701"),
        (("1 Main St", " Springfield ", "IL", None), "1 Main St, Springfield, IL"),
        (("1 Main St", None, None, None), "1 Main St"),
        ((None, None, None, None), None),
        (("", " ", None, ""), None),
    ],
)
def test_format_provider_address(parts, address):
    assert format_provider_address(*parts) == address


@pytest.mark.parametrize(
    "raw, pos",
    [("3", "03"), ("11", "11"), (" 2 ", "02"), (3, "03"), (None, None), ("", None), ("ab", "ab")],
)
def test_format_place_of_service(raw, pos):
    assert format_place_of_service(raw) == pos
