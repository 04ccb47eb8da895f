"""PHI at rest: the Parquet files of every partition of every asset, under one directory.

``CLAIMS_DATA_DIR`` is a local directory (created owner-only) or an object-store URI that
pyarrow understands (``s3://bucket/prefix``, ``gs://...``), so steps on different machines see
the same files with no code change. Layout: ``{root}/{asset}/{partition}.parquet``. Files are
written to a temporary name and moved into place, so a killed step never leaves a half file.
A file carries *facts* in its Parquet metadata: when the EHR rows behind it were read
(``extracted_at``) and the fingerprint of those rows. Of two runs writing the same partition at
once, the file from the later extraction stays, whichever finishes last: no step ever reads a
file older than the one it replaced.

Locally, PHI at rest is owner-only whatever the process umask: directories ``0700``, files
``0600`` from the moment they exist (:func:`private_file`, :func:`owner_only`).
"""

from __future__ import annotations

import fcntl
import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from claims_pipeline.errors import ConfigurationError
from claims_pipeline.phi import describe_error

CLAIM_SCHEMA = pa.schema(
    [
        pa.field("service_date", pa.date32(), nullable=False),
        pa.field("encounter_id", pa.string(), nullable=False),
        pa.field("claim_submitter_identifier", pa.string(), nullable=False),
        pa.field("provider_npi", pa.string(), nullable=False),
        pa.field("visit_number", pa.string()),
        pa.field("payer_name", pa.string()),
        pa.field("line_count", pa.int32()),
        pa.field("total_amount", pa.string()),  # decimal text: exact money
        pa.field("icd_codes", pa.string()),
        pa.field("hcpcs_codes", pa.string()),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),  # the claim's JSON exactly as posted
    ]
)

REJECTION_SCHEMA = pa.schema(
    [
        pa.field("service_date", pa.date32(), nullable=False),
        pa.field("encounter_id", pa.string()),
        pa.field("claim_submitter_identifier", pa.string()),
        pa.field("payer_name", pa.string()),
        pa.field("provider_npi", pa.string()),  # the rendering NPI of the first line
        pa.field("billed_amount", pa.string()),  # decimal text: the lines' total as billed
        pa.field("reason_codes", pa.string()),  # comma-separated ReasonCode values
        pa.field("fields", pa.string()),  # comma-separated fields at fault
        pa.field("messages", pa.string()),  # " | "-separated, free of PHI
        pa.field("code_set", pa.string()),
    ]
)

