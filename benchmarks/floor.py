"""The floor: what the same work costs with nothing of ours in the way.

``python -m benchmarks.floor --db-url URL --schema reference --first D --last D
--claims-dir DIR --api-url URL --api-key KEY --tenant-id N --out floor.json``

1. **Read**: the adapter's own SELECT (the full join, compiled by SQLAlchemy for the dialect),
   executed on a raw DBAPI cursor and drained with ``fetchmany`` (a server-side cursor on
   PostgreSQL, as the adapter uses), rows discarded. Also, for the peer comparison, a plain
   ``SELECT * FROM <line table>`` drained the same way, and the same single-table read turned
   into Arrow record batches (what dlt's pyarrow backend produces).
2. **Post**: the claims the pipeline stored (``payload`` column of the ``claims`` Parquet
   files: already serialised), joined into request bodies of 100 before the clock starts, then
   posted with the same headers (x-api-key, Idempotency-Key) by 4 threads, each on its own
   keep-alive ``http.client`` connection, to the same emulator with an empty database (so every
   claim is an insert, as in the pipeline's first run).

The floor is read + post, one after the other.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import queue
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

FETCH_ROWS = 10_000
LINE_TABLES = {"reference": "charges", "openemr": "billing"}


def _statement(schema: str, first: date, last: date) -> sa.Select:
    if schema == "reference":
        from claims_pipeline.sources.reference import _extract_statement
    else:
        from claims_pipeline.sources.openemr import _extract_statement
    return _extract_statement(first, last + timedelta(days=1))


def _driver_sql(engine: sa.Engine, statement: sa.ClauseElement) -> tuple[str, Any]:
    # render_postcompile: expanding IN lists (OpenEMR's code types) become plain parameters.
    compiled = statement.compile(
        dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    if compiled.positional:
        params: Any = tuple(compiled.params[name] for name in compiled.positiontup)
    else:
        params = dict(compiled.params)
    return str(compiled), params


def _drain(engine: sa.Engine, sql: str, params: Any, fetch_rows: int, to_arrow: bool = False):
    """Rows read (and Arrow batches built, if asked) by a raw cursor; server-side on
    PostgreSQL."""
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if engine.dialect.name == "postgresql":
            cursor = dbapi.cursor(name="floor_read")
            cursor.itersize = fetch_rows
        else:
            cursor = dbapi.cursor()
        cursor.execute(sql, params)
        names = None
        rows = 0
        while True:
            chunk = cursor.fetchmany(fetch_rows)
            if not chunk:
                break
            rows += len(chunk)
            if to_arrow:
                names = names or [d[0] for d in cursor.description]
                columns = list(zip(*chunk, strict=True))
                pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names)
        cursor.close()
        return rows
    finally:
        raw.rollback()
        raw.close()


def timed(function, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def read_floor(url: str, schema: str, first: date, last: date) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        sql, params = _driver_sql(engine, _statement(schema, first, last))
        join_rows, join_seconds = timed(_drain, engine, sql, params, FETCH_ROWS)
        table = LINE_TABLES[schema]
        plain = f"SELECT * FROM {table}"
        table_rows, table_seconds = timed(_drain, engine, plain, (), FETCH_ROWS)
        arrow_rows, arrow_seconds = timed(_drain, engine, plain, (), FETCH_ROWS, to_arrow=True)
    finally:
        engine.dispose()
    return {
        "join_query_rows": join_rows,  # diagnosis rows included: the adapter folds them in
        "join_query_seconds": round(join_seconds, 3),
        "table": table,
        "table_rows": table_rows,
        "table_seconds": round(table_seconds, 3),
        "table_to_arrow_seconds": round(arrow_seconds, 3),
        "table_to_arrow_rows": arrow_rows,
    }


def request_bodies(claims_dir: Path, batch_size: int) -> list[tuple[bytes, str]]:
    """(body, Idempotency-Key) of each batch, exactly as the pipeline builds them."""
    from claims_pipeline.delivery.client import batch_body, new_idempotency_key

    payloads: list[str] = []
    for path in sorted(claims_dir.glob("*.parquet")):
        payloads += pq.read_table(path, columns=["payload"]).column(0).to_pylist()
    bodies = []
    for start in range(0, len(payloads), batch_size):
        body = batch_body(payloads[start : start + batch_size])
        bodies.append((body, new_idempotency_key()))
    return bodies


def post_floor(
    bodies: list[tuple[bytes, str]], api_url: str, api_key: str, tenant_id: int, connections: int
) -> dict[str, Any]:
    parts = urlsplit(api_url)
    path = f"/claims-import?tenant_id={tenant_id}"
    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in bodies:
        work.put(item)
    errors: list[str] = []
    acknowledged = [0] * connections

    def worker(slot: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while True:
                try:
                    body, key = work.get_nowait()
                except queue.Empty:
                    return
                connection.request(
                    "POST",
                    path,
                    body=body,
                    headers={
                        "x-api-key": api_key,
                        "content-type": "application/json",
                        "Idempotency-Key": key,
                    },
                )
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    errors.append(f"HTTP {response.status}")
                    return
                acknowledged[slot] += len(json.loads(answer)["claim_ids"])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "claims": sum(acknowledged),
        "body_mib": round(sum(len(b) for b, _ in bodies) / 2**20, 1),
        "post_seconds": round(seconds, 3),
        "errors": errors[:5],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--schema", choices=sorted(LINE_TABLES), default="reference")
    parser.add_argument("--first", type=date.fromisoformat, required=True)
    parser.add_argument("--last", type=date.fromisoformat, required=True)
    parser.add_argument("--claims-dir", type=Path)
    parser.add_argument("--api-url")
    parser.add_argument("--api-key")
    parser.add_argument("--tenant-id", type=int)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"read": read_floor(args.db_url, args.schema, args.first, args.last)}
    if args.claims_dir is not None:
        bodies = request_bodies(args.claims_dir, args.batch_size)
        figures["post"] = post_floor(
            bodies, args.api_url, args.api_key, args.tenant_id, args.connections
        )
        figures["post"]["body_sha256"] = hashlib.sha256(b"".join(b for b, _ in bodies)).hexdigest()
    args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
