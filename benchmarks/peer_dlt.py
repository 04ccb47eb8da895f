"""The peer: dlt's ``sql_database`` source, pyarrow backend, reading the same database.

Runs under a Python that has dlt (``pip install "dlt[sql_database]" sqlalchemy pyarrow``; not
a dependency of this project, so :mod:`benchmarks.e2e` runs this file with ``--dlt-python``,
e.g. a separate venv). Imports nothing from claims_pipeline.

``python benchmarks/peer_dlt.py --db-url URL --table charges [--join-sql FILE] --out dlt.json``

Times, each as the wall time of creating the source and draining its resource (Arrow tables of
``chunk_size`` rows, counted and dropped; nothing is loaded to a destination):

- ``sql_database(url, table_names=[table], backend="pyarrow").with_resources(table)``: the whole
  line table (charges / billing), every column: what dlt is built to do;
- with ``--join-sql``: ``sql_table`` with a ``query_adapter_callback`` that swaps in our
  adapter's own join (the SQL text the adapter runs): the same rows our extract reads.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _drain(resource_) -> int:
    rows = 0
    for item in resource_:
        rows += item.num_rows
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--table", default="charges")
    parser.add_argument("--join-sql", type=Path)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_database, sql_table

    figures: dict = {"dlt_version": dlt.__version__, "chunk_size": args.chunk_size}
    table_runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        source = sql_database(
            credentials=args.db_url,
            table_names=[args.table],
            backend="pyarrow",
            chunk_size=args.chunk_size,
        ).with_resources(args.table)
        rows = _drain(source.resources[args.table])
        table_runs.append(time.perf_counter() - started)
    figures["table"] = {
        "table": args.table,
        "rows": rows,
        "seconds_best": round(min(table_runs), 3),
        "seconds_all": [round(t, 3) for t in table_runs],
        "rows_per_second": round(rows / min(table_runs)),
    }
    if args.join_sql is not None:
        join_sql = args.join_sql.read_text()

        def our_join(query, table):
            return sa.text(join_sql)

        join_runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            resource_ = sql_table(
                credentials=args.db_url,
                table=args.table,
                backend="pyarrow",
                chunk_size=args.chunk_size,
                reflection_level="minimal",
                query_adapter_callback=our_join,
            )
            rows = _drain(resource_)
            join_runs.append(time.perf_counter() - started)
        figures["join"] = {
            "rows": rows,
            "seconds_best": round(min(join_runs), 3),
            "seconds_all": [round(t, 3) for t in join_runs],
            "rows_per_second": round(rows / min(join_runs)),
        }
    # VmHWM, not ru_maxrss: the latter starts at the parent's RSS after fork+exec.
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    figures["peak_rss_mib"] = round(hwm / 1024, 1)
    args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
