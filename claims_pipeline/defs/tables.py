"""Buffered, column-wise writing of rows into a Parquet partition file."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class RowBuffer:
    """Collects row dicts and writes them to ``writer`` as record batches of ``size`` rows."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, size: int = 10_000):
        self.writer = writer
        self.schema = schema
        self.size = size
        self.rows = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._pending = 0

    def append(self, row: dict[str, Any]) -> None:
        for name, values in self._columns.items():
            values.append(row.get(name))
        self._pending += 1
        self.rows += 1
        if self._pending >= self.size:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.writer.write_batch(pa.RecordBatch.from_pydict(self._columns, schema=self.schema))
            self._columns = {name: [] for name in self.schema.names}
            self._pending = 0
