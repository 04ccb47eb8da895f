"""The code sets the claim rules look codes up in: ICD-10-CM (from ``simple_icd_10_cm``) and
the CMS place-of-service codes.

Parsing the library's ICD-10-CM tabular file costs about 2.5 CPU s and ~100 MiB per process,
and every claims step paid it. What the rules need of it, each item's :class:`IcdStatus`, is
shipped as ``icd10cm_statuses.txt.gz``, generated from the library by :func:`write_icd_table`
and read in a few milliseconds. The table names the library files it was generated from by
their SHA-256: when the installed library differs (an upgrade), the library is parsed as
before, never a stale table used, and a test fails until the table is regenerated. Either is
loaded on the first lookup (once per process), not on import.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import importlib.util
import logging
import re
import warnings
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from types import ModuleType

_ICD_PACKAGE = "simple_icd_10_cm"
#: Each ICD-10-CM item's status, generated from the library by :func:`write_icd_table`.
ICD_TABLE = Path(__file__).with_name("icd10cm_statuses.txt.gz")
_log = logging.getLogger(__name__)
_TABULAR_FILE = re.compile(
    r"icd10c?-tabular-(?P<month>[A-Za-z]+)-(?:\d{1,2}-)?(?P<year>\d{4})\.xml"
)


def _library_dir() -> Path | None:
    """The directory of the installed simple_icd_10_cm, located without importing it."""
    spec = importlib.util.find_spec(_ICD_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def _code_set_release() -> str:
    """The ICD-10-CM release shipped with simple_icd_10_cm, read from its data file name
    (``icd10c-tabular-April-1-2026.xml`` -> ``ICD-10-CM April 2026``) without parsing the file."""
    library = _library_dir()
    if library is not None:
        data_dir = library / "data"
        matches = [_TABULAR_FILE.fullmatch(path.name) for path in data_dir.glob("*.xml")]
        releases = {f"ICD-10-CM {m['month'].capitalize()} {m['year']}" for m in matches if m}
        if len(releases) == 1:  # several files would make "the release" ambiguous
            return releases.pop()
    return "ICD-10-CM (release not identified)"


#: The ICD-10-CM release diagnosis codes are checked against, named in rejection messages.
CODE_SET_RELEASE: str = _code_set_release()

#: CMS Place of Service Code Set, https://www.cms.gov/medicare/coding-billing/place-of-service-codes/code-sets
#: — every assigned code, current through POS 66 (PACE center, effective 2024-08-01). Ranges the
#: CMS table lists as "Unassigned" (28-30, 35-40, 43-48, 59, 63-64, 67-70, 73-80, 82-98) are
#: not in use and are rejected. Update this when CMS assigns a new code.
PLACE_OF_SERVICE_CODES: frozenset[str] = frozenset(
    {
        "01", "02", "03", "04", "05", "06", "07", "08", "09", "10",
        "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
        "21", "22", "23", "24", "25", "26", "27",
        "31", "32", "33", "34",
        "41", "42",
        "49", "50", "51", "52", "53", "54", "55", "56", "57", "58",
        "60", "61", "62",
        "65", "66",
        "71", "72",
        "81",
        "99",
    }
)  # fmt: skip


class IcdStatus(Enum):
    """What the code set says about a diagnosis code."""

    BILLABLE = "billable"  # a category or subcategory with no children (a leaf)
    HEADER = "header"  # in the code set but has subcodes: not billable (e.g. M54.5 since 2021)
    UNKNOWN = "unknown"  # not a code of this release (never existed, or deleted)


@functools.cache
def load_icd_code_set() -> ModuleType:
    """The loaded ``simple_icd_10_cm`` module (parses the tabular file on the first call)."""
    with warnings.catch_warnings():
        # 1.5.0 reads its data with importlib.resources.read_text, deprecated since 3.11: the
        # library's own noise, repeated in every run's log otherwise.
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(_ICD_PACKAGE)


def library_status(icd: ModuleType, code: str) -> IcdStatus:
    """``code``'s status as the library's own functions give it (what the table holds)."""
    # is_category_or_subcategory excludes chapters ("1") and blocks ("A00-A09"), which the
    # library also treats as valid items.
    if not icd.is_valid_item(code) or not icd.is_category_or_subcategory(code):
        return IcdStatus.UNKNOWN
    return IcdStatus.BILLABLE if icd.is_leaf(code) else IcdStatus.HEADER


def library_fingerprint() -> str:
    """SHA-256 over the installed library's code and data files (names and bytes): what the
    shipped table was generated from, read without parsing anything (milliseconds)."""
    library = _library_dir()
    if library is None:
        return "simple_icd_10_cm not installed"
    digest = hashlib.sha256()
    data = sorted(path for path in (library / "data").iterdir() if path.suffix in {".txt", ".xml"})
    for path in [library / "simple_icd_10_cm.py", *data]:
        digest.update(f"{path.name}\0".encode())
        with path.open("rb") as source:
            digest.update(hashlib.file_digest(source, "sha256").digest())
    return digest.hexdigest()


_STATUS_LETTERS = {IcdStatus.BILLABLE: "B", IcdStatus.HEADER: "H", IcdStatus.UNKNOWN: "-"}
_LETTER_STATUSES = {letter: status for status, letter in _STATUS_LETTERS.items()}
_HEADER = "# ICD-10-CM item statuses generated from simple_icd_10_cm; regenerate, never edit\n"


def library_statuses() -> dict[str, IcdStatus]:
    """Every item of the library's code tree (codes, blocks, chapters) and its status: the
    library's tabular file parsed, ~2.5 s."""
    icd = load_icd_code_set()
    return {code: library_status(icd, code) for code in icd.get_all_codes(True)}


