"""Rendering claims for humans without PHI, and scrubbing text that may carry it.

Everything a person reads (logs, Dagster metadata, error messages, the CLI) goes through here:
claim key, codes and amounts are shown; names, dates of birth, member ids and addresses never.

- :func:`claim_preview` is *the* way to show a claim: a dict for metadata tables (Dagster
  metadata renders a few of them as a Markdown table), :func:`claim_preview_text` the same as
  one line for logs and error messages.
- :func:`scrub` cleans text from an untrusted source (an API error body) of the PHI values and
  secrets it is given, and of anything date-shaped.
- :func:`describe_error` renders a driver's or library's exception without the values it
  quotes (a malformed date of birth, a row's name, SQL parameters, a password in a URL).
- :func:`safe_url` is a database URL without its password; :func:`protect_http_logs` keeps the
  API key out of httpx/httpcore logging at any level.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

#: Claim fields that identify a patient (wire names) and are never shown.
PHI_FIELDS: tuple[str, ...] = ("patient_name", "patient_dob", "patient_member_id")

REDACTED = "[redacted]"
_CENT = Decimal("0.01")
_MAX_MESSAGE = 300

# ISO, US and dotted dates: any of them may be a date of birth.
_DATES = (
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b"),
    re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    re.compile(r"\b\d{4}\.\d{1,2}\.\d{1,2}\b"),
    re.compile(r"\b\d{1,2}\.\d{1,2}\.\d{4}\b"),
)
# A value a message quotes ('Smith', "04/12/1985"); a quoted host name or address is kept.
_QUOTED = re.compile(r"""(['"])(?P<value>[^'"\n]{0,200})\1""")
_HOST = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
# SQLAlchemy appends the statement's bound values to its errors: rows' values, possibly PHI.
_SQL_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\n|$)", re.DOTALL)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@", re.I)
# Header lines as httpcore/h11/hpack may log them: (b'x-api-key', b'...') or x-api-key: ...
_SECRET_HEADERS = r"x-api-key|authorization|proxy-authorization|cookie|set-cookie"  # noqa: S105
_HEADER_TUPLE = re.compile(rf"(\(b?['\"](?:{_SECRET_HEADERS})['\"],\s*b?)(['\"]).*?\2", re.I)
_HEADER_LINE = re.compile(rf"(\b(?:{_SECRET_HEADERS})\s*[:=]\s*)[^\s,;'\")]+", re.I)


def mask_member_id(member_id: str | None) -> str:
    """``****6543``: enough for staff to tell two members apart, not enough to identify one.
    Ids of 6 characters or fewer show nothing but the stars."""
    if not member_id:
        return ""
    tail = member_id[-4:] if len(member_id) > 6 else ""
    return "****" + tail


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def claim_preview(wire_claim: Mapping[str, Any]) -> dict[str, Any]:
    """A claim as analysts may see it: key, provider NPI, payer, codes, amounts, masked member.
    Never the patient's name, date of birth, gender, full member id or any address."""
    lines = wire_claim.get("charge_lines") or []
    total = sum((_decimal(line.get("monetary_amount")) for line in lines), Decimal(0))
    return {
        "claim_submitter_identifier": wire_claim.get("claim_submitter_identifier"),
        "provider_npi": wire_claim.get("provider_npi"),
        "payer_name": wire_claim.get("payer_name"),
        "member": mask_member_id(wire_claim.get("patient_member_id")),
        "icd_codes": ",".join(wire_claim.get("icd_codes") or []),
        "hcpcs_codes": ",".join(str(line.get("hcpcs_code")) for line in lines),
        "total_amount": str(total.quantize(_CENT)),
    }


def claim_preview_text(wire_claim: Mapping[str, Any]) -> str:
    """:func:`claim_preview` as one line for logs and error messages, e.g.
    ``claim REF-1042 (NPI 1679576722, Aetna, member ****6543): ICD E11.9; HCPCS 99213; $150.00``.
    """
    p = claim_preview(wire_claim)
    return (
        f"claim {p['claim_submitter_identifier']} (NPI {p['provider_npi']}, {p['payer_name']}, "
        f"member {p['member'] or 'none'}): ICD {p['icd_codes'] or 'none'}; "
        f"HCPCS {p['hcpcs_codes'] or 'none'}; ${p['total_amount']}"
    )


