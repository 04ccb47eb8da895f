"""Rendering claims for humans without PHI, and scrubbing text that may carry it.

Everything a person reads (logs, Dagster metadata, error messages, the CLI) goes through here:
claim key, codes and amounts are shown; names, dates of birth, member ids and addresses never.

- :func:`claim_preview` is *the* way to show a claim: a dict for metadata tables (Dagster
  metadata renders a few of them as a Markdown table), :func:`claim_preview_text` the same as
  one line for logs and error messages.
- :func:`scrub` cleans text from an untrusted source (an API error body) of the PHI values and
  secrets it is given, however the source spelt them, and of anything date-shaped;
  :func:`sensitive_values` gives it a claim's PHI values with their other spellings.
- :func:`describe_error` renders a driver's or library's exception without the values it
  quotes (a malformed date of birth, a row's name, SQL parameters, a password in a URL).
- :func:`safe_url` is a database URL without its password; :func:`protect_http_logs` keeps the
  API key out of httpx/httpcore logging at any level.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
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
# A value a message quotes ('Smith', "04/12/1985", "Mary O'Brien", 'Jean "JJ" Doe',
# 'Mary O'Brien'); a quoted host name or address is kept. A quote opens where no letter or
# digit precedes it and closes where none follows (so the apostrophe of O'Brien or can't does
# neither); a backslash-escaped quote never closes.
_QUOTED = re.compile(r"""(?<![^\W_])(['"])(?P<value>(?:\\.|[^\n\\]){0,200}?)\1(?![^\W_])""")
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
    """The PHI strings of these claims that must not appear in anything recorded: each PHI
    field as is, the name's parts (:func:`name_parts`), the date of birth in the other ways
    it is written (:func:`date_spellings`) and the digits of a member id that also has
    letters (``987654`` of ``MEM987654``). :func:`scrub` finds each of them whatever the
    case, accents and separators."""
    values: set[str] = set()
    for claim in wire_claims:
        for field in PHI_FIELDS:
            value = claim.get(field)
            if not value:
                continue
            text = str(value)
            values.add(text)
            if field == "patient_name":
                values.update(name_parts(text))
            elif field == "patient_dob":
                values.update(date_spellings(text))
            else:
                values.update(_member_id_digits(text))
    return values


# Where a name splits into parts: spaces, commas, double quotes and brackets (a nickname,
# "JJ"); then also hyphens and dashes; then also apostrophes.
_NAME_SPLITS = (
    re.compile(r"[\s,\"\u201c\u201d()]+"),
    re.compile(r"[\s,\"\u201c\u201d()\-\u2010-\u2015]+"),
    re.compile(r"[\s,\"\u201c\u201d()\-\u2010-\u2015'\u2018\u2019`\u00b4]+"),
)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def name_parts(name: str) -> set[str]:
    """The parts of a name a message may show alone, since a server may reorder, reformat or
    cut a name: for ``Mary O'Brien-Smith``, the words between spaces (``O'Brien-Smith``), the
    parts between hyphens too (``O'Brien``, ``Smith``) and between apostrophes (``Brien``).
    Parts of one letter or digit (initials, the ``O`` of ``O'Brien``) are left out; parts of
    two (``Li``) are kept, and :func:`scrub` finds those only as whole words."""
    parts = {part for split in _NAME_SPLITS for part in split.split(name)}
    return {part for part in parts if len(_Skeleton(part).folded) >= 2 and part != name}


def date_spellings(value: str) -> set[str]:
    """Other ways of writing an ISO date (``1980-03-07``): US and day-first, with and without
    leading zeros, and with the month's name (``March 7, 1980``, ``07 Mar 1980``).
    ``19800307`` and ``1980/03/07`` need no entry: :func:`scrub` ignores separators. A value
    that is not an ISO date gives nothing."""
    try:
        day = date.fromisoformat(value.strip()[:10])
    except ValueError:
        return set()
    y, m, d = day.year, day.month, day.day
    spellings = {
        day.isoformat(),
        f"{m:02d}/{d:02d}/{y}",
        f"{m}/{d}/{y}",
        f"{d:02d}/{m:02d}/{y}",
        f"{d}/{m}/{y}",
    }
    for month in (_MONTHS[m - 1], _MONTHS[m - 1][:3]):
        for dd in (str(d), f"{d:02d}"):
            spellings.update({f"{month} {dd}, {y}", f"{dd} {month} {y}"})
    return spellings


def _member_id_digits(member_id: str) -> set[str]:
    # A server may drop a member id's letters ("MEM987654" shown as "987-654"). Five digits or
    # more only: four are what mask_member_id shows anyway, and fewer match too much.
    digits = "".join(c for c in member_id if c.isdigit())
    return {digits} if len(digits) >= 5 and digits != member_id else set()


def _forms(value: str) -> set[str]:
    """The ways a value can be spelt in recorded text besides case, accents and separators
    (which :func:`_redact_values` ignores): as is, NFC, JSON-escaped, URL-encoded."""
    nfc = unicodedata.normalize("NFC", value)
    forms = {value, nfc, json.dumps(nfc)[1:-1], quote(nfc, safe=""), quote(nfc)}
    return {form for form in forms if form}


@functools.lru_cache(maxsize=8192)
def _fold(char: str) -> str:
    """The letters and digits a character stands for when comparing: lower case, without
    accents, compatibility forms spelt out (``ß`` -> ``ss``, ``ﬁ`` -> ``fi``); empty for a
    space, punctuation, a symbol or a combining mark."""
    decomposed = unicodedata.normalize("NFKD", char)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in bare.casefold().replace("\u0131", "i") if c.isalnum())


class _Skeleton:
    """A text folded to its letters and digits (:func:`_fold`), with, for each of them, the
    index of its character in the text and that character's place counting no combining
    marks (so that ``J̌`` is one place, as ``ǰ`` is)."""

    __slots__ = ("folded", "places", "text", "where")

    def __init__(self, text: str) -> None:
        self.text = text
        folded: list[str] = []
        self.where: list[int] = []
        self.places: list[int] = []
        place = -1
        for index, char in enumerate(text):
            if not unicodedata.combining(char):
                place += 1
            for letter in _fold(char):
                folded.append(letter)
                self.where.append(index)
                self.places.append(place)
        self.folded = "".join(folded)

    def glued(self, a: int, b: int) -> bool:
        """Whether letters ``a`` and ``b`` are of one kind (letter, digit) with nothing between
        them in the text: then they belong to one word."""
        if a < 0 or b >= len(self.folded):
            return False
        same_kind = self.folded[a].isdigit() == self.folded[b].isdigit()
        return same_kind and self.places[b] - self.places[a] <= 1

    def end_of(self, k: int) -> int:
        """The index in the text just after letter ``k``'s character and its combining marks."""
        end = self.where[k] + 1
        while end < len(self.text) and unicodedata.combining(self.text[end]):
            end += 1
        return end


# At most this many characters (spaces, punctuation, escapes such as \") between two letters
# or digits of a value: "Mary O'Brien" matches "MARY OBRIEN" and 'Mary  O\"Brien'.
_MAX_GAP = 3
# Values of this many letters or digits or fewer ("Li", "Bo") match only as whole words.
_SHORT = 2


@functools.lru_cache(maxsize=8192)
def _needle(value: str) -> tuple[str, tuple[int, ...]]:
    """A value's letters and digits, and after each of them how many characters may separate
    it from the next in a text: up to :data:`_MAX_GAP` where the value has a separator or
    next to a digit (``MEM-987 654``), none inside a run of letters (so ``Bo Li`` is not
    found across ``Bob, Olivia``)."""
    skeleton = _Skeleton(value)
    folded, places = skeleton.folded, skeleton.places
    gaps = tuple(
        _MAX_GAP
        if places[k + 1] - places[k] > 1 or folded[k].isdigit() or folded[k + 1].isdigit()
        else 0
        for k in range(len(folded) - 1)
    )
    return folded, gaps


def _value_spans(skeleton: _Skeleton, value: str) -> Iterator[tuple[int, int]]:
    """(start, end) in the text of each occurrence of ``value`` (see :func:`_redact_values`)."""
    needle, gaps = _needle(value)
    if not needle:
        return
    whole_word = len(needle) <= _SHORT
    start = skeleton.folded.find(needle)
    while start != -1:
        end = start + len(needle) - 1
        places = skeleton.places[start : end + 1]
        close = all(places[k + 1] - places[k] - 1 <= gap for k, gap in enumerate(gaps))
        alone = not whole_word or not (
            skeleton.glued(start - 1, start) or skeleton.glued(end, end + 1)
        )
        if close and alone:
            yield skeleton.where[start], skeleton.end_of(end)
        start = skeleton.folded.find(needle, start + 1)


def _redact_values(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of ``values`` replaced by ``[redacted]``, whatever the
    case, the accents, and the separators between its words and digits (none, or up to three
    characters of space or punctuation: see :func:`_needle`), and in any of its
    :func:`_forms`. A value of two letters or digits or fewer matches only as a whole word;
    one of no letter or digit (punctuation only) never matches."""
    forms = {form for value in values if value for form in _forms(str(value))}
    if not forms or not text:
        return text
    skeleton = _Skeleton(text)
    spans = sorted(span for form in forms for span in _value_spans(skeleton, form))
    pieces: list[str] = []
    done = 0
    for start, end in _merged(spans):
        pieces += [text[done:start], REDACTED]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _merged(spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Sorted spans with overlapping or touching ones joined."""
    current: tuple[int, int] | None = None
    for start, end in spans:
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


# JSON escapes (a surrogate pair first) and HTML character references a server may use.
_JSON_ESCAPE = re.compile(
    r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})", re.IGNORECASE
)
_HTML_REFERENCE = re.compile(
    r"&(?:#(\d{1,7})|#x([0-9a-f]{1,6})|(quot|apos|amp|lt|gt));", re.IGNORECASE
)
_HTML_NAMED = {"quot": '"', "apos": "'", "amp": "&", "lt": "<", "gt": ">"}


