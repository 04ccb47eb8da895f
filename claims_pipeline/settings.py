"""Every setting the project reads from the environment, with its default: the one place.

Dagster resources take these through ``dagster.EnvVar`` (see ``defs/resources.py``) so that
secrets never enter run config; the CLI reads them through :func:`get`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from claims_pipeline.errors import ConfigurationError


@dataclass(frozen=True)
class Setting:
    name: str
    meaning: str
    default: str | None = None
    secret: bool = False


EHR_DATABASE_URL = Setting("EHR_DATABASE_URL", "SQLAlchemy URL of the source EHR")
EHR_SCHEMA = Setting("EHR_SCHEMA", "reference, openemr or sql", "reference")
EHR_QUERY_FILE = Setting("EHR_QUERY_FILE", "query file of the sql adapter")
CLAIMS_API_URL = Setting(
    "CLAIMS_API_URL", "base URL of the import API", "https://api.refactorbilling.com"
)
CLAIMS_API_KEY = Setting("CLAIMS_API_KEY", "tenant API key", secret=True)
CLAIMS_TENANT_ID = Setting("CLAIMS_TENANT_ID", "tenant id (integer)")
CLAIMS_DATA_DIR = Setting("CLAIMS_DATA_DIR", "where PHI at rest lives")
CLAIMS_LEDGER_URL = Setting("CLAIMS_LEDGER_URL", "SQLAlchemy URL of the delivery ledger")
CLAIMS_PARTITIONS_START = Setting("CLAIMS_PARTITIONS_START", "first partition", "2025-01-01")
CLAIMS_TIMEZONE = Setting("CLAIMS_TIMEZONE", "timezone of partitions and schedule", "UTC")
CLAIMS_LOOKBACK_DAYS = Setting(
    "CLAIMS_LOOKBACK_DAYS", "earlier days the nightly run re-checks", "7"
)
CLAIMS_BATCH_SIZE = Setting("CLAIMS_BATCH_SIZE", "claims per POST", "100")
CLAIMS_MAX_IN_FLIGHT = Setting("CLAIMS_MAX_IN_FLIGHT", "concurrent POSTs inside one step", "4")
CLAIMS_MAX_REQUESTS_PER_SECOND = Setting(
    "CLAIMS_MAX_REQUESTS_PER_SECOND", "client-side request cap", "10"
)
CLAIMS_MAX_REJECTION_RATE = Setting(
    "CLAIMS_MAX_REJECTION_RATE", "rejection rate above which posting is blocked", "0.2"
)
CLAIMS_MAX_DELIVERY_ATTEMPTS = Setting(
    "CLAIMS_MAX_DELIVERY_ATTEMPTS",
    "nights a refused or pending claim is retried before it waits for a person",
    "10",
)
CLAIMS_FILING_LIMITS_FILE = Setting(
    "CLAIMS_FILING_LIMITS_FILE", "YAML file of timely-filing limits per payer (days)"
)
CLAIMS_FILING_WARN_DAYS = Setting(
    "CLAIMS_FILING_WARN_DAYS", "days before a filing deadline the check warns", "30"
)
CLAIMS_EXECUTOR = Setting(
    "CLAIMS_EXECUTOR", "where steps run: multiprocess, in_process, k8s or celery", "multiprocess"
)


def get(setting: Setting) -> str | None:
    """The setting's value from the environment (empty counts as unset), else its default."""
    value = os.environ.get(setting.name, "").strip()
    return value or setting.default


def require(setting: Setting) -> str:
    """The setting's value, or a ConfigurationError that names the variable."""
    value = get(setting)
    if value is None:
        raise ConfigurationError(f"{setting.name} is not set: {setting.meaning}.")
    return value


def get_int(setting: Setting, minimum: int = 0) -> int:
    raw = require(setting)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{setting.name} must be an integer.") from None
    if value < minimum:
        raise ConfigurationError(f"{setting.name} must be at least {minimum}.")
    return value


def get_float(setting: Setting) -> float:
    raw = require(setting)
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{setting.name} must be a number.") from None


def data_dir() -> Path:
    """CLAIMS_DATA_DIR, else ``$DAGSTER_HOME/claims_data``, else ``./.claims_data``."""
    explicit = get(CLAIMS_DATA_DIR)
    if explicit:
        return Path(explicit).expanduser()
    dagster_home = os.environ.get("DAGSTER_HOME", "").strip()
    base = Path(dagster_home).expanduser() if dagster_home else Path.cwd()
    return base / "claims_data" if dagster_home else base / ".claims_data"


def demo_ehr_url(directory: Path | None = None) -> str:
    """The bundled demo EHR: a SQLite file in the data directory (seeded by the demo)."""
    return f"sqlite:///{(directory or data_dir()) / 'demo_ehr.sqlite'}"


def ehr_database_url() -> str:
    return get(EHR_DATABASE_URL) or demo_ehr_url()


def ledger_url(directory: Path | None = None) -> str:
    return get(CLAIMS_LEDGER_URL) or f"sqlite:///{(directory or data_dir()) / 'ledger.sqlite'}"
