"""The practices one deployment serves, and the names that keep them apart.

Without ``CLAIMS_PRACTICES_DIR`` the deployment serves one practice configured by environment
variables (``EHR_DATABASE_URL``, ``CLAIMS_TENANT_ID``, ...) under the plain asset keys
(``ehr_encounters``, ...). With it, every ``<name>/defs.yaml`` under that directory is one
practice (a Dagster component, :class:`claims_pipeline.components.ClaimsPractice`), whose
assets, job, schedule, pool, resources, stored files and ledger all carry its name.
Secrets never live in a practice file: it names the environment variables that hold them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from claims_pipeline import settings
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.names import SYNC_JOB

CLAIMS_PRACTICES_DIR = settings.Setting(
    "CLAIMS_PRACTICES_DIR",
    "directory of practice files (<name>/defs.yaml); unset: one practice from the environment",
)

#: A practice's name: a key prefix, a resource-key and job-name part, a directory name.
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: The name of an environment variable a practice file refers to.
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
PRACTICE_FILE = "defs.yaml"
#: The pool every practice's delivery step runs in is this, suffixed with its name.
API_POOL = "claims_api"


@dataclass(frozen=True)
class Practice:
    """What the Dagster layer needs to know of one practice to build its definitions.

    ``name`` None is the single practice configured by the environment: plain asset keys,
    resource keys, job and schedule names, as before practices existed."""

    name: str | None
    timezone: str
    first_date: date
    lookback_days: int
    #: Alerts of this practice go to ``<prefix>CLAIMS_ALERT_*`` destinations when any is set.
    alerts_env_prefix: str | None = None

    def key_path(self, asset: str) -> list[str]:
        """The asset key of ``asset`` for this practice: prefixed by its name."""
        return [asset] if self.name is None else [self.name, asset]

    def named(self, base: str) -> str:
        """``base`` for the environment's practice, ``base_<name>`` for a file's."""
        return base if self.name is None else f"{base}_{self.name}"

    def resource_key(self, kind: str) -> str:
        """Key of this practice's resource of a kind (ehr, claims_api, claims_storage,
        quality_gates: ``defs/resources.py``)."""
        return kind if self.name is None else f"{self.name}__{kind}"

    @property
    def job_name(self) -> str:
        return self.named(SYNC_JOB)

    @property
    def pool(self) -> str:
        return self.named(API_POOL)

    @property
    def group(self) -> str:
        return self.name or "claims"

    @property
    def label(self) -> str:
        """How logs and messages name the practice."""
        return self.name or "the practice of the environment"

    def today(self) -> date:
        """Today in the practice's time zone (claim rules, filing deadlines, purge)."""
        return datetime.now(ZoneInfo(self.timezone)).date()


def environment_practice() -> Practice:
    """The one practice of CLAIMS_TIMEZONE, CLAIMS_PARTITIONS_START, CLAIMS_LOOKBACK_DAYS."""
    return Practice(
        name=None,
        timezone=settings.require(settings.CLAIMS_TIMEZONE),
        first_date=date.fromisoformat(settings.require(settings.CLAIMS_PARTITIONS_START)),
        lookback_days=settings.get_int(settings.CLAIMS_LOOKBACK_DAYS),
    )


def practices_dir() -> Path | None:
    """CLAIMS_PRACTICES_DIR, or None when the environment configures the one practice."""
    raw = settings.get(CLAIMS_PRACTICES_DIR)
    return Path(raw).expanduser() if raw else None


def practice_files(directory: Path) -> list[Path]:
    """Every ``<name>/defs.yaml`` in ``directory``, by name; a ConfigurationError naming
    CLAIMS_PRACTICES_DIR when there is none, or a folder name is not a practice name."""
    if not directory.is_dir():
        raise ConfigurationError(
            f"{CLAIMS_PRACTICES_DIR.name} is not a directory: point it at the folder holding "
            f"one <practice>/{PRACTICE_FILE} per practice, or unset it."
        )
    files = sorted(directory.glob(f"*/{PRACTICE_FILE}"))
    if not files:
        raise ConfigurationError(
            f"{CLAIMS_PRACTICES_DIR.name} holds no <practice>/{PRACTICE_FILE}: add one per "
            "practice (docs/practices.md), or unset it to configure one practice by environment."
        )
    for path in files:
        if NAME.fullmatch(path.parent.name) is None:
            raise ConfigurationError(
                f"{CLAIMS_PRACTICES_DIR.name}: folder {path.parent.name!r} is not a practice "
                "name: lower-case letters, digits and _ (up to 40), starting with a letter."
            )
    return files


def data_dir_of(name: str | None) -> str:
    """Where a practice's PHI at rest lives: CLAIMS_DATA_DIR, or its ``practices/<name>``."""
    root = settings.get(settings.CLAIMS_DATA_DIR) or str(settings.data_dir())
    if name is None:
        return root
    return f"{root.rstrip('/')}/practices/{name}"


def env_value(variable: str) -> str | None:
    """The value of an environment variable a practice file names; None when unset or empty."""
    return os.environ.get(variable, "").strip() or None
