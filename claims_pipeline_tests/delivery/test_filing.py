"""Timely filing: limits per payer from a file, and the warning's boundaries."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from claims_pipeline.delivery.filing import FilingLimits, deadlines_ahead, load_filing_limits
from claims_pipeline.delivery.ledger import UnsentClaim
from claims_pipeline.errors import ConfigurationError

TODAY = date(2026, 12, 7)


def unsent(key, days_ago, payer="Aetna", amount="100.00"):
    return UnsentClaim(
        key, TODAY - timedelta(days=days_ago), "rejected", 1, None, payer, Decimal(amount)
    )


def test_limits_file_with_a_default_and_payer_overrides(tmp_path):
    path = tmp_path / "filing.yaml"
    path.write_text("default_days: 180\npayers:\n  Aetna: 90\n  Medicare: 365\n")
    limits = load_filing_limits(str(path))
    assert limits.days_for("aetna") == 90 and limits.days_for("MEDICARE") == 365
    assert limits.days_for("Cigna") == 180 and limits.days_for(None) == 180
    assert load_filing_limits(None) == FilingLimits()


@pytest.mark.parametrize(
    "text", ["payers: [1, 2]", "default_days: soon", "payers:\n  Aetna: 0", "a: [unclosed"]
)
def test_a_bad_limits_file_names_the_setting(tmp_path, text):
    path = tmp_path / "filing.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="CLAIMS_FILING_LIMITS_FILE"):
        load_filing_limits(str(path))


def test_warning_boundaries_and_ranking():
    limits = FilingLimits(default_days=365, payers={"aetna": 90})
    claims = [
        unsent("IN-31", 59),  # Aetna: 31 days left -> not yet
        unsent("AT-30", 60),  # 30 days left -> warned
        unsent("AT-30-BIG", 60, amount="900.00"),  # same day, more dollars first
        unsent("DUE-TODAY", 90),  # 0 days left
        unsent("MISSED", 91),  # -1: past the deadline
        unsent("OTHER", 300, payer="Medicare"),  # default 365: 65 days left
    ]
    due = deadlines_ahead(claims, limits, TODAY, warn_days=30)
    assert [(d.claim_submitter_identifier, d.days_left) for d in due] == [
        ("MISSED", -1),
        ("DUE-TODAY", 0),
        ("AT-30-BIG", 30),
        ("AT-30", 30),
    ]
    assert due[0].deadline == TODAY - timedelta(days=1)