def _table_text(fingerprint: str, statuses: dict[str, IcdStatus]) -> str:
    lines: Iterable[str] = (
        f"{_STATUS_LETTERS[s]} {code}\n" for code, s in sorted(statuses.items())
    )
    return f"{_HEADER}library {fingerprint}\n{''.join(lines)}"


def write_icd_table(path: Path = ICD_TABLE) -> None:
    """(Re)generate the shipped table from the installed library. ``mtime=0``: the same library
    always gives the same bytes."""
    text = _table_text(library_fingerprint(), library_statuses())
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))


def read_icd_table(path: Path = ICD_TABLE) -> tuple[str, dict[str, IcdStatus]]:
    """The fingerprint a table was generated from and its statuses."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    if lines[0] != _HEADER.rstrip("\n") or not lines[1].startswith("library "):
        raise ValueError(f"{path.name} is not an ICD-10-CM status table")
    statuses = {line[2:]: _LETTER_STATUSES[line[0]] for line in lines[2:]}
    return lines[1].removeprefix("library "), statuses


@functools.cache
def icd_statuses() -> dict[str, IcdStatus]:
    """Each ICD-10-CM item's status: the shipped table when it was generated from the installed
    library, else the library parsed (and a warning that the table needs regenerating)."""
    try:
        fingerprint, statuses = read_icd_table(ICD_TABLE)
    except (OSError, ValueError, KeyError, IndexError):  # missing or damaged: not a table
        fingerprint, statuses = "unreadable", {}
    if fingerprint == library_fingerprint():
        return statuses
    _log.warning(
        "%s is unreadable or was generated from another simple_icd_10_cm than the one"
        " installed: parsing the library instead (regenerate the table: python -c"
        " 'from claims_pipeline.rules.code_sets import write_icd_table; write_icd_table()')",
        ICD_TABLE.name,
    )
    return library_statuses()


@functools.lru_cache(maxsize=65_536)
def icd_status(code: str) -> IcdStatus:
    """Whether ``code`` (dotted, e.g. ``M54.50``) is billable in :data:`CODE_SET_RELEASE`.

    Seventh-character codes count as billable when the library lists them, which it does by
    extending each leaf with its 7th characters (``S72.001A``, placeholder form ``T36.0X1A``);
    the 6-character stem (``S72.001``) then has children and is a header.
    """
    statuses = icd_statuses()
    # The library's own lookup: an undotted code ("M5450") is its dotted form when that is an
    # item, else itself.
    if len(code) >= 4 and code[3] != ".":
        dotted = f"{code[:3]}.{code[3:]}"
        if dotted in statuses:
            return statuses[dotted]
    return statuses.get(code, IcdStatus.UNKNOWN)
