import pytest

from claims_pipeline.rules.code_sets import load_icd_code_set


@pytest.fixture(scope="session", autouse=True)
def icd_code_set_loaded():
    """Parse the ICD-10-CM file (about 1.5 s) before any test runs, so that the first
    hypothesis example does not pay for it and trip the per-example deadline."""
    load_icd_code_set()
