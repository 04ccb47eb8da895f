"""What a person may see of a claim, scrubbing, error descriptions, and the HTTP stack's logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
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