DELIVERY_SCHEMA = pa.schema(
    [
        pa.field("service_date", pa.date32(), nullable=False),
        pa.field("provider_npi", pa.string(), nullable=False),
        pa.field("claim_submitter_identifier", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # delivery.sink.Outcome values
        pa.field("claim_id", pa.int64()),
        pa.field("content_hash", pa.string()),
        pa.field("reason", pa.string()),  # scrubbed server message for rejected/pending
    ]
)


EXTRACTED_AT = "extracted_at"
FINGERPRINT = "fingerprint"
_FACT_PREFIX = "claims_pipeline."


def format_instant(instant: datetime) -> str:
    """A UTC instant as fixed-width text, so that text order is time order."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _encode(facts: dict[str, str]) -> dict[bytes, bytes]:
    return {f"{_FACT_PREFIX}{key}".encode(): value.encode() for key, value in facts.items()}


def add_facts(writer: pq.ParquetWriter, facts: dict[str, str]) -> None:
    """Store more facts with a file being written (:meth:`PartitionStore.writer`): facts known
    only once its rows are written. An added fact with the name of one given when it was
    opened replaces it."""
    writer.add_key_value_metadata(_encode(facts))


class PartitionStore:
    """Per-partition Parquet files of the pipeline's assets under one root."""

    def __init__(self, root: str):
        #: ``root`` as given: what another process opens the same store with
        self.location = root
        if "://" in root:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(root)
            except (pa.ArrowInvalid, OSError) as error:
                raise ConfigurationError(
                    f"CLAIMS_DATA_DIR is not a usable location: {describe_error(error)}"
                ) from None
            self.local = False
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(os.path.expanduser(root))
            self.local = True
            _make_private_dir(self.root)

    def path(self, asset: str, partition: str) -> str:
        return f"{self.root}/{asset}/{partition}.parquet"

    @contextmanager
    def writer(
        self,
        asset: str,
        partition: str,
        schema: pa.Schema,
        facts: dict[str, str] | None = None,
    ) -> Iterator[pq.ParquetWriter]:
        """A Parquet writer for one partition; the file appears only when the block succeeds,
        and replaces the current one only if its ``extracted_at`` fact is not older."""
        if facts:
            schema = schema.with_metadata({**(schema.metadata or {}), **_encode(facts)})
        final = self.path(asset, partition)
        directory = f"{self.root}/{asset}"
        temporary = self.scratch_path(asset, partition)
        try:
            with pq.ParquetWriter(temporary, schema, filesystem=self.fs, compression="zstd") as out:
                yield out
            with self._partition_lock(directory):
                current = self.facts(asset, partition).get(EXTRACTED_AT, "")
                if facts and EXTRACTED_AT in facts and current > facts[EXTRACTED_AT]:
                    self.fs.delete_file(temporary)  # another run read the EHR later: keep its
                else:
                    self.fs.move(temporary, final)
        except BaseException:
            if self.fs.get_file_info(temporary).type == pafs.FileType.File:
                self.fs.delete_file(temporary)
            raise

    def scratch_path(self, asset: str, partition: str) -> str:
        """A new file beside ``asset``'s partition files, for rows on their way into one (a
        write in progress, a part of a day): named like an interrupted write
        (``.<partition>.<id>.tmp``), which the purge job deletes if a killed step left it.
        Locally the file exists, owner-only, before any byte is written."""
        directory = f"{self.root}/{asset}"
        if self.local:
            _make_private_dir(directory)
        else:
            self.fs.create_dir(directory, recursive=True)
        path = f"{directory}/.{partition}.{uuid.uuid4().hex}.tmp"
        if self.local:
            private_file(path)
        return path

    @contextmanager
    def scratch_writer(
        self, path: str, schema: pa.Schema
    ) -> Iterator[pa.ipc.RecordBatchFileWriter]:
        """Rows for a :meth:`scratch_path` file, as an Arrow file (LZ4: a tenth of the bytes
        of claims' JSON for about a second per million claims), read back once by
        :meth:`read_scratch`, then deleted."""
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with (
            self.fs.open_output_stream(path) as sink,
            pa.ipc.new_file(sink, schema, options=options) as out,
        ):
            yield out

    def read_scratch(self, path: str) -> Iterator[pa.RecordBatch]:
        with self.fs.open_input_file(path) as source:
            reader = pa.ipc.open_file(source)
            for index in range(reader.num_record_batches):
                yield reader.get_batch(index)

    def delete_scratch(self, path: str) -> None:
        """Delete a :meth:`scratch_path` file (nothing if it is already gone)."""
        with suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def _footer(self, asset: str, partition: str) -> pq.FileMetaData | None:
        """A partition file's Parquet footer (None when it has no readable file)."""
        try:
            with self.fs.open_input_file(self.path(asset, partition)) as source:
                return pq.read_metadata(source)
        except (FileNotFoundError, OSError, pa.ArrowInvalid):
            return None

    def row_count(self, asset: str, partition: str) -> int:
        """Rows stored for one partition, from the file's footer (0 when it has no file)."""
        footer = self._footer(asset, partition)
        return 0 if footer is None else int(footer.num_rows)

    def facts(self, asset: str, partition: str) -> dict[str, str]:
        """The facts stored with a partition's file ({} when absent or written without)."""
        footer = self._footer(asset, partition)
        # the file's key-value metadata: the schema's, and any added_facts
        stored = (footer.metadata if footer is not None else None) or {}
        return {
            key.decode()[len(_FACT_PREFIX) :]: value.decode()
            for key, value in stored.items()
            if key.decode().startswith(_FACT_PREFIX)
        }

    @contextmanager
    def _partition_lock(self, directory: str) -> Iterator[None]:
        """Serialise replace decisions in one directory (local disks; object stores have no
        such lock, and there the later of two simultaneous moves wins)."""
        if not self.local:
            yield
            return
        descriptor = os.open(f"{directory}/.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    @contextmanager
    def private_output(self, directory: str, name: str) -> Iterator[pa.NativeFile]:
        """A binary output stream for ``{root}/{directory}/{name}`` (such as a dry run's
        payloads): locally the directory is ``0700`` and the file ``0600`` before any byte."""
        folder = f"{self.root}/{directory}"
        path = f"{folder}/{name}"
        if self.local:
            _make_private_dir(folder)
            private_file(path)
        else:
            self.fs.create_dir(folder, recursive=True)
        with self.fs.open_output_stream(path) as stream:
            yield stream

    def read_batches(
        self,
        asset: str,
        partition: str,
        batch_size: int = 20_000,
        columns: list[str] | None = None,
        from_row: int = 0,
    ) -> Iterator[pa.RecordBatch]:
        """Stream one partition's rows, from row ``from_row`` on (the row groups before it are
        not read); a missing partition names the asset to run first."""
        path = self.path(asset, partition)
        try:
            source = self.fs.open_input_file(path)
        except FileNotFoundError:
            raise ConfigurationError(
                f"No stored data for {asset} partition {partition} under CLAIMS_DATA_DIR: "
                f"materialize {asset} for that day first."
            ) from None
        with source:
            parquet = pq.ParquetFile(source)
            first, skip = 0, from_row
            while first < parquet.num_row_groups and skip >= (
                rows := parquet.metadata.row_group(first).num_rows
            ):
                first, skip = first + 1, skip - rows
            groups = list(range(first, parquet.num_row_groups))
            for batch in parquet.iter_batches(batch_size, groups, columns):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                yield batch.slice(skip) if skip else batch
                skip = 0

    def partitions(self, asset: str) -> list[str]:
        """Partition keys stored for an asset, sorted."""
        selector = pafs.FileSelector(f"{self.root}/{asset}", allow_not_found=True)
        return sorted(
            info.base_name.removesuffix(".parquet")
            for info in self.fs.get_file_info(selector)
            if info.base_name.endswith(".parquet") and not info.base_name.startswith(".")
        )


def _make_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def private_file(path: str | os.PathLike[str]) -> None:
    """Make ``path`` an owner-only (``0600``) file: created empty if absent, else chmod-ed
    (a file owned by someone else is left as it is). SQLite gives its ``-wal``/``-shm``/
    ``-journal`` files the database file's permissions, so this covers those too."""
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(descriptor)
    with suppress(PermissionError):
        os.chmod(path, 0o600)


@contextmanager
def owner_only() -> Iterator[None]:
    """Run the block with umask ``077``: every file and directory it creates (SQLite
    databases, Dagster's storage, a subprocess's files) is the owner's alone. The umask is
    per process: use it around a whole command, not inside threads of a long-lived server."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


_EPOCH = date(1970, 1, 1)


@functools.lru_cache(maxsize=65_536)  # a day's rows hold one service date, a few 10,000 births
def _day(days: int) -> date:
    return _EPOCH + timedelta(days=days)  # OverflowError past 9999-12-31, as pyarrow's own


def _python_values(column: pa.Array) -> list[Any]:
    """``column.to_pylist()``; a date32 column's dates made from its day numbers, which costs
    a thirtieth of pyarrow's per-value path (a date column took as long as 25 text columns)."""
    if column.type == pa.date32():
        return [
            None if days is None else _day(days) for days in column.cast(pa.int32()).to_pylist()
        ]
    values: list[Any] = column.to_pylist()
    return values


def python_rows(batch: pa.RecordBatch) -> Iterator[dict[str, Any]]:
    """``batch.to_pylist()`` one row at a time, converted a column at a time (about three times
    faster: pyarrow's row path builds every value through a generic per-value conversion)."""
    names = batch.schema.names
    for values in zip(*(_python_values(column) for column in batch.columns), strict=True):
        yield dict(zip(names, values, strict=True))


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
