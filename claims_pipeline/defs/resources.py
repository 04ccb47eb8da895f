"""Resources: the EHR database, the import API, the data directory + ledger, quality gates.

Values come from the environment through ``dagster.EnvVar`` so that they never enter run
config; where a setting is unset its documented default is used, except the API key and
tenant, which have none: a run that needs them fails at launch naming the variable.

Settings are checked before any work, each problem naming the variable and its fix: when the
code location loads (:func:`build_resources`), and again with each resource's resolved values
when a step sets it up (``setup_for_execution``), since a run worker may see another
environment than the code server. A key with a trailing newline thus stops everything by name
before a byte is sent, although the multiprocess executor would set up the API resource only
in the last step. The database URLs are the exception at load: the first step of every run
sets up the EHR and storage resources, so a bad URL fails that run, with the run's own error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import dagster as dg
from sqlalchemy import Connection, Engine

from claims_pipeline import practices, settings
from claims_pipeline.delivery.client import ImportApiClient, RetryPolicy
from claims_pipeline.delivery.ledger import DeliveryLedger
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.phi import hide_url_password, safe_url
from claims_pipeline.sources import get_source
from claims_pipeline.sources.base import DEFAULT_CHUNK_ROWS, EncounterSource
from claims_pipeline.sources.connection import read_only_engine
from claims_pipeline.storage import PartitionStore

if TYPE_CHECKING:
    from claims_pipeline.components import ClaimsPractice
    from claims_pipeline.practices import Practice

_R = TypeVar("_R")


class _Shown(str):
    """Text that repr() shows as is."""

    def __repr__(self) -> str:
        return str(self)


class _MaskedRepr:
    """``repr()`` and ``str()`` (pydantic builds both from ``__repr_args__``) never show a
    secret field or a URL's password. A field still holding its ``EnvVar`` shows the name."""

    _secret_fields: ClassVar[frozenset[str]] = frozenset()
    _database_url_fields: ClassVar[frozenset[str]] = frozenset()
    _other_url_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            env_var_name = getattr(value, "env_var_name", None)  # EnvVar, EnvVar.int
            if env_var_name is not None:
                yield name, _Shown(f"EnvVar({env_var_name!r})")
            elif not isinstance(value, str):
                yield name, value
            elif name in self._secret_fields:
                yield name, "***"
            elif name in self._database_url_fields:
                yield name, safe_url(value)
            elif name in self._other_url_fields:
                yield name, hide_url_password(value)
            else:
                yield name, value


class EhrDatabase(_MaskedRepr, dg.ConfigurableResource):  # type: ignore[type-arg]
    """The source EHR: a SQLAlchemy URL and the schema adapter that reads it."""

    _database_url_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    url: str
    ehr_schema: str = "reference"
    query_file: str | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    #: The variable errors name for ``url`` (a practice file's ehr_url_env).
    url_variable: str = settings.EHR_DATABASE_URL.name

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _raise_problems(
            (_named(settings.EHR_DATABASE_URL, self.url_variable), self.url),
            (settings.EHR_SCHEMA, self.ehr_schema),
            (settings.EHR_QUERY_FILE, self.query_file),
        )

    def engine(self) -> Engine:
        """A read-only engine on the EHR (see ``sources/connection.py``)."""
        try:
            return read_only_engine(self.url, pool_pre_ping=True)
        except Exception as error:  # the URL may hold a password: never echo it
            raise ConfigurationError(
                f"{self.url_variable} is not a usable SQLAlchemy URL ({type(error).__name__})."
            ) from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read-only connection; its engine is disposed when the block ends."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def source(self) -> EncounterSource:
        return get_source(self.ehr_schema, self.query_file)


