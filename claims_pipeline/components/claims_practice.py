"""``ClaimsPractice``: one practice of a deployment as a Dagster component, one YAML file each.

``CLAIMS_PRACTICES_DIR/<name>/defs.yaml``::

    type: claims_pipeline.components.ClaimsPractice
    attributes:
      name: riverside              # = the folder name; prefixes asset keys, job, schedule, pool
      tenant_id: 1042              # the practice's tenant at the import API
      api_key_env: RIVERSIDE_CLAIMS_API_KEY   # the variable holding its API key
      ehr_url_env: RIVERSIDE_EHR_DATABASE_URL # the variable holding its EHR URL
      ehr_schema: openemr          # reference, openemr or sql (+ query_file)
      timezone: America/Chicago
      first_date: "2025-03-01"
      lookback_days: 7

Optional: ``query_file`` and ``filing_limits_file`` (relative to the file's folder),
``filing_warn_days``, ``api_url`` (else CLAIMS_API_URL), ``ledger_url_env`` (else
CLAIMS_LEDGER_URL, else a SQLite ledger in the practice's data directory), ``data_dir`` (else
``CLAIMS_DATA_DIR/practices/<name>``) and ``alerts_env_prefix`` (alerts of this practice go to
the destinations of ``<prefix>CLAIMS_ALERT_*`` when any is set). docs/practices.md has more.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from claims_pipeline import practices, settings
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.practices import ENV_NAME, NAME, Practice

#: How a practice file names this component type.
COMPONENT_TYPES = ("claims_pipeline.components.ClaimsPractice", "ClaimsPractice")


class ClaimsPractice(dg.Component, dg.Model, dg.Resolvable):
    """One practice: its EHR, tenant, key, time zone, first date of service and look-back;
    builds its four assets, checks, job, 02:00 schedule, pool and resources."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lower-case letters, digits and _; the folder's name")
    tenant_id: int = Field(ge=1, description="tenant id at the import API")
    api_key_env: str = Field(description="environment variable holding the tenant's API key")
    ehr_url_env: str | None = Field(None, description="environment variable holding the EHR URL")
    ehr_url: str | None = Field(None, description="EHR URL without a password (else ehr_url_env)")
    ehr_schema: Literal["reference", "openemr", "sql"] = "reference"
    query_file: str | None = None
    timezone: str = "UTC"
    first_date: str = Field(description="first date of service, YYYY-MM-DD")
    lookback_days: int = Field(7, ge=0, le=366)
    filing_limits_file: str | None = None
    filing_warn_days: int | None = Field(None, ge=0)
    api_url: str | None = None
    ledger_url_env: str | None = None
    data_dir: str | None = None
    alerts_env_prefix: str | None = None
    #: Folder of the practice file: relative paths in it are read from there.
    _folder: str | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if NAME.fullmatch(value) is None:
            raise ValueError(
                "must be lower-case letters, digits and _ (up to 40), starting with a letter"
            )
        return value

    @field_validator("api_key_env", "ehr_url_env", "ledger_url_env", "alerts_env_prefix")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and ENV_NAME.fullmatch(value) is None:
            raise ValueError(
                "must be (the start of) an environment variable's NAME: upper-case letters, "
                "digits and _, e.g. ACME_API_KEY or ACME_"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        problem = settings.setting_problems(settings.CLAIMS_TIMEZONE, value)
        if problem:
            raise ValueError("must be an IANA time zone name such as America/Chicago")
        return value

    @field_validator("first_date")
    @classmethod
    def _first_date(cls, value: str) -> str:
        date.fromisoformat(value)  # ValueError names the field through pydantic
        return value

    @field_validator("ehr_url", "api_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and _has_password(value):
            raise ValueError("must not hold a password: put the URL in an environment variable")
        return value

    @classmethod
    def from_file(cls, path: Path) -> ClaimsPractice:
        """The practice of one ``<name>/defs.yaml``; its folder must be named as the practice.
        Errors name the file and the attribute at fault."""
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigurationError(
                f"{path} cannot be read as YAML ({type(error).__name__})."
            ) from None
        if not isinstance(document, dict) or document.get("type") not in COMPONENT_TYPES:
            raise ConfigurationError(
                f"{path}: `type` must be {COMPONENT_TYPES[0]}, with the practice under "
                "`attributes` (docs/practices.md)."
            )
        try:
            component = cls.model_validate(document.get("attributes") or {})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc']) or 'attributes'}: "
                f"{problem['msg']}"
                for problem in error.errors(include_input=False)
            )
            raise ConfigurationError(f"{path}: {problems}.") from None
        if component.name != path.parent.name:
            raise ConfigurationError(
                f"{path}: name {component.name!r} differs from its folder "
                f"{path.parent.name!r}; name the folder as the practice."
            )
        if (component.ehr_url is None) == (component.ehr_url_env is None):
            raise ConfigurationError(
                f"{path}: give exactly one of ehr_url_env (the variable holding the EHR URL) "
                "and ehr_url."
            )
        if component.ehr_schema == "sql" and not component.query_file:
            raise ConfigurationError(f"{path}: ehr_schema sql needs query_file.")
        component._folder = str(path.parent)
        return component

    @property
    def practice(self) -> Practice:
        return Practice(
            name=self.name,
            timezone=self.timezone,
            first_date=date.fromisoformat(self.first_date),
            lookback_days=self.lookback_days,
            alerts_env_prefix=self.alerts_env_prefix,
        )

    def path(self, relative: str | None) -> str | None:
        """A path of the file, relative to its folder."""
        if relative is None or self._folder is None:
            return relative
        return str(Path(self._folder, relative).expanduser())

    def data_directory(self) -> str:
        """Where its PHI at rest lives."""
        return self.data_dir or practices.data_dir_of(self.name)

    def resolved(self, variable: str | None) -> str | None:
        """The value of a variable the file names, for the CLI (resources use EnvVar)."""
        if variable is None:
            return None
        value = practices.env_value(variable)
        if value is None:
            raise ConfigurationError(f"{variable} is not set (practice {self.name}).")
        return value

    def ledger_url(self) -> str:
        """Its ledger: ledger_url_env, else CLAIMS_LEDGER_URL, else SQLite in its data folder."""
        return self.resolved(self.ledger_url_env) or settings.ledger_url(
            Path(self.data_directory()).expanduser()
        )

    def resources(self) -> dict[str, Any]:
        """The practice's resources under its own keys (:meth:`Practice.resource_key`)."""
        from claims_pipeline.defs.resources import practice_resources

        return practice_resources(self)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return self.definitions()

    def definitions(self) -> dg.Definitions:
        """The practice's assets, checks, job, schedule and resources."""
        from claims_pipeline.defs.claims_sync.definitions import practice_definitions

        return dg.Definitions.merge(
            practice_definitions(self.practice), dg.Definitions(resources=self.resources())
        )


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password is not None
    except Exception:  # not a database URL: an HTTP URL with user:password@ is checked too
        return "@" in url.split("//", 1)[-1].split("/", 1)[0]


def load_practices() -> list[ClaimsPractice]:
    """The practices of CLAIMS_PRACTICES_DIR, by name; empty when it is unset. Two practices
    with one tenant id, or one API-key variable, are refused: a key must never go out with
    another practice's tenant."""
    directory = practices.practices_dir()
    if directory is None:
        return []
    found = [ClaimsPractice.from_file(path) for path in practices.practice_files(directory)]
    for attribute in ("tenant_id", "api_key_env"):
        seen: dict[object, str] = {}
        for practice in found:
            value = getattr(practice, attribute)
            if value in seen:
                raise ConfigurationError(
                    f"Practices {seen[value]!r} and {practice.name!r} share {attribute} "
                    f"{value}: each practice needs its own tenant and key."
                )
            seen[value] = practice.name
    return found


def served_practices() -> list[Practice]:
    """Every practice this deployment serves: the files of CLAIMS_PRACTICES_DIR, else the one
    the environment configures."""
    return [file.practice for file in load_practices()] or [practices.environment_practice()]


def practice_named(name: str) -> ClaimsPractice:
    """The practice file of that name in CLAIMS_PRACTICES_DIR; a ConfigurationError listing the
    names served when there is none."""
    found = {practice.name: practice for practice in load_practices()}
    if name not in found:
        raise ConfigurationError(
            f"No practice {name!r} in {practices.CLAIMS_PRACTICES_DIR.name}"
            + (f" (practices: {', '.join(found)})." if found else " (it is not set).")
        )
    return found[name]
