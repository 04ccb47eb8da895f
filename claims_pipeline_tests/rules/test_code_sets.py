import gzip
import re
import subprocess
import sys

import pytest

from claims_pipeline.rules import code_sets
from claims_pipeline.rules.code_sets import (
    CODE_SET_RELEASE,
    PLACE_OF_SERVICE_CODES,
    IcdStatus,
    icd_status,
    library_fingerprint,
    library_status,
    library_statuses,
    load_icd_code_set,
    read_icd_table,
    write_icd_table,
)


def test_release_is_read_from_the_data_file_the_library_loads():
    assert CODE_SET_RELEASE == "ICD-10-CM April 2026"
    # The name is read from the data directory without importing the library; cross-check it
    # against the file the library itself parses, so an upgrade cannot make them disagree.
    loaded = load_icd_code_set().simple_icd_10_cm._classification_data_package_file_name
    match = re.search(r"-([A-Za-z]+)-(?:\d{1,2}-)?(\d{4})\.xml$", loaded)
    assert match is not None
    assert f"ICD-10-CM {match[1]} {match[2]}" == CODE_SET_RELEASE


def test_importing_the_rules_loads_neither_dagster_nor_the_code_set():
    probe = (
        "import sys, claims_pipeline.rules\n"
        "assert 'dagster' not in sys.modules, 'rules must stay pure Python'\n"
        "assert 'simple_icd_10_cm.simple_icd_10_cm' not in sys.modules, 'loaded on import'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


@pytest.mark.parametrize(
    "code, status",
    [
        ("M54.50", IcdStatus.BILLABLE),
        ("M54.51", IcdStatus.BILLABLE),
        ("E11.9", IcdStatus.BILLABLE),
        ("I10", IcdStatus.BILLABLE),  # a category without subcategories is a leaf
        ("J06.9", IcdStatus.BILLABLE),
        ("G89.29", IcdStatus.BILLABLE),
        ("S72.001A", IcdStatus.BILLABLE),  # 7th character
        ("T36.0X1A", IcdStatus.BILLABLE),  # placeholder X + 7th character
        ("S02.0XXA", IcdStatus.BILLABLE),
        ("M54.5", IcdStatus.HEADER),  # retired 2021-10-01 in favour of M54.50/.51/.59
        ("R51", IcdStatus.HEADER),  # split into R51.0 / R51.9 in 2020
        ("M54", IcdStatus.HEADER),
        ("S72.001", IcdStatus.HEADER),  # needs its 7th character
        ("T36.0X1", IcdStatus.HEADER),
        ("S72.0011", IcdStatus.UNKNOWN),  # not a 7th character of this code
        ("V00.01X", IcdStatus.UNKNOWN),  # placeholder without a 7th character
        ("Z99.999", IcdStatus.UNKNOWN),
        ("A00-A09", IcdStatus.UNKNOWN),  # a block, not a code
        ("1", IcdStatus.UNKNOWN),  # a chapter, not a code
    ],
)
def test_icd_status(code, status):
    assert icd_status(code) is status


def test_place_of_service_codes_are_the_cms_list():
    assert len(PLACE_OF_SERVICE_CODES) == 52
    for code in ("01", "02", "10", "11", "12", "19", "20", "21", "22", "23", "27", "31", "32"):
        assert code in PLACE_OF_SERVICE_CODES
    for code in ("49", "50", "65", "66", "71", "72", "81", "99"):
        assert code in PLACE_OF_SERVICE_CODES
    for unassigned in ("00", "28", "30", "35", "40", "43", "48", "59", "63", "67", "73", "98"):
        assert unassigned not in PLACE_OF_SERVICE_CODES
    assert all(re.fullmatch(r"[0-9]{2}", code) for code in PLACE_OF_SERVICE_CODES)


def test_the_shipped_icd_table_is_the_installed_library_regenerated():
    # Fails after an upgrade of simple_icd_10_cm: regenerate the table (write_icd_table).
    fingerprint, statuses = read_icd_table()
    assert fingerprint == library_fingerprint()
    assert statuses == library_statuses()


def test_icd_status_is_the_librarys_for_every_item_and_its_undotted_form():
    icd = load_icd_code_set()
    items = icd.get_all_codes(True)
    probes = {*items, *icd.get_all_codes(False), *(code.lower() for code in items[::50])}
    probes |= {code + suffix for code in items[::25] for suffix in ("0", "X", ".", "-")}
    probes |= {"", "A", "A0", "A00.", "A00..0", "M5450", "S72001A", "T360X1A", "  I10"}
    mismatches = {
        code: icd_status(code)
        for code in probes
        if icd_status(code) is not library_status(icd, code)
    }
    assert mismatches == {}


def test_looking_codes_up_does_not_parse_the_library():
    probe = (
        "import sys\n"
        "from claims_pipeline.rules.code_sets import IcdStatus, icd_status\n"
        "assert icd_status('M54.50') is IcdStatus.BILLABLE\n"
        "assert 'simple_icd_10_cm.simple_icd_10_cm' not in sys.modules, 'the library was parsed'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_a_table_generated_from_another_library_is_not_used(tmp_path, monkeypatch, caplog):
    statuses = read_icd_table()[1]
    statuses["M54.5"] = IcdStatus.BILLABLE  # what a stale table might say
    stale = tmp_path / "stale.txt.gz"
    stale.write_bytes(gzip.compress(code_sets._table_text("another library", statuses).encode()))
    monkeypatch.setattr(code_sets, "ICD_TABLE", stale)
    code_sets.icd_statuses.cache_clear()
    try:
        assert code_sets.icd_statuses()["M54.5"] is IcdStatus.HEADER  # the library's answer
        assert "generated from another simple_icd_10_cm" in caplog.text
    finally:
        code_sets.icd_statuses.cache_clear()


def test_a_missing_table_falls_back_to_the_library(tmp_path, monkeypatch):
    monkeypatch.setattr(code_sets, "ICD_TABLE", tmp_path / "absent.txt.gz")
    code_sets.icd_statuses.cache_clear()
    try:
        assert code_sets.icd_statuses()["M54.50"] is IcdStatus.BILLABLE
    finally:
        code_sets.icd_statuses.cache_clear()


def test_regenerating_the_table_gives_the_shipped_bytes(tmp_path):
    write_icd_table(tmp_path / "a.txt.gz")
    assert (tmp_path / "a.txt.gz").read_bytes() == code_sets.ICD_TABLE.read_bytes()