def sensitive_values(wire_claims: Iterable[Mapping[str, Any]]) -> set[str]:
    """The PHI strings of these claims that must not appear in anything recorded."""
    values: set[str] = set()
    for claim in wire_claims:
        for field in PHI_FIELDS:
            value = claim.get(field)
            if value:
                values.add(str(value))
                # names also leak word by word ("Doe" in "Doe, John")
                if field == "patient_name":
                    values.update(part for part in str(value).split() if len(part) > 2)
    return values


def _forms(value: str) -> set[str]:
    """The ways a value can be spelt in recorded text: as is, NFC, JSON-escaped, URL-encoded."""
    nfc = unicodedata.normalize("NFC", value)
    forms = {value, nfc, json.dumps(nfc)[1:-1], quote(nfc, safe=""), quote(nfc)}
    return {form for form in forms if form}


def _redact_values(text: str, values: Iterable[str]) -> str:
    forms = {form for value in values if value for form in _forms(str(value))}
    for form in sorted(forms, key=len, reverse=True):
        text = re.sub(re.escape(form), REDACTED, text, flags=re.IGNORECASE)
    return text


def _truncate(text: str) -> str:
    return text[:_MAX_MESSAGE] + "..." if len(text) > _MAX_MESSAGE else text


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given PHI value or secret replaced by ``[redacted]`` (also when
    JSON-escaped or URL-encoded), every date-shaped string masked, and the result truncated:
    safe to record from an untrusted source such as an API error body."""
    text = _redact_values(unicodedata.normalize("NFC", text), secrets)
    for pattern in _DATES:
        text = pattern.sub("[date]", text)
    return _truncate(text)


def _quoted(match: re.Match[str]) -> str:
    value = match.group("value")
    if not value or _HOST.match(value) and not any(p.fullmatch(value) for p in _DATES):
        return match.group(0)
    return f"{match.group(1)}…{match.group(1)}"


def describe_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """``Type: message`` of an exception from a driver or library, without what it may quote
    from the data: quoted values (host names excepted), SQL parameters, dates, URL passwords
    and ``secrets``. For errors whose message this project does not control."""
    text = str(error)
    text = _SQL_PARAMETERS.sub("[parameters withheld]", text)
    text = hide_url_password(text)
    text = _redact_values(text, secrets)
    text = _QUOTED.sub(_quoted, text)
    for pattern in _DATES:
        text = pattern.sub("[date]", text)
    return _truncate(f"{type(error).__name__}: {text}".strip())


def hide_url_password(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by
    ``***`` (for values that may or may not be URLs, such as CLAIMS_DATA_DIR)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def safe_url(url: str | None) -> str:
    """A database URL for display: the password (and any password-like query parameter)
    replaced by ``***``; an unparseable URL is not shown at all."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - whatever the parser says, the URL is not shown
        return "<not a valid database URL>"
    hidden = {
        key: "***"
        for key in parsed.query
        if re.search(r"pass|pwd|secret|token|key", key, re.IGNORECASE)
    }
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


class SecretLogFilter(logging.Filter):
    """Redacts registered secrets, and the values of credential headers, from the records of
    the loggers it is attached to (a logger's filters do not apply to its children: it is
    attached to each logger by name)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if secret:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        text = _HEADER_TUPLE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
        text = _HEADER_LINE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
        with self._lock:
            secrets = list(self._secrets)
        return _redact_values(text, secrets) if secrets else text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: Loggers of the HTTP stack that may describe requests or responses (httpcore logs one per
#: module; hpack/h2 only with HTTP/2).
HTTP_LOGGERS: tuple[str, ...] = (
    "httpx",
    "httpcore.connection",
    "httpcore.connection_pool",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "hpack.hpack",
    "hpack.table",
    "h2.connection",
)

http_log_filter = SecretLogFilter()


def protect_http_logs(*secrets: str) -> None:
    """Make sure ``secrets`` (the API key) never reach a log record of the HTTP stack, whatever
    its level. Idempotent; call wherever a client with a secret is built."""
    for secret in secrets:
        http_log_filter.add(secret)
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if http_log_filter not in logger.filters:
            logger.addFilter(http_log_filter)
