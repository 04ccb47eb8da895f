from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from claims_pipeline.contract import MAX_WIRE_AMOUNT, Claim, canonical_json, claim_to_wire
from claims_pipeline.rules import CODE_SET_RELEASE, wire_claim
from claims_pipeline.rules.code_sets import PLACE_OF_SERVICE_CODES
from claims_pipeline.rules.reasons import ReasonCode
from claims_pipeline.rules.validation import AmountLimits, validate_claim
from claims_pipeline_tests.rules.factories import (
    BILLABLE_CODES,
    INVALID_NPI,
    PROVIDER_NPIS,
    SERVICE_DATE,
    TODAY,
    VALID_NPI,
    charge_line,
    claim,
)

R = ReasonCode
DAY = timedelta(days=1)


def findings(assembled):
    """(reason, field, line) of every problem: what analysts filter on."""
    return [(p.code, p.field, p.line_index) for p in validate_claim(assembled, today=TODAY)]


def one_line(**overrides):
    """Claim overrides that replace the single charge line with a modified one."""
    return {"charge_lines": [charge_line(**overrides)]}


def lines(count, **overrides):
    """Claim overrides with ``count`` equal charge lines."""
    return {"charge_lines": [charge_line(**overrides) for _ in range(count)]}


def with_codes(count, pointers=("1",)):
    return {
        "icd_codes": list(BILLABLE_CODES[:count]),
        "charge_lines": [charge_line(diagnosis_code_pointers=list(pointers))],
    }


def born(years_before_service, extra_days=0):
    return SERVICE_DATE.replace(year=SERVICE_DATE.year - years_before_service) + extra_days * DAY


def test_the_factory_claim_is_valid():
    assert findings(claim()) == []