def _json_char(match: re.Match[str]) -> str:
    if match.group(3):
        code = int(match.group(3), 16)
        return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return chr(0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00))


def _html_char(match: re.Match[str]) -> str:
    decimal, hexadecimal, name = match.groups()
    if name:
        return _HTML_NAMED[name.lower()]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group(0)


def _unescape(text: str) -> str:
    """``text`` with JSON ``\\uXXXX`` escapes and HTML character references turned back into
    the characters they stand for, so that ``O\\u2019Brien`` and ``O&#39;Brien`` are found."""
    return _HTML_REFERENCE.sub(_html_char, _JSON_ESCAPE.sub(_json_char, text))


def _truncate(text: str) -> str:
    return text[:_MAX_MESSAGE] + "..." if len(text) > _MAX_MESSAGE else text


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given PHI value or secret replaced by ``[redacted]``, every
    date-shaped string masked, and the result truncated: safe to record from an untrusted
    source such as an API error body.

    A value is found whatever its case and accents, with other separators (or none) between
    its letters and digits (``MEM987654`` as ``mem-987 654``), JSON-escaped, URL-encoded or as
    HTML character references; a value of two letters or digits (``Li``) only as a whole
    word. Give it :func:`sensitive_values` of the claims concerned, which adds each name part
    and the other spellings of a date of birth and of a member id."""
    text = _redact_values(unicodedata.normalize("NFC", _unescape(text)), secrets)
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
