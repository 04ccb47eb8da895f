"""The code sets the claim rules look codes up in: ICD-10-CM (from ``simple_icd_10_cm``) and
the CMS place-of-service codes.

The ICD-10-CM tabular file takes about 1.5 s to parse, so it is loaded on the first lookup (once
per process), not on import: a Dagster process that never validates a claim never pays for it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import warnings
from enum import Enum
from pathlib import Path
from types import ModuleType

_ICD_PACKAGE = "simple_icd_10_cm"
_TABULAR_FILE = re.compile(
    r"icd10c?-tabular-(?P<month>[A-Za-z]+)-(?:\d{1,2}-)?(?P<year>\d{4})\.xml"
)


def _code_set_release() -> str:
    """The ICD-10-CM release shipped with simple_icd_10_cm, read from its data file name
    (``icd10c-tabular-April-1-2026.xml`` -> ``ICD-10-CM April 2026``) without parsing the file."""
    spec = importlib.util.find_spec(_ICD_PACKAGE)  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
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


@functools.lru_cache(maxsize=65_536)
def icd_status(code: str) -> IcdStatus:
    """Whether ``code`` (dotted, e.g. ``M54.50``) is billable in :data:`CODE_SET_RELEASE`.

    Seventh-character codes count as billable when the library lists them, which it does by
    extending each leaf with its 7th characters (``S72.001A``, placeholder form ``T36.0X1A``);
    the 6-character stem (``S72.001``) then has children and is a header.
    """
    icd = load_icd_code_set()
    # is_category_or_subcategory excludes chapters ("1") and blocks ("A00-A09"), which the
    # library also treats as valid items.
    if not icd.is_valid_item(code) or not icd.is_category_or_subcategory(code):
        return IcdStatus.UNKNOWN
    return IcdStatus.BILLABLE if icd.is_leaf(code) else IcdStatus.HEADER