# (broken claim overrides, clean neighbour overrides, the one problem the broken one has)
RULES = [
    # provider_npi
    pytest.param(
        {"provider_npi": INVALID_NPI},
        {"provider_npi": VALID_NPI},
        (R.NPI_INVALID, "provider_npi", None),
        id="npi-check-digit",
    ),
    pytest.param(
        {"provider_npi": "123456789"},
        {"provider_npi": "2098765433"},
        (R.NPI_INVALID, "provider_npi", None),
        id="npi-9-digits",
    ),
    pytest.param(
        {"provider_npi": "１２３４５６７８９３"},  # full-width digits
        {"provider_npi": "1987654328"},
        (R.NPI_INVALID, "provider_npi", None),
        id="npi-non-ascii-digits",
    ),
    pytest.param(
        {"provider_npi": 1234567893},
        {"provider_npi": "1234567893"},
        (R.NPI_INVALID, "provider_npi", None),
        id="npi-not-text",
    ),
    pytest.param(
        {"provider_npi": None},
        {},
        (R.MISSING_FIELD, "provider_npi", None),
        id="npi-missing",
    ),
    # claim_submitter_identifier
    pytest.param(
        {"claim_submitter_identifier": "X" * 21},
        {"claim_submitter_identifier": "X" * 20},
        (R.CLAIM_ID_INVALID, "claim_submitter_identifier", None),
        id="claim-id-21-chars",
    ),
    pytest.param(
        {"claim_submitter_identifier": " 42-1001"},
        {"claim_submitter_identifier": "42-1001"},
        (R.CLAIM_ID_INVALID, "claim_submitter_identifier", None),
        id="claim-id-untrimmed",
    ),
    pytest.param(
        {"claim_submitter_identifier": "42\t1001"},
        {"claim_submitter_identifier": "42 1001"},
        (R.CLAIM_ID_INVALID, "claim_submitter_identifier", None),
        id="claim-id-unprintable",
    ),
    pytest.param(
        {"claim_submitter_identifier": ""},
        {"claim_submitter_identifier": "1"},
        (R.MISSING_FIELD, "claim_submitter_identifier", None),
        id="claim-id-empty",
    ),
    # required text
    *(
        pytest.param(
            {field: value},
            {},
            (R.MISSING_FIELD, field, None),
            id=f"{field}-{label}",
        )
        for field in (
            "patient_name",
            "provider_name",
            "provider_address",
            "patient_member_id",
            "payer_name",
            "visit_number",
        )
        for label, value in (("none", None), ("blank", "  "), ("untrimmed", " x "), ("int", 7))
    ),
    # patient_dob
    pytest.param(
        {"patient_dob": SERVICE_DATE + DAY},
        {"patient_dob": SERVICE_DATE},  # a newborn seen on the day of birth
        (R.DOB_INVALID, "patient_dob", None),
        id="dob-after-service-date",
    ),
    pytest.param(
        {"patient_dob": born(150)},
        {"patient_dob": born(150, extra_days=1)},  # 149 years and 364 days
        (R.DOB_INVALID, "patient_dob", None),
        id="dob-age-150",
    ),
    pytest.param(
        {"patient_dob": "1985-04-12"},
        {"patient_dob": date(1985, 4, 12)},
        (R.DOB_INVALID, "patient_dob", None),
        id="dob-text",
    ),
    pytest.param(
        {"patient_dob": datetime(1985, 4, 12)},
        {"patient_dob": date(1985, 4, 12)},
        (R.DOB_INVALID, "patient_dob", None),
        id="dob-timestamp",
    ),
    pytest.param(
        {"patient_dob": None},
        {},
        (R.MISSING_FIELD, "patient_dob", None),
        id="dob-missing",
    ),
    # patient_gender
    pytest.param(
        {"patient_gender": "X"},
        {"patient_gender": "U"},
        (R.GENDER_INVALID, "patient_gender", None),
        id="gender-X",
    ),
    pytest.param(
        {"patient_gender": "m"},
        {"patient_gender": "F"},
        (R.GENDER_INVALID, "patient_gender", None),
        id="gender-lower-case",
    ),
    pytest.param(
        {"patient_gender": None},
        {"patient_gender": "M"},
        (R.MISSING_FIELD, "patient_gender", None),
        id="gender-missing",
    ),
    # facility_code_value
    *(
        pytest.param(
            {"facility_code_value": pos},
            {"facility_code_value": good},
            (R.POS_INVALID, "facility_code_value", None),
            id=f"pos-{pos}",
        )
        for pos, good in (("00", "02"), ("28", "27"), ("1", "11"), ("011", "10"), ("AB", "99"))
    ),
    pytest.param(
        {"facility_code_value": None},
        {},
        (R.MISSING_FIELD, "facility_code_value", None),
        id="pos-missing",
    ),
    # icd_codes
    pytest.param(
        with_codes(13),
        with_codes(12),
        (R.TOO_MANY_DIAGNOSES, "icd_codes", None),
        id="13-diagnoses",
    ),
    pytest.param(
        {"icd_codes": ["M54.5", "G89.29"]},
        {"icd_codes": ["M54.50", "G89.29"]},
        (R.ICD_NOT_BILLABLE, "icd_codes", None),
        id="icd-retired-M54.5",
    ),
    pytest.param(
        {"icd_codes": ["S72.001", "G89.29"]},
        {"icd_codes": ["S72.001A", "G89.29"]},
        (R.ICD_NOT_BILLABLE, "icd_codes", None),
        id="icd-missing-7th-character",
    ),
    pytest.param(
        {"icd_codes": ["M5450", "G89.29"]},
        {"icd_codes": ["M54.50", "G89.29"]},
        (R.ICD_INVALID, "icd_codes", None),
        id="icd-without-dot",
    ),
    pytest.param(
        {"icd_codes": ["m54.50", "G89.29"]},
        {"icd_codes": ["M54.50", "G89.29"]},
        (R.ICD_INVALID, "icd_codes", None),
        id="icd-lower-case",
    ),
    pytest.param(
        {"icd_codes": ["Z99.999", "G89.29"]},
        {"icd_codes": ["Z99.89", "G89.29"]},
        (R.ICD_INVALID, "icd_codes", None),
        id="icd-not-in-code-set",
    ),
    pytest.param(
        {"icd_codes": ["M54.50", "M54.50"]},
        {"icd_codes": ["M54.50", "M54.59"]},
        (R.ICD_INVALID, "icd_codes", None),
        id="icd-repeated",
    ),
    # hcpcs_code (the formats are tabled in test_procedure_code_formats)
    pytest.param(
        one_line(hcpcs_code="W1234"),
        one_line(hcpcs_code="V2020"),
        (R.HCPCS_INVALID, "hcpcs_code", 0),
        id="hcpcs-letter-after-V",
    ),
    pytest.param(
        one_line(hcpcs_code=None),
        one_line(hcpcs_code="99214"),
        (R.MISSING_FIELD, "hcpcs_code", 0),
        id="hcpcs-missing",
    ),
    # modifiers
    pytest.param(
        one_line(modifiers=["25", "59", "GT", "95", "TC"]),
        one_line(modifiers=["25", "59", "GT", "95"]),
        (R.MODIFIER_INVALID, "modifiers", 0),
        id="5-modifiers",
    ),
    pytest.param(
        one_line(modifiers=["2"]),
        one_line(modifiers=["25"]),
        (R.MODIFIER_INVALID, "modifiers", 0),
        id="modifier-1-char",
    ),
    pytest.param(
        one_line(modifiers=["GTX"]),
        one_line(modifiers=["GT"]),
        (R.MODIFIER_INVALID, "modifiers", 0),
        id="modifier-3-chars",
    ),
    pytest.param(
        one_line(modifiers=["gt"]),
        one_line(modifiers=["GT"]),
        (R.MODIFIER_INVALID, "modifiers", 0),
        id="modifier-lower-case",
    ),
    pytest.param(
        one_line(modifiers="25"),
        one_line(modifiers=["25"]),
        (R.MODIFIER_INVALID, "modifiers", 0),
        id="modifiers-not-a-list",
    ),
    # diagnosis_code_pointers
    pytest.param(
        with_codes(5, pointers=("1", "2", "3", "4", "5")),
        with_codes(5, pointers=("1", "2", "3", "4")),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="5-pointers",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=[]),
        one_line(diagnosis_code_pointers=["2"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="no-pointer",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=["3"]),  # the claim has 2 diagnoses
        one_line(diagnosis_code_pointers=["2"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="pointer-past-the-last-diagnosis",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=["0"]),
        one_line(diagnosis_code_pointers=["1"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="pointer-0",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=["01"]),
        one_line(diagnosis_code_pointers=["1"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="pointer-leading-zero",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=[1]),
        one_line(diagnosis_code_pointers=["1"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="pointer-not-text",
    ),
    pytest.param(
        one_line(diagnosis_code_pointers=["1", "1"]),
        one_line(diagnosis_code_pointers=["1", "2"]),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
        id="pointer-repeated",
    ),
    # units
    pytest.param(
        one_line(units=Decimal(0)),
        one_line(units=Decimal(1)),
        (R.UNITS_INVALID, "units", 0),
        id="0-units",
    ),
    pytest.param(
        one_line(units=Decimal(-1)),
        one_line(units=Decimal("0.5")),
        (R.UNITS_INVALID, "units", 0),
        id="negative-units",
    ),
    pytest.param(
        one_line(units=Decimal("NaN")),
        one_line(units=Decimal(2)),
        (R.UNITS_INVALID, "units", 0),
        id="units-nan",
    ),
    pytest.param(
        one_line(units="1O"),
        one_line(units=Decimal(10)),
        (R.UNITS_INVALID, "units", 0),
        id="units-unparsable-text",
    ),
    pytest.param(
        one_line(units=None),
        one_line(units=Decimal(1)),
        (R.MISSING_FIELD, "units", 0),
        id="units-missing",
    ),
    # monetary_amount
    pytest.param(
        one_line(monetary_amount=Decimal("0.001")),
        one_line(monetary_amount=Decimal("0.01")),
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-0.001",
    ),
    pytest.param(
        one_line(monetary_amount=Decimal("150.001")),
        one_line(monetary_amount=Decimal("150.000")),  # trailing zeros are not cents
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-3-decimals",
    ),
    pytest.param(
        one_line(monetary_amount=Decimal(0)),
        one_line(monetary_amount=Decimal("150.00")),
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-0",
    ),
    pytest.param(
        one_line(monetary_amount=Decimal("-150.00")),
        one_line(monetary_amount=Decimal("150")),
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-negative",
    ),
    pytest.param(
        one_line(monetary_amount=150.0),
        one_line(monetary_amount=Decimal("150.0")),
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-float",
    ),
    pytest.param(
        one_line(monetary_amount=Decimal("Infinity")),
        one_line(monetary_amount=Decimal("1E+3")),
        (R.AMOUNT_INVALID, "monetary_amount", 0),
        id="amount-infinite",
    ),
    pytest.param(
        one_line(monetary_amount=None),
        one_line(),
        (R.MISSING_FIELD, "monetary_amount", 0),
        id="amount-missing",
    ),
    pytest.param(
        one_line(monetary_amount=Decimal("100000.01")),
        one_line(monetary_amount=Decimal("100000.00")),  # CLAIMS_MAX_LINE_AMOUNT's default
        (R.AMOUNT_IMPLAUSIBLE, "monetary_amount", 0),
        id="amount-above-line-limit",
    ),
    pytest.param(
        lines(10, monetary_amount=Decimal("100000"))
        | {
            "charge_lines": [
                *lines(10, monetary_amount=Decimal("100000"))["charge_lines"],
                charge_line(monetary_amount=Decimal("0.01")),
            ]
        },
        lines(10, monetary_amount=Decimal("100000")),  # CLAIMS_MAX_CLAIM_AMOUNT's default
        (R.AMOUNT_IMPLAUSIBLE, "monetary_amount", None),
        id="claim-total-above-limit",
    ),
    # claim size
    pytest.param(
        lines(51),
        lines(50),
        (R.TOO_MANY_LINES, "charge_lines", None),
        id="lines-51",
    ),
    # units: every digit must survive the wire
    pytest.param(
        one_line(units=Decimal("1.234567890123456")),
        one_line(units=Decimal("1.23456789012345")),
        (R.UNITS_INVALID, "units", 0),
        id="units-16-digits",
    ),
    # service dates
    pytest.param(
        one_line(service_date_from=TODAY + DAY, service_date_to=TODAY + DAY),
        one_line(service_date_from=TODAY, service_date_to=TODAY),
        (R.SERVICE_DATE_INVALID, "service_date_from", 0),
        id="service-date-tomorrow",
    ),
    pytest.param(
        one_line(service_date_to=TODAY + DAY),
        one_line(service_date_to=TODAY),
        (R.SERVICE_DATE_INVALID, "service_date_to", 0),
        id="service-ends-tomorrow",
    ),
    pytest.param(
        one_line(service_date_from=SERVICE_DATE + DAY),
        one_line(service_date_from=SERVICE_DATE - DAY),
        (R.SERVICE_DATE_INVALID, "service_date_from", 0),
        id="service-from-after-to",
    ),
    pytest.param(
        one_line(service_date_from="2026-03-02"),
        one_line(service_date_from=SERVICE_DATE),
        (R.SERVICE_DATE_INVALID, "service_date_from", 0),
        id="service-date-text",
    ),
    pytest.param(
        one_line(service_date_to=None),
        one_line(),
        (R.MISSING_FIELD, "service_date_to", 0),
        id="service-date-missing",
    ),
    # payer_phone_number
    pytest.param(
        {"payer_phone_number": "(800) 555-1234"},
        {"payer_phone_number": "+18005551234"},
        (R.PHONE_INVALID, "payer_phone_number", None),
        id="phone-not-normalised",
    ),
    pytest.param(
        {"payer_phone_number": "+10005551234"},
        {"payer_phone_number": "+12125551234"},
        (R.PHONE_INVALID, "payer_phone_number", None),
        id="phone-area-code-0",
    ),
    pytest.param(
        {"payer_phone_number": "+1800555123"},
        {"payer_phone_number": "+442079460958"},
        (R.PHONE_INVALID, "payer_phone_number", None),
        id="phone-9-digits",
    ),
    pytest.param(
        {"payer_phone_number": None},
        {},
        (R.MISSING_FIELD, "payer_phone_number", None),
        id="phone-missing",
    ),
    # uninsured
    pytest.param(
        {"payer_name": None, "patient_member_id": None},
        {"payer_name": "Aetna", "patient_member_id": "MEM1"},
        (R.UNINSURED, "payer_name", None),
        id="uninsured",
    ),
    pytest.param(
        {"payer_name": None, "patient_member_id": " ", "payer_phone_number": None},
        {"payer_name": "Aetna", "patient_member_id": "MEM1"},
        (R.UNINSURED, "payer_name", None),  # no payer, so no payer phone to miss
        id="uninsured-without-phone",
    ),
    # charge lines
    pytest.param(
        {"charge_lines": []},
        {"charge_lines": [charge_line(), charge_line(hcpcs_code="G0439")]},
        (R.NO_CHARGE_LINES, "charge_lines", None),
        id="no-charge-lines",
    ),
    pytest.param(
        {"charge_lines": None},
        {},
        (R.NO_CHARGE_LINES, "charge_lines", None),
        id="charge-lines-missing",
    ),
]


@pytest.mark.parametrize("broken, neighbour, problem", RULES)
def test_each_rule_rejects_and_its_clean_neighbour_passes(broken, neighbour, problem):
    assert findings(claim(**broken)) == [problem]
    assert findings(claim(**neighbour)) == []


def test_every_rule_reason_has_a_rejecting_case():
    tested = {param.values[2][0] for param in RULES}
    # duplicate_claim_key is a property of the input stream (test_build), api_rejected of the
    # delivery step, unreadable_value of the source (sources/test_base); every other reason is
    # a claim rule and must be tabled above.
    assert tested == set(ReasonCode) - {
        R.DUPLICATE_CLAIM_KEY,
        R.API_REJECTED,
        R.UNREADABLE_VALUE,
    }


def test_amount_limits_are_settings_and_never_beyond_what_the_wire_carries():
    strict = AmountLimits(max_line=Decimal("500"), max_claim=Decimal("800"))
    two = {"charge_lines": [charge_line(monetary_amount=Decimal("450.00"))] * 2}
    assert [p.code for p in validate_claim(claim(**two), today=TODAY, limits=strict)] == [
        R.AMOUNT_IMPLAUSIBLE
    ]
    loosest = AmountLimits(max_line=MAX_WIRE_AMOUNT, max_claim=MAX_WIRE_AMOUNT)
    huge = one_line(monetary_amount=Decimal("1E+30"))
    problems = validate_claim(claim(**huge), today=TODAY, limits=loosest)
    assert [(p.code, p.line_index) for p in problems] == [
        (R.AMOUNT_IMPLAUSIBLE, 0),
        (R.AMOUNT_IMPLAUSIBLE, None),
    ]
    at_most = one_line(monetary_amount=MAX_WIRE_AMOUNT)
    assert validate_claim(claim(**at_most), today=TODAY, limits=loosest) == []
    with pytest.raises(ValueError, match="max_line"):
        AmountLimits(max_line=MAX_WIRE_AMOUNT + Decimal("0.01"))


def test_a_claim_without_diagnoses_has_nothing_to_point_at():
    assert findings(claim(icd_codes=[], **one_line(diagnosis_code_pointers=[]))) == [
        (R.MISSING_FIELD, "icd_codes", None),
        (R.POINTER_INVALID, "diagnosis_code_pointers", 0),
    ]


def test_a_future_dob_without_lines_is_measured_against_today():
    assert findings(claim(patient_dob=TODAY + DAY, charge_lines=[])) == [
        (R.DOB_INVALID, "patient_dob", None),
        (R.NO_CHARGE_LINES, "charge_lines", None),
    ]


def test_dob_is_compared_with_the_earliest_line():
    later = SERVICE_DATE + 3 * DAY
    lines = [
        charge_line(service_date_from=later, service_date_to=later),
        charge_line(service_date_from=SERVICE_DATE, service_date_to=SERVICE_DATE),
    ]
    assert findings(claim(patient_dob=SERVICE_DATE + DAY, charge_lines=lines)) == [
        (R.DOB_INVALID, "patient_dob", None)
    ]


def test_future_dates_are_measured_against_the_today_given():
    assembled = claim()
    assert validate_claim(assembled, today=SERVICE_DATE) == []
    assert [p.code for p in validate_claim(assembled, today=SERVICE_DATE - DAY)] == [
        R.SERVICE_DATE_INVALID
    ]


@pytest.mark.parametrize(
    "code",
    ["99213", "00100", "3074F", "0042T", "0001U", "J1100", "A0428", "G0439", "V2020", "Q4101"],
)
def test_procedure_codes_that_are_cpt_or_hcpcs(code):
    assert findings(claim(**one_line(hcpcs_code=code))) == []


@pytest.mark.parametrize(
    "code",
    ["9921", "992134", "992F1", "3074X", "W1234", "Z1234", "j1100", "J110", "99213-25", " 99213"],
)
def test_procedure_codes_that_are_not(code):
    assert findings(claim(**one_line(hcpcs_code=code))) == [(R.HCPCS_INVALID, "hcpcs_code", 0)]


def test_problems_name_their_line():
    lines = [charge_line(), charge_line(units=Decimal(0)), charge_line(hcpcs_code="XYZ")]
    assert findings(claim(charge_lines=lines)) == [
        (R.UNITS_INVALID, "units", 1),
        (R.HCPCS_INVALID, "hcpcs_code", 2),
    ]


def test_icd_messages_name_the_code_and_the_code_set_release():
    (problem,) = validate_claim(claim(icd_codes=["M54.5", "G89.29"]), today=TODAY)
    assert "M54.5" in problem.message
    assert CODE_SET_RELEASE in problem.message
    assert CODE_SET_RELEASE == "ICD-10-CM April 2026"


def test_npi_message_quotes_the_npi():
    (problem,) = validate_claim(claim(provider_npi=INVALID_NPI), today=TODAY)
    assert INVALID_NPI in problem.message


def test_messages_never_carry_patient_data():
    patient = {
        "patient_name": "Jonathan Q Doe",
        "patient_dob": date(1931, 7, 9),
        "patient_member_id": "ZX9981237",
    }
    # every field broken, and patient data where codes belong (a shifted column mapping)
    lines = [
        charge_line(
            hcpcs_code="Jonathan Q Doe",
            modifiers=["ZX9981237"],
            diagnosis_code_pointers=["ZX9981237"],
            monetary_amount=Decimal("0.001"),
            units=Decimal(0),
            service_date_from=date(2031, 7, 9),
            service_date_to=date(2031, 7, 8),
        )
    ]
    broken = claim(
        **patient,
        patient_gender="1931-07-09",
        provider_npi="ZX9981237",
        provider_address=" 12 Elm St ",
        claim_submitter_identifier="Jonathan Q Doe, ZX9981237",
        facility_code_value="Jonathan",
        icd_codes=["ZX9981237", "Doe"],
        payer_phone_number="Jonathan",
        charge_lines=lines,
    )
    messages = " ".join(p.message for p in validate_claim(broken, today=TODAY))
    assert len(validate_claim(broken, today=TODAY)) >= 12
    for secret in ("Jonathan", "Doe", "ZX9981237", "1931", "07-09", "2031", "Elm"):
        assert secret not in messages


# --- property: whatever the validator accepts, the contract accepts, and the wire agrees ---

DELETE = object()  # a key left out of the dict altogether

junk = st.one_of(
    st.none(),
    st.just(DELETE),
    st.text(max_size=12),
    st.integers(-5, 10**11),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.datetimes(),
    st.lists(st.text(max_size=3), max_size=2),
    st.tuples(st.text(max_size=3)),
)
texts = st.text(min_size=0, max_size=24)
claim_values = {
    "patient_name": st.one_of(texts, junk),
    "patient_dob": st.one_of(st.dates(date(1850, 1, 1), date(2030, 1, 1)), junk),
    "patient_gender": st.one_of(st.sampled_from(["M", "F", "U", "m", "X", ""]), junk),
    "provider_name": st.one_of(texts, junk),
    "provider_address": st.one_of(texts, junk),
    "provider_npi": st.one_of(
        st.sampled_from(PROVIDER_NPIS + (INVALID_NPI, "１２３４５６７８９３")),
        st.from_regex(r"[0-9]{10}", fullmatch=True),
        junk,
    ),
    "patient_member_id": st.one_of(texts, junk),
    "payer_name": st.one_of(texts, junk),
    "claim_submitter_identifier": st.one_of(texts, junk),
    "facility_code_value": st.one_of(
        st.sampled_from(sorted(PLACE_OF_SERVICE_CODES)), st.text("0123456789 ", max_size=3), junk
    ),
    "icd_codes": st.one_of(
        st.lists(st.sampled_from(BILLABLE_CODES + ("M54.5", "M5450", "Z99.999", "")), max_size=14),
        junk,
    ),
    "visit_number": st.one_of(texts, junk),
    "payer_phone_number": st.one_of(
        st.sampled_from(["+18005551234", "(800) 555-1234", "+442079460958", "+1800555123"]),
        st.text("+0123456789 ", max_size=16),
        junk,
    ),
}
decimals = st.decimals(allow_nan=True, allow_infinity=True, places=None)
line_values = {
    "hcpcs_code": st.one_of(st.sampled_from(["99213", "J1100", "3074F", "W1234"]), texts, junk),
    "monetary_amount": st.one_of(decimals, junk),
    "units": st.one_of(decimals, junk),
    "diagnosis_code_pointers": st.one_of(
        st.lists(st.sampled_from(["1", "2", "3", "0", "01", "13", "１"]), max_size=6), junk
    ),
    "service_date_from": st.one_of(st.dates(date(1900, 1, 1), date(2030, 1, 1)), junk),
    "service_date_to": st.one_of(st.dates(date(1900, 1, 1), date(2030, 1, 1)), junk),
    "modifiers": st.one_of(
        st.none(),
        st.lists(st.sampled_from(["25", "GT", "gt", "5", "59X", "９５"]), max_size=6),
        junk,
    ),
}


def _mutated(base, values, draw):
    """``base`` with one to three of its fields replaced by drawn values."""
    result = dict(base)
    for field in draw(
        st.lists(st.sampled_from(sorted(values)), min_size=1, max_size=3, unique=True)
    ):
        value = draw(values[field])
        if value is DELETE:
            del result[field]
        else:
            result[field] = value
    return result


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)
unit_counts = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(999), places=3)


@st.composite
def valid_claims(draw):
    codes = draw(st.lists(st.sampled_from(BILLABLE_CODES), min_size=1, max_size=12, unique=True))
    positions = [str(i) for i in range(1, len(codes) + 1)]
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.dates(date(2000, 1, 1), TODAY))
        lines.append(
            charge_line(
                hcpcs_code=draw(
                    st.from_regex(r"[0-9]{5}|[0-9]{4}[FTU]|[A-V][0-9]{4}", fullmatch=True)
                ),
                monetary_amount=draw(money),
                units=draw(unit_counts.filter(lambda u: u > 0)),
                diagnosis_code_pointers=draw(
                    st.lists(st.sampled_from(positions), min_size=1, max_size=4, unique=True)
                ),
                service_date_from=start,
                service_date_to=draw(st.dates(start, TODAY)),
                modifiers=draw(
                    st.one_of(
                        st.none(),
                        st.lists(st.from_regex(r"[A-Z0-9]{2}", fullmatch=True), max_size=4),
                    )
                ),
            )
        )
    first_service = min(line["service_date_from"] for line in lines)
    return claim(
        patient_dob=draw(st.dates(first_service - timedelta(days=149 * 365), first_service)),
        patient_gender=draw(st.sampled_from("MFU")),
        provider_npi=draw(st.sampled_from(PROVIDER_NPIS)),
        facility_code_value=draw(st.sampled_from(sorted(PLACE_OF_SERVICE_CODES))),
        icd_codes=codes,
        claim_submitter_identifier=draw(st.from_regex(r"[0-9]{1,9}-[0-9]{1,10}", fullmatch=True)),
        charge_lines=lines,
    )


@given(valid_claims())
def test_claims_built_by_the_rules_are_accepted_and_agree_with_the_contract(assembled):
    assert validate_claim(assembled, today=TODAY) == []
    assert wire_claim(assembled) == claim_to_wire(Claim.model_validate(assembled))


@st.composite
def mutated_claims(draw):
    """Valid claims with a few fields replaced (in the claim, in one line, in both, or none),
    so that a fair share is still accepted and the property is not vacuous."""
    assembled = draw(valid_claims())
    where = draw(st.sampled_from(["nowhere", "claim", "line", "both"]))
    lines = assembled["charge_lines"]
    if where in ("line", "both"):
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = _mutated(lines[index], line_values, draw)
    if where in ("claim", "both"):
        assembled = _mutated(assembled, claim_values, draw)
    return assembled


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_claims())
def test_every_claim_the_validator_accepts_satisfies_the_contract(assembled):
    problems = validate_claim(assembled, today=TODAY)
    event("accepted" if not problems else "rejected")
    if problems:
        return
    model = Claim.model_validate(assembled)  # raises if the rules let a contract breach through
    expected = claim_to_wire(model)
    wire = wire_claim(assembled)
    assert wire == expected
    assert canonical_json(wire) == canonical_json(expected)  # also int vs float, key sets


def test_line_amounts_beyond_what_a_decimal_can_sum_reject_the_claim_not_the_step():
    huge = Decimal("1e999999999")
    assert findings(claim(**lines(2, monetary_amount=huge))) == [
        (R.AMOUNT_IMPLAUSIBLE, "monetary_amount", 0),
        (R.AMOUNT_IMPLAUSIBLE, "monetary_amount", 1),
        (R.AMOUNT_IMPLAUSIBLE, "monetary_amount", None),
    ]