class ClaimsApi(_MaskedRepr, dg.ConfigurableResource):  # type: ignore[type-arg]
    """The claims-import API of one tenant. ``repr`` never shows the key."""

    _secret_fields: ClassVar[frozenset[str]] = frozenset({"api_key"})
    _other_url_fields: ClassVar[frozenset[str]] = frozenset({"base_url"})

    base_url: str
    api_key: str
    tenant_id: int
    batch_size: int = 100
    max_in_flight: int = 4
    max_requests_per_second: float = 10.0
    timeout_seconds: float = 30.0
    #: The variable errors name for ``api_key`` (a practice file's api_key_env).
    key_variable: str = settings.CLAIMS_API_KEY.name
    #: Where errors say ``tenant_id`` is set.
    tenant_variable: str = settings.CLAIMS_TENANT_ID.name

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _raise_problems(
            (settings.CLAIMS_API_URL, self.base_url),
            (_named(settings.CLAIMS_API_KEY, self.key_variable), self.api_key),
            (settings.CLAIMS_TENANT_ID, str(self.tenant_id)),
            (settings.CLAIMS_BATCH_SIZE, str(self.batch_size)),
            (settings.CLAIMS_MAX_IN_FLIGHT, str(self.max_in_flight)),
            (settings.CLAIMS_MAX_REQUESTS_PER_SECOND, str(self.max_requests_per_second)),
        )
        if not self.api_key.strip():
            raise ConfigurationError(f"{self.key_variable} is empty: set the tenant's API key.")

    def client(self, retry: RetryPolicy | None = None) -> ImportApiClient:
        return ImportApiClient(
            self.base_url,
            self.api_key,
            self.tenant_id,
            max_connections=self.max_in_flight,
            max_requests_per_second=self.max_requests_per_second,
            timeout_seconds=self.timeout_seconds,
            retry=retry,
            key_setting=self.key_variable,
            tenant_setting=self.tenant_variable,
        )


