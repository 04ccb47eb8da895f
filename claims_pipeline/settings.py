"""Every setting the project reads from the environment, with its default: the one place.

Dagster resources take these through ``dagster.EnvVar`` (see ``defs/resources.py``) so that
secrets never enter run config; the CLI reads them through :func:`get`.
:func:`check_environment` checks every value that is set before any work starts: each problem
names the variable and the fix, never the value (a secret's value above all).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from claims_pipeline.contract import MAX_WIRE_AMOUNT
from claims_pipeline.errors import ConfigurationError

#: What a check returns: None when the (stripped, non-empty) value is acceptable, else what
#: is wrong and how to fix it, without the value, as the end of "NAME ...".
Check = Callable[[str], str | None]


@dataclass(frozen=True)
class Setting:
    name: str
    meaning: str
    default: str | None = None
    secret: bool = False
    check: Check | None = None


def _integer(low: int, high: int) -> Check:
    def check(value: str) -> str | None:
        if re.fullmatch(r"[0-9]+", value) is None or not low <= int(value) <= high:
            return f"must be a whole number from {low} to {high}"
        return None

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Check:
    def check(value: str) -> str | None:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        above_low = number > low if low_open else number >= low
        if not (math.isfinite(number) and above_low and number <= high):
            bound = f"above {low:g}" if low_open else f"from {low:g}"
            return f"must be a number {bound} to {high:g}"
        return None

    return check


def _amount(value: str) -> str | None:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not (amount.is_finite() and Decimal("0.01") <= amount <= MAX_WIRE_AMOUNT):
        return f"must be an amount in dollars from 0.01 to {MAX_WIRE_AMOUNT}, e.g. 25000"
    if amount != amount.quantize(Decimal("0.01")):
        return "must be a dollar amount with at most 2 decimals"
    return None


def _choice(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _database_url(value: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        make_url(value)
    except Exception:  # the URL may hold a password: its text is never echoed
        return "is not a SQLAlchemy URL: write it like postgresql+psycopg://user@host/database"
    return None


def _api_url(value: str) -> str | None:
    from claims_pipeline.delivery.client import check_base_url

    try:
        check_base_url(value)
    except ConfigurationError as error:  # names the variable, never the URL
        return str(error).removeprefix("CLAIMS_API_URL ")
    return None


def _api_key(value: str) -> str | None:
    # The key goes in an HTTP header: printable ASCII without spaces, or no byte is sent.
    if not all(33 <= ord(character) <= 126 for character in value):
        return (
            "contains a space, a control character or a non-ASCII character (often the "
            "trailing newline of a secret file): set it to the key alone, e.g. "
            "CLAIMS_API_KEY=\"$(tr -d '\\r\\n' < key-file)\""
        )
    return None


def _iso_date(value: str) -> str | None:
    try:
        date.fromisoformat(value)
    except ValueError:
        return "must be a date written YYYY-MM-DD"
    return None


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be an IANA timezone name such as UTC or America/Chicago"
    return None


EHR_DATABASE_URL = Setting(
    "EHR_DATABASE_URL", "SQLAlchemy URL of the source EHR", check=_database_url
)
EHR_SCHEMA = Setting(
    "EHR_SCHEMA",
    "reference, openemr or sql",
    "reference",
    check=_choice("reference", "openemr", "sql"),
)
EHR_QUERY_FILE = Setting("EHR_QUERY_FILE", "query file of the sql adapter")
CLAIMS_API_URL = Setting(
    "CLAIMS_API_URL",
    "base URL of the import API",
    "https://api.refactorbilling.com",
    check=_api_url,
)
CLAIMS_API_KEY = Setting("CLAIMS_API_KEY", "tenant API key", secret=True, check=_api_key)
CLAIMS_TENANT_ID = Setting("CLAIMS_TENANT_ID", "tenant id (integer)", check=_integer(1, 2**63 - 1))
CLAIMS_DATA_DIR = Setting("CLAIMS_DATA_DIR", "where PHI at rest lives")
CLAIMS_LEDGER_URL = Setting(
    "CLAIMS_LEDGER_URL", "SQLAlchemy URL of the delivery ledger", check=_database_url
)
CLAIMS_PARTITIONS_START = Setting(
    "CLAIMS_PARTITIONS_START", "first partition", "2025-01-01", check=_iso_date
)
CLAIMS_TIMEZONE = Setting(
    "CLAIMS_TIMEZONE", "timezone of partitions and schedule", "UTC", check=_timezone
)
CLAIMS_LOOKBACK_DAYS = Setting(
    "CLAIMS_LOOKBACK_DAYS", "earlier days the nightly run re-checks", "7", check=_integer(0, 366)
)
CLAIMS_BATCH_SIZE = Setting("CLAIMS_BATCH_SIZE", "claims per POST", "100", check=_integer(1, 1000))
CLAIMS_MAX_IN_FLIGHT = Setting(
    "CLAIMS_MAX_IN_FLIGHT", "concurrent POSTs inside one step", "4", check=_integer(1, 64)
)
CLAIMS_BUILD_PROCESSES = Setting(
    "CLAIMS_BUILD_PROCESSES",
    "processes that build claims inside one step (0: one per CPU the step may use, at most 4)",
    "0",
    check=_integer(0, 64),
)
CLAIMS_MAX_REQUESTS_PER_SECOND = Setting(
    "CLAIMS_MAX_REQUESTS_PER_SECOND",
    "client-side request cap",
    "10",
    check=_number(0, 1000, low_open=True),
)
CLAIMS_MAX_REJECTION_RATE = Setting(
    "CLAIMS_MAX_REJECTION_RATE",
    "rejection rate above which posting is blocked",
    "0.2",
    check=_number(0, 1),
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
    "CLAIMS_EXECUTOR",
    "where steps run: multiprocess, in_process, k8s or celery",
    "multiprocess",
    check=_choice("multiprocess", "in_process", "k8s", "celery"),
)
CLAIMS_MAX_LINE_AMOUNT = Setting(
    "CLAIMS_MAX_LINE_AMOUNT",
    "charge-line amount (dollars) above which the encounter is rejected as implausible",
    "100000",
    check=_amount,
)
CLAIMS_MAX_CLAIM_AMOUNT = Setting(
    "CLAIMS_MAX_CLAIM_AMOUNT",
    "claim total (dollars) above which the encounter is rejected as implausible",
    "1000000",
    check=_amount,
)

#: Every setting, in the order the README lists them.
SETTINGS: tuple[Setting, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Setting)
)
# Characters no setting may hold: ASCII and C1 control characters (a newline pasted from a
# file, a tab), which a header, a URL or a path would carry along silently.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def setting_problems(setting: Setting, raw: str | None) -> list[str]:
    """What is wrong with one setting's raw environment value, each problem naming the
    variable and the fix and never the value; empty when unset or acceptable."""
    if raw is None or not raw.strip():
        return []
    if setting.secret:
        value = raw  # a secret is used byte for byte: its whitespace is an error, not trimmed
    else:
        if _CONTROL.search(raw) or raw != raw.strip():
            return [
                f"{setting.name} has surrounding spaces or control characters (a trailing "
                "newline from a file?): set it without them."
            ]
        value = raw
    problem = setting.check(value) if setting.check else None
    return [f"{setting.name} {problem.rstrip('.')}."] if problem else []


def check_environment(
    environ: Mapping[str, str] | None = None, exclude: Collection[Setting] = ()
) -> list[str]:
    """Every problem with the settings that are set (unset ones take their defaults), except
    those in ``exclude``, each naming the variable and its fix, never a value; empty when the
    run may start."""
    environ = os.environ if environ is None else environ
    problems = [
        problem
        for setting in SETTINGS
        if setting not in exclude
        for problem in setting_problems(setting, environ.get(setting.name))
    ]
    schema = (environ.get(EHR_SCHEMA.name) or "").strip()
    if schema == "sql" and not (environ.get(EHR_QUERY_FILE.name) or "").strip():
        problems.append("EHR_SCHEMA=sql needs EHR_QUERY_FILE: set it to the path of your query.")
    line_cap, claim_cap = (
        environ.get(s.name, "").strip() or s.default
        for s in (CLAIMS_MAX_LINE_AMOUNT, CLAIMS_MAX_CLAIM_AMOUNT)
    )
    try:
        if Decimal(line_cap) > Decimal(claim_cap):  # type: ignore[arg-type]
            problems.append(
                "CLAIMS_MAX_LINE_AMOUNT is above CLAIMS_MAX_CLAIM_AMOUNT: a claim holds its "
                "lines, so raise CLAIMS_MAX_CLAIM_AMOUNT or lower CLAIMS_MAX_LINE_AMOUNT."
            )
    except InvalidOperation:
        pass  # already reported above
    return problems


def require_valid_environment(
    environ: Mapping[str, str] | None = None, exclude: Collection[Setting] = ()
) -> None:
    """Raise one ConfigurationError listing every problem :func:`check_environment` finds."""
    problems = check_environment(environ, exclude)
    if problems:
        raise ConfigurationError("Settings to fix before any run: " + " ".join(problems))


def get(setting: Setting, environ: Mapping[str, str] | None = None) -> str | None:
    """The setting's value from the environment (empty counts as unset), else its default."""
    value = (os.environ if environ is None else environ).get(setting.name, "").strip()
    return value or setting.default


