"""The Dagster instance's storage, chosen by the environment (see docs/deploying.md).

``dagster.yaml`` names :class:`StorageFromEnvironment` under ``storage: custom:``. It gives
Dagster's own storage classes: PostgreSQL (dagster-postgres, for runs, the event log and
schedules) when ``DAGSTER_PG_URL`` or ``DAGSTER_PG_HOST`` is set, and SQLite under
``$DAGSTER_HOME`` otherwise. These are settings of the Dagster instance, not of the code
location: the webserver, the daemon and every run worker read them when they build the
instance, so all of them must see the same values.

dagster-postgres drives psycopg2, while SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to
psycopg 3, which Dagster's storage does not survive (the webserver's per-connection statement
timeout closes psycopg 3 connections). URLs are therefore always given to Dagster as
``postgresql+psycopg2://``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from sqlalchemy.engine import URL

from claims_pipeline.errors import ConfigurationError

PG_URL = "DAGSTER_PG_URL"
PG_HOST = "DAGSTER_PG_HOST"
PG_PORT = "DAGSTER_PG_PORT"
PG_USERNAME = "DAGSTER_PG_USERNAME"
PG_PASSWORD = "DAGSTER_PG_PASSWORD"  # noqa: S105 - the variable's name, not a password
PG_DB = "DAGSTER_PG_DB"
PSYCOPG2_SCHEME = "postgresql+psycopg2"
#: Where SQLite storage lives when DAGSTER_HOME is unset (the CLI's temporary instance with a
#: dagster.yaml in the working directory): the demo's home, the same for every process.
FALLBACK_HOME = ".dagster_home"


def _get(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def with_psycopg2(url: str) -> str:
    """``url`` with the driver dagster-postgres needs: ``postgresql://`` and ``postgres://``
    become ``postgresql+psycopg2://``; any other driver is a ConfigurationError."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ConfigurationError(f"{PG_URL} is not a URL (expected {PSYCOPG2_SCHEME}://...).")
    if scheme in ("postgresql", "postgres"):
        return f"{PSYCOPG2_SCHEME}://{rest}"
    if scheme != PSYCOPG2_SCHEME:
        raise ConfigurationError(
            f"{PG_URL} uses the scheme {scheme}://; Dagster's PostgreSQL storage needs "
            f"{PSYCOPG2_SCHEME}:// (dagster-postgres drives psycopg2)."
        )
    return url


def postgres_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The psycopg2 URL of Dagster's PostgreSQL storage, or None when neither ``DAGSTER_PG_URL``
    nor ``DAGSTER_PG_HOST`` is set. ``DAGSTER_PG_URL`` wins; otherwise the URL is built from
    ``DAGSTER_PG_HOST``, ``DAGSTER_PG_PORT`` (5432), ``DAGSTER_PG_USERNAME``,
    ``DAGSTER_PG_PASSWORD`` (optional) and ``DAGSTER_PG_DB``."""
    environ = os.environ if environ is None else environ
    url = _get(environ, PG_URL)
    if url:
        return with_psycopg2(url)
    host = _get(environ, PG_HOST)
    if not host:
        return None
    missing = [name for name in (PG_USERNAME, PG_DB) if not _get(environ, name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigurationError(f"{PG_HOST} is set but {' and '.join(missing)} {verb} not.")
    port = _get(environ, PG_PORT) or "5432"
    if not port.isdigit():
        raise ConfigurationError(f"{PG_PORT} must be a port number.")
    return URL.create(
        PSYCOPG2_SCHEME,
        username=_get(environ, PG_USERNAME),
        password=environ.get(PG_PASSWORD) or None,
        host=host,
        port=int(port),
        database=_get(environ, PG_DB),
    ).render_as_string(hide_password=False)


def sqlite_base_dir(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The directory of SQLite storage: as configured, else $DAGSTER_HOME, else ./.dagster_home."""
    environ = os.environ if environ is None else environ
    chosen = configured or _get(environ, "DAGSTER_HOME") or FALLBACK_HOME
    return str(Path(chosen).expanduser().resolve())


class StorageFromEnvironment(DagsterStorage, ConfigurableClass):
    """``storage: custom:`` of dagster.yaml. Never instantiated: :meth:`from_config_value` builds
    Dagster's own ``DagsterPostgresStorage`` or ``DagsterSqliteStorage``, so everything else
    (migrations, the webserver's connection tuning, concurrency slots) is stock Dagster.

    Config (all optional): ``base_dir`` of SQLite storage (default ``$DAGSTER_HOME``) and
    ``should_autocreate_tables`` of PostgreSQL storage (default true).
    """

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "base_dir": Field(StringSource, is_required=False),
            "should_autocreate_tables": Field(bool, is_required=False, default_value=True),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> DagsterStorage:
        url = postgres_url()
        if url is None:
            return DagsterSqliteStorage.from_local(
                base_dir=sqlite_base_dir(config_value.get("base_dir")), inst_data=inst_data
            )
        from dagster_postgres import DagsterPostgresStorage

        # inst_data is this class's own config (no secrets): the URL stays in the environment.
        return DagsterPostgresStorage(
            postgres_url=url,
            should_autocreate_tables=config_value["should_autocreate_tables"],
            inst_data=inst_data,
        )

    @property
    def inst_data(self) -> ConfigurableClassData | None:  # pragma: no cover - never instantiated
        raise NotImplementedError

    @property
    def event_log_storage(self):  # pragma: no cover - never instantiated
        raise NotImplementedError

    @property
    def run_storage(self):  # pragma: no cover - never instantiated
        raise NotImplementedError

    @property
    def schedule_storage(self):  # pragma: no cover - never instantiated
        raise NotImplementedError
