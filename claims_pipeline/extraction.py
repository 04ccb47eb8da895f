"""Extraction of a range of dates of service: stream the adapter's lines into one Parquet file
per day and count what was read. Plain code, called by the ``ehr_encounters`` asset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

from claims_pipeline.errors import ClaimsPipelineError, SourceError, StorageError
from claims_pipeline.names import ENCOUNTERS
from claims_pipeline.phi import describe_error
from claims_pipeline.sources.base import BatchSource, EncounterSource, to_record_batch
from claims_pipeline.sources.changes import facts_of, fingerprints_alongside
from claims_pipeline.sources.lines import LINE_SCHEMA
from claims_pipeline.storage import FINGERPRINT, PartitionStore, add_facts, format_instant

PROGRESS_EVERY_ROWS = 100_000


@dataclass
class DayExtract:
    """What one date of service's extract holds."""

    charge_lines: int = 0
    encounters: int = 0
    unreadable_lines: int = 0  # lines holding a value the database driver could not read


def extract_days(
    connect: Callable[[], AbstractContextManager[Connection]],
    source: EncounterSource,
    store: PartitionStore,
    days: list[date],
    chunk_rows: int,
    progress: Callable[[int], None] = lambda lines: None,
    processes: int = 1,
) -> dict[str, DayExtract]:
    """Extract ``days`` (consecutive) into ``store``: per ISO day, lines and encounters. An
    adapter that builds Arrow batches converts a long read's rows in ``processes`` worker
    processes (sources/workers.py).

    Raises SourceError when the EHR cannot be read (never quoting a driver's message, which may
    hold a row's values) and StorageError when a file cannot be written."""
    try:
        with connect() as conn, ExitStack() as files:
            problems = source.check(conn)
            if problems:
                raise SourceError(
                    f"EHR_SCHEMA={source.name} cannot read this database: " + "; ".join(problems)
                )
            # Read from before the lines: an edit made meanwhile shows as a change next night.
            instant = format_instant(datetime.now(UTC))
            fingerprints = files.enter_context(fingerprints_alongside(conn, source.name, days))
            writers = {
                key: files.enter_context(_storing(store.writer(ENCOUNTERS, key, LINE_SCHEMA, f)))
                for key, f in facts_of(days, instant, {}).items()
            }
            end = days[-1] + timedelta(days=1)
            batches = (
                source.extract_batches(conn, days[0], end, chunk_rows, processes)
                if isinstance(source, BatchSource)
                else map(to_record_batch, source.extract(conn, days[0], end, chunk_rows))
            )
            tallies = _split_by_day(batches, writers, progress)
            for day, fingerprint in fingerprints().items():
                add_facts(writers[day.isoformat()], {FINGERPRINT: fingerprint})
            return tallies
    except ClaimsPipelineError:
        raise
    except Exception as error:
        raise SourceError(
            f"Reading the EHR (EHR_SCHEMA={source.name}) failed: {describe_error(error)}"
        ) from None


def _split_by_day(
    batches: Iterator[pa.RecordBatch],
    writers: dict[str, pq.ParquetWriter],
    progress: Callable[[int], None],
) -> dict[str, DayExtract]:
    tallies = {key: DayExtract() for key in writers}
    last_encounter: dict[str, str | None] = dict.fromkeys(writers)
    total = 0
    for batch in batches:
        for day in pc.unique(batch.column("service_date")).to_pylist():
            key = day.isoformat()
            part = batch.filter(pc.equal(batch.column("service_date"), day))
            _write(writers[key], part)
            tallies[key].charge_lines += part.num_rows
            tallies[key].unreadable_lines += pc.count(part.column("unreadable_columns")).as_py()
            previous = last_encounter[key]  # an encounter's lines are contiguous
            for encounter_id in part.column("encounter_id").to_pylist():
                if encounter_id != previous:
                    tallies[key].encounters += 1
                    previous = encounter_id
            last_encounter[key] = previous
        before, total = total, total + batch.num_rows
        if total // PROGRESS_EVERY_ROWS > before // PROGRESS_EVERY_ROWS:
            progress(total)
    return tallies


def _write(writer: pq.ParquetWriter, part: pa.RecordBatch) -> None:
    try:
        writer.write_batch(part)
    except (OSError, pa.ArrowException) as error:
        raise StorageError(
            f"Writing {ENCOUNTERS} under CLAIMS_DATA_DIR failed: {describe_error(error)}"
        ) from None


class _storing(AbstractContextManager[pq.ParquetWriter]):
    """A store writer whose opening and final move report storage errors by name."""

    def __init__(self, inner: AbstractContextManager[pq.ParquetWriter]):
        self.inner = inner

    def __enter__(self) -> pq.ParquetWriter:
        try:
            return self.inner.__enter__()
        except (OSError, pa.ArrowException) as error:
            raise StorageError(
                f"Writing {ENCOUNTERS} under CLAIMS_DATA_DIR failed: {describe_error(error)}"
            ) from None

    def __exit__(self, *exc: object) -> bool | None:
        try:
            return self.inner.__exit__(*exc)  # type: ignore[arg-type]
        except (OSError, pa.ArrowException) as error:
            if exc[0] is not None:
                raise
            raise StorageError(
                f"Writing {ENCOUNTERS} under CLAIMS_DATA_DIR failed: {describe_error(error)}"
            ) from None
