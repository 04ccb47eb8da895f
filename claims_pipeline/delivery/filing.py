"""Timely filing: payers refuse claims filed too long after the date of service (commonly 90
days to a year). A limit per payer, and the claims not yet at the service ranked by how soon
their deadline falls and how many dollars are at risk.

The limits file (``CLAIMS_FILING_LIMITS_FILE``) is YAML::

    default_days: 365        # any payer not listed
    payers:                  # payer_name as on the claim, compared case-insensitively
      Medicare: 365
      Aetna: 120
      Blue Cross Blue Shield: 90
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import yaml

from claims_pipeline.delivery.ledger import UnsentClaim
from claims_pipeline.errors import ConfigurationError

DEFAULT_FILING_DAYS = 365


@dataclass(frozen=True)
class FilingLimits:
    default_days: int = DEFAULT_FILING_DAYS
    payers: dict[str, int] = field(default_factory=dict)  # case-folded payer name -> days

    def days_for(self, payer_name: str | None) -> int:
        return self.payers.get((payer_name or "").casefold(), self.default_days)


@dataclass(frozen=True, slots=True)
class Deadline:
    claim_submitter_identifier: str
    service_date: date
    payer_name: str | None
    billed_amount: Decimal | None
    deadline: date
    days_left: int  # negative: missed
    outcome: str


def load_filing_limits(path: str | None) -> FilingLimits:
    """The limits in ``path`` (None: every payer gets the default). Errors name the setting."""
    if not path:
        return FilingLimits()
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(
            f"CLAIMS_FILING_LIMITS_FILE cannot be read as YAML ({type(error).__name__})."
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("payers", {}), dict):
        raise ConfigurationError(
            "CLAIMS_FILING_LIMITS_FILE must hold `default_days: N` and `payers: {name: days}`."
        )
    try:
        default = int(document.get("default_days", DEFAULT_FILING_DAYS))
        payers = {str(k).casefold(): int(v) for k, v in document.get("payers", {}).items()}
    except (TypeError, ValueError):
        raise ConfigurationError(
            "CLAIMS_FILING_LIMITS_FILE: every limit must be a whole number of days."
        ) from None
    if default <= 0 or any(days <= 0 for days in payers.values()):
        raise ConfigurationError("CLAIMS_FILING_LIMITS_FILE: limits must be positive days.")
    return FilingLimits(default, payers)


def deadlines_ahead(
    unsent: Iterable[UnsentClaim], limits: FilingLimits, today: date, warn_days: int
) -> list[Deadline]:
    """Unsent claims whose filing deadline is at most ``warn_days`` away (or past), soonest
    first, then most dollars first."""
    found = []
    for claim in unsent:
        if claim.service_date is None:
            continue
        deadline = claim.service_date + timedelta(days=limits.days_for(claim.payer_name))
        days_left = (deadline - today).days
        if days_left <= warn_days:
            found.append(
                Deadline(
                    claim.claim_submitter_identifier,
                    claim.service_date,
                    claim.payer_name,
                    claim.billed_amount,
                    deadline,
                    days_left,
                    claim.outcome,
                )
            )
    return sorted(found, key=lambda d: (d.days_left, -(d.billed_amount or Decimal(0))))
