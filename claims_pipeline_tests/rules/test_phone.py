import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claims_pipeline.rules.phone import to_e164

E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # the contract's payer_phone_number pattern, ASCII


@pytest.mark.parametrize(
    "written",
    [
        "(800) 555-1234",
        "800.555.1234",
        "800-555-1234",
        "1-800-555-1234",
        "1 (800) 555-1234",
        "+1 800 555 1234",
        "+1-800-555-1234",
        "+18005551234",
        "8005551234",
        "18005551234",
        " (800) 555-1234 ",
        "800/555-1234",
        "(800) 555-1234 x 12",
        "800-555-1234 ext. 3",
        "800 555 1234 extension 45",
    ],
)
def test_us_numbers_in_common_formats_become_e164(written):
    assert to_e164(written) == "+18005551234"


@pytest.mark.parametrize(
    "written",
    [
        "555-1234",  # no area code
        "(099) 555-1234",  # area code starts with 0
        "(199) 555-1234",  # area code starts with 1
        "(800) 055-1234",  # exchange starts with 0
        "(800) 155-1234",  # exchange starts with 1
        "(911) 555-1234",  # N11 service code, never an area code
        "800 555 123",  # 9 digits
        "800 555 12345",  # 11 digits not starting with 1
        "2-800-555-1234",
        "+1 800 555 123",
        "1-800-FLOWERS",
        "+0 20 7946 0958",  # no country code starts with 0
        "+44 123",  # too short for E.164
        "+1234567890123456",  # 16 digits: too long
        "８００５５５１２３４",  # full-width digits
        "",
        "n/a",
        "800-555-1234 ext",
    ],
)
def test_numbers_that_cannot_be_normalised_are_none(written):
    assert to_e164(written) is None


def test_numbers_with_another_country_code_keep_their_digits():
    assert to_e164("+44 20 7946 0958") == "+442079460958"


@given(st.text(alphabet="0123456789 +-.()x", max_size=22))
def test_output_is_e164_and_normalising_again_changes_nothing(written):
    normalised = to_e164(written)
    if normalised is not None:
        assert E164.fullmatch(normalised)
        assert to_e164(normalised) == normalised


@given(
    area=st.from_regex(r"[2-9][0-9]{2}", fullmatch=True).filter(lambda a: a[1:] != "11"),
    exchange=st.from_regex(r"[2-9][0-9]{2}", fullmatch=True),
    line=st.from_regex(r"[0-9]{4}", fullmatch=True),
)
def test_every_valid_nanp_number_is_accepted_in_every_format(area, exchange, line):
    expected = f"+1{area}{exchange}{line}"
    for written in (
        f"({area}) {exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"1-{area}-{exchange}-{line}",
        f"+1 {area} {exchange} {line}",
        f"{area}{exchange}{line}",
    ):
        assert to_e164(written) == expected
