"""A fresh, empty database per test module (or per test) on each dialect the project supports.

SQLite always runs (a file under pytest's tmp dir). PostgreSQL and MySQL/MariaDB run when
``CLAIMS_TEST_POSTGRES_URL`` / ``CLAIMS_TEST_MYSQL_URL`` point at a server the tests may create
databases on, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` and
``mysql+pymysql://root@127.0.0.1:3306/test``; otherwise those cases are skipped with the reason,
or fail when ``CLAIMS_REQUIRE_SERVICES=1``. Each use creates a database with a unique name and
drops it afterwards, so modules never see each other's tables.

Use in a test module::

    from claims_pipeline_tests.databases import fresh_database_fixture

    engine = fresh_database_fixture("engine")                    # one database per module
    scratch_engine = fresh_database_fixture("scratch_engine", scope="function")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

DIALECTS = ("sqlite", "postgresql", "mysql")

#: The environment variable that names each server, with an example value.
SERVER_URL_VARIABLES = {
    "postgresql": ("CLAIMS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("CLAIMS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
REQUIRE_SERVICES = "CLAIMS_REQUIRE_SERVICES"

#: Marks a test that needs a PostgreSQL or MariaDB server (deselect: -m "not services").
SERVICES = pytest.mark.services


def dialect_param(dialect: str) -> Any:
    """A pytest parameter for ``dialect``, marked ``services`` unless it is SQLite."""
    return pytest.param(dialect, id=dialect, marks=() if dialect == "sqlite" else SERVICES)


def server_url(dialect: str) -> URL:
    """The configured server URL for ``dialect``; skips the test when it is not configured, or
    fails it when CLAIMS_REQUIRE_SERVICES=1."""
    variable, example = SERVER_URL_VARIABLES[dialect]
    value = os.environ.get(variable, "").strip()
    if not value:
        reason = f"{variable} is not set (e.g. {example}): {dialect} case not run"
        if os.environ.get(REQUIRE_SERVICES) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_SERVICES}=1", pytrace=False)
        pytest.skip(reason)
    return sa.make_url(value)


@contextmanager
def fresh_database(dialect: str, tmp_dir: Path) -> Iterator[URL]:
    """URL of a new, empty database on ``dialect`` that is dropped on exit."""
    name = f"claims_test_{uuid.uuid4().hex[:12]}"
    if dialect == "sqlite":
        yield sa.make_url(f"sqlite:///{tmp_dir / name}.db")
        return
    admin_url = server_url(dialect)
    # CREATE/DROP DATABASE cannot run inside a transaction on PostgreSQL.
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        yield admin_url.set(database=name)
    finally:
        # WITH (FORCE) ends connections a test left open (e.g. a pooled engine not disposed).
        force = " WITH (FORCE)" if dialect == "postgresql" else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        admin.dispose()


def fresh_database_fixture(
    name: str, scope: str = "module", dialects: tuple[str, ...] = DIALECTS
) -> Callable[..., Any]:
    """A pytest fixture called ``name``, parametrised over ``dialects``, that yields an Engine
    on a fresh database (one per module by default, or per ``scope``)."""

    @pytest.fixture(  # type: ignore[call-overload]
        name=name, scope=scope, params=[dialect_param(d) for d in dialects]
    )
    def _engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
        with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
            engine = sa.create_engine(url)
            try:
                yield engine
            finally:
                engine.dispose()

    return _engine