def require(setting: Setting, environ: Mapping[str, str] | None = None) -> str:
    """The setting's value, or a ConfigurationError that names the variable."""
    value = get(setting, environ)
    if value is None:
        raise ConfigurationError(f"{setting.name} is not set: {setting.meaning}.")
    return value


def get_int(setting: Setting, minimum: int = 0, environ: Mapping[str, str] | None = None) -> int:
    raw = require(setting, environ)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{setting.name} must be an integer.") from None
    if value < minimum:
        raise ConfigurationError(f"{setting.name} must be at least {minimum}.")
    return value


#: What CLAIMS_BUILD_PROCESSES=0 resolves to at most: each worker holds a few hundred MiB.
AUTO_BUILD_PROCESSES = 4


def build_processes(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CLAIMS_BUILD_PROCESSES; 0 resolved to the CPUs this process may use (at most
    :data:`AUTO_BUILD_PROCESSES`): its CPU affinity, and a container's CPU limit where cgroup v2
    shows one (``cpu.max``: quota and period; a Kubernetes ``limits.cpu``)."""
    processes = get_int(CLAIMS_BUILD_PROCESSES)
    if processes:
        return processes
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup_cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) // int(period))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to read
    return max(1, min(cpus, AUTO_BUILD_PROCESSES))


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


def get_amount(setting: Setting) -> Decimal:
    """A dollar-amount setting (its value, else its default) as a Decimal."""
    raw = require(setting)
    problem = _amount(raw)
    if problem:
        raise ConfigurationError(f"{setting.name} {problem}.")
    return Decimal(raw)


def today() -> date:
    """Today in CLAIMS_TIMEZONE: the one "today" of the schedule, the claim rules,
    check-source and purge."""
    return datetime.now(ZoneInfo(require(CLAIMS_TIMEZONE))).date()
