"""Payer phone numbers to E.164, without the ``phonenumbers`` library.

Payers on these claims are US payers, so the North American Numbering Plan (NANP) is checked in
full: ``+1``, then a 3-digit area code and a 3-digit exchange that do not start with 0 or 1
(and an area code that is not an N11 service code such as 411 or 911), then 4 digits. A number
written with another country code (``+44 20 7946 0958``) is kept when it has the E.164 shape
(7-15 digits, no leading 0); its national numbering plan is not checked.
"""

from __future__ import annotations

import functools
import re

_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*[0-9]+\s*$", re.IGNORECASE)
_PUNCTUATION = str.maketrans("", "", " \t-.()/")
_NANP_LEADING = frozenset("23456789")


def _nanp(national: str) -> str | None:
    if (
        len(national) == 10
        and national[0] in _NANP_LEADING
        and national[3] in _NANP_LEADING
        and national[1:3] != "11"
    ):
        return "+1" + national
    return None


@functools.lru_cache(maxsize=4096)
def to_e164(raw: str) -> str | None:
    """The E.164 form of a phone number written in any common US format (``(800) 555-1234``,
    ``800.555.1234``, ``1-800-555-1234``, ``+1 800 555 1234``, ``8005551234``), or None when it
    cannot be normalised. An extension (``x12``, ``ext. 12``) is dropped: E.164 has no place for
    one, and the payer's main number is what the API asks for. Idempotent on its own output."""
    text = _EXTENSION.sub("", raw.strip())
    international = text.startswith("+")
    digits = (text[1:] if international else text).translate(_PUNCTUATION)
    if not (digits.isascii() and digits.isdigit()):
        return None
    if digits.startswith("1") and (international or len(digits) == 11):
        return _nanp(digits[1:])
    if international:
        return "+" + digits if 7 <= len(digits) <= 15 and digits[0] != "0" else None
    return _nanp(digits)
