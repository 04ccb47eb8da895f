"""What a person may see of a claim, scrubbing, error descriptions, and the HTTP stack's logs."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from claims_pipeline.delivery.client import ImportApiClient, RetryPolicy
from claims_pipeline.emulator import running_emulator
from claims_pipeline.errors import AuthenticationError
from claims_pipeline.phi import (
    HTTP_LOGGERS,
    REDACTED,
    SecretLogFilter,
    claim_preview,
    claim_preview_text,
    describe_error,
    hide_url_password,
    mask_member_id,
    protect_http_logs,
    safe_url,
    scrub,
    sensitive_values,
)
from claims_pipeline_tests.emulator.factories import (
    API_KEY,
    MEMBER_ID,
    PATIENT_DOB,
    PATIENT_NAME,
    make_charge_line,
    make_claim,
    make_config,
)

PHI = (PATIENT_NAME, *PATIENT_NAME.split(), PATIENT_DOB, MEMBER_ID)

# -- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member_id", "masked"),
    [("W123456543", "****6543"), ("1EG4TE5MK73", "****MK73"), ("ABC123", "****"), ("", "")],
)
def test_a_member_id_shows_at_most_its_last_four_characters(member_id: str, masked: str) -> None:
    assert mask_member_id(member_id) == masked


@given(st.text(min_size=1, max_size=40))
def test_a_masked_member_id_never_gives_away_more_than_four_characters(member_id: str) -> None:
    masked = mask_member_id(member_id)
    assert masked.startswith("****")
    shown = masked.removeprefix("****")
    assert len(shown) <= 4
    assert member_id.endswith(shown)
    if len(member_id) <= 6:
        assert shown == ""


def _claim_with_two_lines() -> dict:
    return make_claim(
        "REF-1042",
        icd_codes=["E11.9", "I10"],
        charge_lines=[
            make_charge_line(hcpcs_code="99214", monetary_amount=220),
            make_charge_line(hcpcs_code="83036", monetary_amount=45.5),
        ],
    )


def test_the_preview_shows_key_codes_amount_and_masked_member_only() -> None:
    preview = claim_preview(_claim_with_two_lines())
    assert preview == {
        "claim_submitter_identifier": "REF-1042",
        "provider_npi": "1234567893",
        "payer_name": "Aetna",
        "member": "****1902",
        "icd_codes": "E11.9,I10",
        "hcpcs_codes": "99214,83036",
        "total_amount": "265.50",
    }


def test_every_rendering_of_a_claim_is_free_of_phi() -> None:
    claim = _claim_with_two_lines()
    renderings = [
        json.dumps(claim_preview(claim)),
        claim_preview_text(claim),
    ]
    for text in renderings:
        for value in PHI:
            assert value not in text
        assert "REF-1042" in text
        assert "****1902" in text
    assert claim_preview_text(claim) == (
        "claim REF-1042 (NPI 1234567893, Aetna, member ****1902): ICD E11.9,I10; "
        "HCPCS 99214,83036; $265.50"
    )


def test_sensitive_values_are_the_phi_fields_their_parts_and_other_spellings() -> None:
    values = sensitive_values([make_claim()])
    assert {PATIENT_NAME, "Jane", "Testpatient", PATIENT_DOB, MEMBER_ID} <= values
    assert {"07/04/1961", "7/4/1961", "04/07/1961", "July 4, 1961", "4 Jul 1961"} <= values
    assert "4471902" in values  # the member id's digits
    assert "Q" not in values  # an initial alone would redact every "q"
    assert "Aetna" not in values and "CLM-2026-001" not in values


# -- scrubbing text from outside ---------------------------------------------------------------


def test_scrub_removes_given_values_in_any_spelling_and_every_date() -> None:
    body = json.dumps(
        {
            "errors": [
                f"patient {PATIENT_NAME.upper()} born {PATIENT_DOB} (04/07/1961, 1961.07.04)",
                f"member {quote(MEMBER_ID)}",
                "name Núñez",
            ]
        }
    )  # json.dumps escapes "Núñez" as N\u00fa\u00f1ez
    scrubbed = scrub(body, [PATIENT_NAME, MEMBER_ID, "Núñez", "Testpatient"])
    for value in (PATIENT_NAME.upper(), PATIENT_DOB, "04/07/1961", "1961.07.04", MEMBER_ID):
        assert value not in scrubbed
    assert "u00f1" not in scrubbed and "Núñez" not in scrubbed
    assert scrubbed.count(REDACTED) == 3


def _phi(name: str, dob: str = "1980-03-07", member_id: str = "MEM987654") -> set[str]:
    return sensitive_values(
        [make_claim(patient_name=name, patient_dob=dob, patient_member_id=member_id)]
    )


def _cleaned(text: str) -> str:
    """``text`` with each ``[redacted]`` made a plain separator (its own letters say nothing)."""
    return text.replace(REDACTED, "|").casefold()


# (patient name, message echoing it, what must be gone, what must be kept). One row per
# way a server spells a name in its refusals.
NAME_ECHOES = [
    ("Mary O'Brien", 'patient "Mary O\'Brien" not found', ["mary", "brien"], "not found"),
    ("Mary O'Brien", "patient 'Mary O'Brien' not found", ["mary", "brien"], "not found"),
    ('Jean "JJ" Doe', "patient 'Jean \"JJ\" Doe' unknown", ["jean", "jj", "doe"], "unknown"),
    ('Jean "JJ" Doe', '{"patient": "Jean \\"JJ\\" Doe"}', ["jean", "jj", "doe"], "patient"),
    ("Ann Smith-Jones", "SMITH-JONES, ANN is not covered", ["smith", "jones"], "not covered"),
    ("Ann Smith-Jones", "surname Smith Jones", ["smith", "jones"], "surname"),
    ("Ann Smith-Jones", "surname SmithJones", ["smith", "jones"], "surname"),
    ("Ann Smith-Jones", "last name Smith only", ["smith"], "last name"),
    ("Ann Smith-Jones", "Jones? no such member", ["jones"], "no such member"),
    ("Mary O'Brien-Smith", "OBRIEN SMITH MARY", ["brien", "smith", "mary"], ""),
    ("Mary O'Brien-Smith", "O\u2019Brien, M.", ["brien"], ", m."),
    ("Mary O'Brien-Smith", "O&#39;Brien-Smith refused", ["brien", "smith"], "refused"),
    ("Mary O'Brien-Smith", "name=Mary+O%27Brien-Smith", ["mary", "brien", "smith"], "name="),
    ("Bo Li", "LI, BO: no coverage", ["li", "bo"], "no coverage"),
    ("Bo Li", "li bo in Lisbon with Bob", ["li bo"], "in lisbon with bob"),
    ("José Núñez", "JOSE NUNEZ", ["jose", "nunez"], ""),
    ("José Núñez", '{"name": "Jos\\u00e9 N\\u00fa\\u00f1ez"}', ["jos", "u00e9", "n"], "name"),
]


@pytest.mark.parametrize(("name", "message", "gone", "kept"), NAME_ECHOES)
def test_scrub_finds_a_name_however_the_server_spells_it(
    name: str, message: str, gone: list[str], kept: str
) -> None:
    cleaned = _cleaned(scrub(message, _phi(name)))
    for word in gone:
        assert not re.search(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", cleaned), word
    assert kept in cleaned


@pytest.mark.parametrize(
    "message",
    [
        "member MEM987654 refused",
        "member MEM-987654 refused",
        "member mem 987654 refused",
        "member Mem_987_654 refused",
        "member 987-654 refused",
        "member 987654 refused",
        "member MEM 987 654 refused",
        "member %22MEM987654%22 refused",
    ],
)
def test_scrub_finds_a_reformatted_member_id(message: str) -> None:
    cleaned = scrub(message, _phi("Ann Lee"))
    assert cleaned == f"member {REDACTED} refused" or (
        cleaned.startswith("member ") and "987" not in cleaned and "654" not in cleaned
    )
    assert "refused" in cleaned


@pytest.mark.parametrize(
    "message",
    [
        "born 1980-03-07, too old",
        "born 03/07/1980, too old",
        "born 3/7/1980, too old",
        "born 19800307, too old",
        "born 1980/03/07, too old",
        "born 03-07-1980, too old",
        "born 07.03.1980, too old",
        "born March 7, 1980, too old",
        "born 7 Mar 1980, too old",
        "born MARCH 07 1980, too old",
    ],
)
def test_scrub_finds_a_date_of_birth_in_other_formats(message: str) -> None:
    cleaned = scrub(message, _phi("Ann Lee"))
    assert cleaned.startswith("born [") and cleaned.endswith("], too old")
    assert "1980" not in cleaned and "80" not in cleaned.removesuffix(", too old")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Bo Li", f"{REDACTED}"),
        ("Li Bo", f"{REDACTED} {REDACTED}"),
        ("Lisbon, Bob, Olivia, limbo", "Lisbon, Bob, Olivia, limbo"),
        ("LI-BO", f"{REDACTED}-{REDACTED}"),
        ("bo is li's", f"{REDACTED} is {REDACTED}'s"),
        ("Li2 and Bo's", f"{REDACTED}2 and {REDACTED}'s"),
    ],
)
def test_two_letter_name_parts_are_redacted_as_whole_words_only(
    message: str, expected: str
) -> None:
    assert scrub(message, _phi("Bo Li")) == expected


def test_an_initial_alone_is_not_redacted() -> None:
    assert scrub("quota Q exceeded for Jane", _phi(PATIENT_NAME)) == (
        f"quota Q exceeded for {REDACTED}"
    )


def test_a_member_ids_digits_are_not_redacted_inside_other_words_of_short_ids() -> None:
    # "A1234" has four digits: no digits-only spelling, so an amount of 1234 stays.
    assert scrub("amount 1234 for A1234", _phi("Ann Lee", member_id="A1234")) == (
        f"amount 1234 for {REDACTED}"
    )


@pytest.mark.parametrize(
    ("error", "kept", "gone"),
    [
        (ValueError('name "Mary O\'Brien" rejected'), "rejected", ["Mary", "Brien"]),
        (ValueError("name 'Jean \"JJ\" Doe' rejected"), "rejected", ["Jean", "JJ", "Doe"]),
        (ValueError("name 'Mary O'Brien' rejected; can't"), "can't", ["Mary", "Brien"]),
        (ValueError("name 'Jean \\'JJ\\' Doe' rejected"), "rejected", ["Jean", "JJ", "Doe"]),
        (ValueError("column 'a' of 'Smith-Jones'"), "column '…' of '…'", ["Smith", "Jones"]),
    ],
)
def test_describe_error_withholds_quoted_values_holding_the_other_quote(
    error: Exception, kept: str, gone: list[str]
) -> None:
    text = describe_error(error)
    assert kept in text
    for word in gone:
        assert word not in text


# -- the property: whatever the name and however a server spells it --------------------------

_LETTERS = st.characters(
    min_codepoint=0x41,
    max_codepoint=0x4FF,
    categories=("Lu", "Ll"),
    exclude_characters="\u0130\u0131\u0149",  # İ ı ŉ: no case pair that round-trips
)
_WORD = st.text(_LETTERS, min_size=2, max_size=9)


@st.composite
def _patients(draw: st.DrawFn) -> tuple[list[str], str, str, str]:
    """(name's parts, full name, member id, date of birth) with apostrophes, hyphens and
    nicknames in quotes."""
    first = draw(_WORD)
    nickname = draw(st.none() | _WORD)
    prefix = draw(st.none() | st.text(_LETTERS, min_size=1, max_size=2))  # O', Mc', D'
    last = draw(_WORD)
    second_last = draw(st.none() | _WORD)
    parts = [first, last]
    surname = last
    if prefix:
        surname = f"{prefix}'{surname}"
        parts.append(prefix)
    if second_last:
        surname = f"{surname}-{second_last}"
        parts.append(second_last)
    name = first
    if nickname:
        name += f' "{nickname}"'
        parts.append(nickname)
    name += f" {surname}"
    member_id = draw(st.from_regex(r"[A-Z]{0,4}[0-9]{5,10}", fullmatch=True))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)))
    return parts, name, member_id, born.isoformat()


def _name_spellings(name: str, parts: list[str]) -> list[str]:
    plain = name.replace('"', "")
    return [
        name,
        name.upper(),
        name.lower(),
        f'"{plain}"',
        f"'{plain}'",
        f"{parts[1]}, {parts[0]}".upper(),
        plain.replace("-", " ").replace("'", ""),
        plain.replace("'", "\u2019"),
        quote(name),
        json.dumps(name)[1:-1],
        json.dumps(name, ensure_ascii=False)[1:-1],
    ]


def _member_spellings(member_id: str) -> list[str]:
    letters = member_id.rstrip("0123456789")
    digits = member_id[len(letters) :]
    half = len(digits) // 2
    return [
        member_id,
        member_id.lower(),
        f"{letters}-{digits}",
        f"{letters.lower()} {digits}",
        f"{digits[:half]}-{digits[half:]}",
        f"{letters} {' '.join(digits)}",
    ]


def _date_spellings(born: str) -> list[str]:
    day = date.fromisoformat(born)
    return [
        born,
        f"{day.month:02d}/{day.day:02d}/{day.year}",
        f"{day.month}/{day.day}/{day.year}",
        born.replace("-", ""),
        born.replace("-", "/"),
        f"{day:%B} {day.day}, {day.year}",
    ]


@given(patient=_patients(), data=st.data())
def test_scrub_leaves_no_spelling_of_a_patients_phi(patient, data: st.DataObject) -> None:
    parts, name, member_id, born = patient
    spelt_name = data.draw(st.sampled_from(_name_spellings(name, parts)))
    spelt_member = data.draw(st.sampled_from(_member_spellings(member_id)))
    spelt_born = data.draw(st.sampled_from(_date_spellings(born)))
    message = f"422: patient {spelt_name} (member {spelt_member}, born {spelt_born}) refused"
    if data.draw(st.booleans()):
        message = json.dumps({"errors": [{"message": message}]})  # as the client keeps it
    secrets = sensitive_values(
        [make_claim(patient_name=name, patient_dob=born, patient_member_id=member_id)]
    )

    cleaned = _cleaned(scrub(message, secrets))

    for spelt in (spelt_name, spelt_member, spelt_born, name, member_id, born):
        assert spelt.casefold() not in cleaned
    for part in parts:
        if len(part) >= 3:
            assert part.casefold() not in cleaned
        elif len(part) == 2:
            assert not re.search(rf"(?<![^\W_]){re.escape(part.casefold())}(?![^\W_])", cleaned)
    digits = member_id.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert digits not in re.sub(r"[\s-]", "", cleaned)
    assert "refused" in cleaned


@given(patient=_patients(), quote_mark=st.sampled_from(["'", '"']))
def test_describe_error_withholds_any_quoted_name(patient, quote_mark: str) -> None:
    parts, name, _, _ = patient
    if quote_mark == '"':
        name = name.replace('"', "'")  # the other quote inside, as names with a nickname have
    text = describe_error(ValueError(f"cannot parse {quote_mark}{name}{quote_mark} as a date"))
    assert text.endswith("as a date")
    for part in parts:
        if len(part) >= 2:
            assert part not in text.removeprefix("ValueError: cannot parse ")[:-10]


def test_scrub_truncates_long_bodies() -> None:
    assert len(scrub("x" * 5_000)) <= 303


def test_describe_error_withholds_sql_parameters() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as conn:
        conn.execute(sa.text("select * from missing where name = :name"), {"name": PATIENT_NAME})
    text = describe_error(caught.value)
    assert text.startswith("OperationalError: ")
    assert "no such table: missing" in text
    assert PATIENT_NAME not in text and "parameters withheld" in text


@pytest.mark.parametrize(
    ("error", "kept", "gone"),
    [
        (ValueError("Invalid isoformat string: '04/12/1985'"), "Invalid isoformat", "1985"),
        (ValueError("Could not convert 'Testpatient' with type str"), "Could not", "Testpat"),
        (ValueError('at "127.0.0.1", port 9 failed'), "127.0.0.1", "\u2026"),
        (OSError("cannot open mysql://reader:hunter2@ehr/db"), "reader:***@ehr", "hunter2"),
        (ValueError("born 1961-07-04"), "born [date]", "1961"),
    ],
)
def test_describe_error_keeps_the_what_and_drops_the_values(
    error: Exception, kept: str, gone: str
) -> None:
    text = describe_error(error)
    assert kept in text
    assert gone not in text


def test_describe_error_redacts_given_secrets() -> None:
    assert API_KEY not in describe_error(RuntimeError(f"key {API_KEY} refused"), [API_KEY])


def test_safe_url_hides_passwords_and_unparseable_urls() -> None:
    assert safe_url("postgresql+psycopg://etl:pw1@db/ehr") == "postgresql+psycopg://etl:***@db/ehr"
    assert "pw2" not in safe_url("mssql+pymssql://db/ehr?user=etl&password=pw2")
    assert safe_url("mysql+pymysql://etl:pw3@db:notaport/ehr") == "<not a valid database URL>"
    assert safe_url("sqlite:////srv/ehr.sqlite") == "sqlite:////srv/ehr.sqlite"
    assert hide_url_password("s3://AKIA:pw4@bucket/prefix") == "s3://AKIA:***@bucket/prefix"
    assert hide_url_password("/srv/claims_data") == "/srv/claims_data"


# -- the HTTP stack's logs ---------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.getMessage()}" for r in self.records)


@pytest.fixture
def http_debug_logs() -> Iterator[_Records]:
    """Every record of httpx and httpcore at DEBUG, as an operator chasing a problem sets it."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
        logger.removeHandler(handler)


def test_httpx_and_httpcore_at_debug_never_log_the_api_key(
    tmp_path: Path, http_debug_logs: _Records
) -> None:
    """Checked without our filter: httpcore logs response headers at DEBUG, never the request's;
    httpx logs method, URL and status. Neither ever has the key, right or wrong."""
    wrong_key = "wrong-key-9d2f7a61c3"
    claim = json.dumps(make_claim())
    with running_emulator(make_config(tmp_path / "emulator.sqlite")) as emulator:
        with ImportApiClient(emulator.url, API_KEY, emulator.tenant_id) as client:
            assert len(client.post_batch([claim])) == 1
        retry = RetryPolicy(attempts=1)
        with (
            ImportApiClient(emulator.url, wrong_key, emulator.tenant_id, retry=retry) as client,
            pytest.raises(AuthenticationError),
        ):
            client.post_batch([claim])
    text = http_debug_logs.text()
    assert "receive_response_headers" in text  # DEBUG really was on
    assert "HTTP Request: POST" in text
    for secret in (API_KEY, wrong_key):
        assert secret not in text
    for value in PHI:
        assert value not in text


def test_the_http_log_filter_redacts_keys_and_credential_headers(
    http_debug_logs: _Records,
) -> None:
    planted = "planted-key-0c7e5b"
    protect_http_logs(planted)
    for name in HTTP_LOGGERS:
        assert any(isinstance(f, SecretLogFilter) for f in logging.getLogger(name).filters)
    logging.getLogger("httpcore.http11").debug(
        "send_request_headers.started headers=%s", [(b"x-api-key", planted.encode())]
    )
    logging.getLogger("httpcore.http11").debug(
        "headers: [(b'Authorization', b'Bearer abc.def'), (b'content-type', b'json')]"
    )
    logging.getLogger("httpx").debug("x-api-key: %s", "another-unregistered-value")
    text = http_debug_logs.text()
    assert planted not in text and "abc.def" not in text
    assert "another-unregistered-value" not in text
    assert "content-type" in text and text.count(REDACTED) == 3