class ClaimsStorage(_MaskedRepr, dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where PHI at rest lives: per-partition Parquet files and the delivery ledger."""

    _database_url_fields: ClassVar[frozenset[str]] = frozenset({"ledger_url"})
    _other_url_fields: ClassVar[frozenset[str]] = frozenset({"data_dir"})

    data_dir: str
    ledger_url: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _raise_problems((settings.CLAIMS_LEDGER_URL, self.ledger_url))

    def store(self) -> PartitionStore:
        return PartitionStore(self.data_dir)

    @contextmanager
    def open_ledger(self) -> Iterator[DeliveryLedger]:
        """The delivery ledger (CLAIMS_LEDGER_URL), its connections closed when the block ends."""
        ledger = DeliveryLedger(self.ledger_url or settings.ledger_url(self._local_dir()))
        try:
            yield ledger
        finally:
            ledger.dispose()

    def _local_dir(self) -> Path:
        if "://" in self.data_dir:
            raise ConfigurationError(
                "CLAIMS_DATA_DIR is an object store: set CLAIMS_LEDGER_URL to a database "
                "(the ledger must be a database every step can reach)."
            )
        return Path(self.data_dir).expanduser()


class QualityGates(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Thresholds of the checks, and how long a claim that did not reach the service is
    retried and watched."""

    max_rejection_rate: float = 0.2
    max_delivery_attempts: int = 10
    filing_limits_file: str | None = None
    filing_warn_days: int = 30

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _raise_problems((settings.CLAIMS_MAX_REJECTION_RATE, str(self.max_rejection_rate)))


def _named(setting: settings.Setting, variable: str) -> settings.Setting:
    """``setting`` as read from ``variable`` (a practice's own variable for it)."""
    return dataclasses.replace(setting, name=variable)


def _raise_problems(*values: tuple[settings.Setting, str | None]) -> None:
    """A ConfigurationError naming every setting whose resolved value is unacceptable."""
    problems = [
        problem
        for setting, value in values
        for problem in settings.setting_problems(setting, value)
    ]
    if problems:
        raise ConfigurationError(" ".join(problems))


def _env(setting: settings.Setting, kind: str = "str") -> Any:
    """EnvVar when the variable is set, else the setting's default as a plain value. Dagster
    has no float EnvVar: float settings (never secrets) are read by the settings module."""
    if kind == "float":
        return settings.get_float(setting)
    if os.environ.get(setting.name, "").strip():
        return dg.EnvVar.int(setting.name) if kind == "int" else dg.EnvVar(setting.name)
    if setting.default is None:
        return None
    return int(setting.default) if kind == "int" else setting.default


def build_resources() -> dict[str, Any]:
    """The resources of the practice the environment configures (see settings.py); none when
    CLAIMS_PRACTICES_DIR names practice files, which bring their own. Raises a
    ConfigurationError naming every variable that is set to an unacceptable value."""
    settings.require_valid_environment(
        exclude=(settings.EHR_DATABASE_URL, settings.CLAIMS_LEDGER_URL)
    )
    if practices.practices_dir() is not None:
        return {}
    data_dir = str(settings.data_dir())
    ehr_url = _env(settings.EHR_DATABASE_URL) or settings.demo_ehr_url(settings.data_dir())
    return {
        "ehr": EhrDatabase(
            url=ehr_url,
            ehr_schema=_env(settings.EHR_SCHEMA),
            query_file=_env(settings.EHR_QUERY_FILE),
        ),
        "claims_api": _claims_api(
            base_url=_env(settings.CLAIMS_API_URL),
            api_key=dg.EnvVar(settings.CLAIMS_API_KEY.name),
            tenant_id=dg.EnvVar.int(settings.CLAIMS_TENANT_ID.name),
        ),
        "claims_storage": ClaimsStorage(
            data_dir=_env(settings.CLAIMS_DATA_DIR) or data_dir,
            ledger_url=_env(settings.CLAIMS_LEDGER_URL),
        ),
        "quality_gates": _quality_gates(
            _env(settings.CLAIMS_FILING_LIMITS_FILE),
            _env(settings.CLAIMS_FILING_WARN_DAYS, "int"),
        ),
    }


def _claims_api(**tenant: Any) -> ClaimsApi:
    """The API resource of a tenant (URL, key, id and the names errors use for them) with the
    deployment's batch size, concurrency and request cap."""
    return ClaimsApi(
        **tenant,
        batch_size=_env(settings.CLAIMS_BATCH_SIZE, "int"),
        max_in_flight=_env(settings.CLAIMS_MAX_IN_FLIGHT, "int"),
        max_requests_per_second=_env(settings.CLAIMS_MAX_REQUESTS_PER_SECOND, "float"),
    )


def _quality_gates(filing_limits_file: Any, filing_warn_days: Any) -> QualityGates:
    """The deployment's gates with a practice's (or the deployment's) filing settings."""
    return QualityGates(
        max_rejection_rate=_env(settings.CLAIMS_MAX_REJECTION_RATE, "float"),
        max_delivery_attempts=_env(settings.CLAIMS_MAX_DELIVERY_ATTEMPTS, "int"),
        filing_limits_file=filing_limits_file,
        filing_warn_days=filing_warn_days,
    )


def practice_resources(component: ClaimsPractice) -> dict[str, Any]:
    """The resources of a practice file, under its own keys: its EHR, its tenant and key, its
    data directory and ledger; the API's batch size and rates, amounts and gates are the
    deployment's (environment). Secrets stay in the variables the file names (EnvVar)."""
    practice = component.practice
    ehr_url: Any = dg.EnvVar(component.ehr_url_env) if component.ehr_url_env else component.ehr_url
    ledger_url: Any = (
        dg.EnvVar(component.ledger_url_env)
        if component.ledger_url_env
        else _env(settings.CLAIMS_LEDGER_URL)
    )
    filing_file = component.path(component.filing_limits_file) or _env(
        settings.CLAIMS_FILING_LIMITS_FILE
    )
    built: dict[str, Any] = {
        "ehr": EhrDatabase(
            url=ehr_url,
            ehr_schema=component.ehr_schema,
            query_file=component.path(component.query_file),
            url_variable=component.ehr_url_env or settings.EHR_DATABASE_URL.name,
        ),
        "claims_api": _claims_api(
            base_url=component.api_url or _env(settings.CLAIMS_API_URL),
            api_key=dg.EnvVar(component.api_key_env),
            tenant_id=component.tenant_id,
            key_variable=component.api_key_env,
            tenant_variable=f"tenant_id of practice file {component.name}",
        ),
        "claims_storage": ClaimsStorage(
            data_dir=component.data_directory(),
            ledger_url=ledger_url,
        ),
        "quality_gates": _quality_gates(
            filing_file,
            component.filing_warn_days
            if component.filing_warn_days is not None
            else _env(settings.CLAIMS_FILING_WARN_DAYS, "int"),
        ),
    }
    return {practice.resource_key(kind): resource for kind, resource in built.items()}


def practice_resource(context: Any, practice: Practice, kind: type[_R]) -> _R:
    """The practice's resource of a class (EhrDatabase, ClaimsApi, ClaimsStorage,
    QualityGates) from an asset's, schedule's or sensor's context."""
    resource = getattr(context.resources, practice.resource_key(_KINDS[kind]))
    if not isinstance(resource, kind):
        raise ConfigurationError(
            f"Resource {practice.resource_key(_KINDS[kind])} is not a {kind.__name__}."
        )
    return resource


def required_keys(practice: Practice, *kinds: type) -> set[str]:
    """Resource keys of a practice's resources of these classes, for required_resource_keys."""
    return {practice.resource_key(_KINDS[kind]) for kind in kinds}


def required_keys_of(served: list[Practice], *kinds: type) -> set[str]:
    """:func:`required_keys` of every practice served."""
    return {key for practice in served for key in required_keys(practice, *kinds)}


_KINDS: dict[type, str] = {
    EhrDatabase: "ehr",
    ClaimsApi: "claims_api",
    ClaimsStorage: "claims_storage",
    QualityGates: "quality_gates",
}
