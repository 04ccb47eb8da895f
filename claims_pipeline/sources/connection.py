"""Read-only access to the EHR: every connection the adapters (and a user's query file) use
is refused writes by the database itself, whatever the SQL.

- PostgreSQL: the session's transactions are ``READ ONLY`` (``SET SESSION CHARACTERISTICS AS
  TRANSACTION READ ONLY``), so INSERT/UPDATE/DELETE/DDL, ``nextval`` and functions that write
  all fail.
  Dates psycopg cannot load (``infinity``, years BC or after 9999) load as UNREADABLE instead
  of failing the fetch (:func:`lenient_psycopg_dates`).
- MySQL/MariaDB: ``SET SESSION TRANSACTION READ ONLY``: writes to tables fail (error 1792).
- SQLite: a file is opened through a ``mode=ro`` URI, and every connection also sets
  ``PRAGMA query_only`` (which covers in-memory databases and ATTACHed files). Its text is
  decoded by :func:`~claims_pipeline.sources.base.decode_text`, so that one cell that is not
  UTF-8 is one unreadable value, not a failed fetch.

A session setting cannot stop a function that opens its own connection (PostgreSQL's
``dblink_exec``): the ``sql`` adapter refuses such calls by name, and the database user
should be read-only anyway (docs/sources.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL

from claims_pipeline.sources.base import UNREADABLE, decode_text

#: The statement that makes a new connection read-only, per dialect name.
READ_ONLY_SESSION: dict[str, str] = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",  # MariaDB's dialect name is mysql too
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}
_IN_MEMORY = ("", ":memory:")


def sqlite_read_only_url(url: URL) -> URL:
    """A SQLite file URL as a ``mode=ro`` URI (the file is never created or written); an
    in-memory URL, or a URI that already names its mode, as it came."""
    query = dict(url.query)
    database = url.database or ""
    if query.get("uri") == "true":
        if "mode" in query:  # mode=memory, or the user's own mode=ro
            return url
        return url.set(query={**query, "mode": "ro"})
    if database in _IN_MEMORY:
        return url
    # In a URI, "?", "#" and "%" in the path would start the query, the fragment, an escape.
    path = quote(database, safe="/:\\")
    return url.set(database=f"file:{path}", query={**query, "mode": "ro", "uri": "true"})


def read_only_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An Engine on ``url`` whose every connection the database keeps from writing (see the
    module docstring); ``kwargs`` go to ``create_engine``. Dialects without a read-only
    session (SQL Server) rely on the database user's grants alone."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = sqlite_read_only_url(parsed)
    engine = sa.create_engine(parsed, **kwargs)
    statement = READ_ONLY_SESSION.get(engine.dialect.name)
    if statement is not None:

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
            # PostgreSQL's SET is transactional: commit it, or the pool's rollback undoes it.
            dbapi_connection.commit()
            if engine.dialect.name == "sqlite":
                dbapi_connection.text_factory = decode_text
            elif engine.dialect.driver == "psycopg":
                lenient_psycopg_dates(dbapi_connection)

    return engine


def lenient_psycopg_dates(dbapi_connection: Any) -> None:
    """Make a psycopg 3 connection load a date or timestamp Python cannot hold (PostgreSQL's
    ``infinity``, ``4713-01-01 BC``, year 10000 and later) as UNREADABLE: psycopg raises for
    it, which would end the fetch of every row after it. Each value is parsed by the loader
    the connection had (psycopg's C one with ``psycopg[binary]``, which cannot be subclassed,
    so it is called from here): the pure-Python parser cost a fifth of an OpenEMR extract's
    CPU."""
    from psycopg import DataError
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    adapters = dbapi_connection.adapters

    def lenient(parser: type[Loader]) -> type[Loader]:
        class Lenient(Loader):
            def __init__(self, oid: int, context: Any = None):
                super().__init__(oid, context)
                self._parse = parser(oid, context).load

            def load(self, data: Any) -> Any:
                try:
                    return self._parse(data)
                except DataError:
                    return UNREADABLE

        return Lenient

    for type_name in ("date", "timestamp", "timestamptz"):
        parser = adapters.get_loader(adapters.types[type_name].oid, Format.TEXT)
        adapters.register_loader(type_name, lenient(parser))
