"""Searching everything a person can see for PHI and secrets: the needles and the haystacks.

**Needles** are read straight from the seeded EHR (``patients``, ``coverages``) plus the secrets
a scenario used. How they are chosen, so that a hit means a leak and a clean scan means
something:

- *Full names* ("Mary Smith", "Smith, Mary", "Smith Mary"), case-insensitive, any run of
  spaces, commas, dots, underscores, ``+`` or ``%20`` between the parts. Always needles.
- *Name parts* (first or last name alone, at least 3 characters), case-sensitive whole words.
  A part is **not** a needle when it is also a provider's name part (providers draw from the same
  name pools, and provider names are not PHI), a word of a payer, facility, city or street name,
  or a common English word (:data:`COMMON_WORDS`): those can show up legitimately, and a hit on
  them would say nothing about a patient.
- *Dates of birth* as ``1985-04-12``, ``04/12/1985`` and ``4/12/1985``, except a date that the
  pipeline prints for its own reasons (partition start, dates of service of the scenario).
- *Member ids* (every coverage's), case-insensitive whole words.
- *Street addresses* ("4821 Live Oak Ln"), case-insensitive.
- *Secrets*: every API key a scenario used (right and wrong), database passwords; literally and
  URL-encoded.

Every needle with non-ASCII characters is also searched for in its JSON-escaped form
(``N\\u00fa\\u00f1ez``), because Dagster stores events as ASCII JSON.

*Echoed spellings* (:func:`echo_needles`, for the patients whose claims an API refused while
quoting them): each part of the name split on hyphens and apostrophes (``O'Brien``, ``Brien``,
two-letter parts too), case-insensitive whole words unless they may appear legitimately;
the member id and its digits with any separators or none (``MEM-987654``, ``mem 987654``,
``987-654``); the date of birth with any separators or none (``19800307``, ``1980/03/07``).

**Haystacks** are ``(location, text)`` pairs. A :class:`Hit` names the location and the kind
of needle only, never the needle itself: the assertion message of a failing scan must not be a
leak of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from claims_pipeline.sources import reference

# Demo name parts that are also English words (capitalised at the start of any sentence).
_COMMON_WORDS = """
    Mark Grace Frank Carol Smith Miller Baker Walker Cooper Brooks Foster Wright Turner Bailey
    Long Young Green Gray King Wood Cook Price Reed Brown White Hall Ward Hill Lee Martin
"""
COMMON_WORDS = frozenset(_COMMON_WORDS.split())

_TOKEN = re.compile(r"[^\W_]+")
_NAME_SEPARATOR = r"(?:[\s,._+]|%20)+"
# What a server may put between the characters of an identifier it reformats, if anything.
_ANY_SEPARATOR = r"[\W_]{0,3}"
# Where a name splits into the parts a server may echo alone.
_NAME_PARTS = (re.compile(r"[\s-]+"), re.compile(r"[\s'\-]+"))


@dataclass(frozen=True)
class Needle:
    kind: str
    pattern: re.Pattern[str]
    key: str  # a casefolded token every match contains: the cheap first filter


#: In raw binary files, needles whose key word is shorter than this are not tried (see scan).
MIN_BINARY_KEY = 4


@dataclass(frozen=True)
class Hit:
    location: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.location}"


def _word(value: str) -> str:
    return rf"(?<![^\W_]){value}(?![^\W_])"


def _key(value: str) -> str:
    tokens = _TOKEN.findall(value)
    return max(tokens, key=len).casefold() if tokens else value.casefold()


@dataclass
class Needles:
    """The values that must never be found, indexed for a fast scan of large texts (but for
    the few added by :meth:`add_spaced`, tried on every text)."""

    needles: list[Needle] = field(default_factory=list)
    _index: dict[str, list[Needle]] = field(default_factory=dict)
    _unindexed: list[Needle] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.needles)

    def extend(self, other: Needles) -> None:
        for needle in other.needles:
            self._keep(needle)

    def _keep(self, needle: Needle) -> None:
        self.needles.append(needle)
        if needle.key:
            self._index.setdefault(needle.key, []).append(needle)
        else:
            self._unindexed.append(needle)

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for needle in self.needles:
            counts[needle.kind] = counts.get(needle.kind, 0) + 1
        return counts

    def _add(self, kind: str, regex: str, key_text: str, case_sensitive: bool) -> None:
        flags = 0 if case_sensitive else re.IGNORECASE
        self._keep(Needle(kind, re.compile(regex, flags), _key(key_text)))

    def add_spaced(self, kind: str, value: str) -> None:
        """``value`` with any separators, or none, between its characters (``MEM987654`` as
        ``mem-987 654``), case-insensitive, whole word. Its matches share no word, so it is
        tried on every text."""
        if value:
            regex = _word(_ANY_SEPARATOR.join(re.escape(char) for char in value))
            self._keep(Needle(kind, re.compile(regex, re.IGNORECASE), ""))

    def add_literal(self, kind: str, value: str, case_sensitive: bool = True) -> None:
        """``value`` as a whole word (no letter or digit glued to either end), plus its
        JSON-escaped and URL-encoded forms when they differ."""
        if not value:
            return
        forms = {value, json.dumps(value)[1:-1], quote(value, safe="")}
        for form in forms:
            self._add(kind, _word(re.escape(form)), form, case_sensitive)

    def add_words(self, kind: str, words: list[str]) -> None:
        """A sequence of words with any name-like separator between them, case-insensitive."""
        words = [w for w in words if w]
        if not words:
            return
        for form in {tuple(words), tuple(json.dumps(w)[1:-1] for w in words)}:
            regex = _word(_NAME_SEPARATOR.join(re.escape(w) for w in form))
            self._add(kind, regex, max(form, key=len), case_sensitive=False)

    def add_date(self, kind: str, day: date) -> None:
        forms = (
            day.isoformat(),
            f"{day.month:02d}/{day.day:02d}/{day.year}",
            f"{day.month}/{day.day}/{day.year}",
        )
        for form in dict.fromkeys(forms):
            self._add(kind, _word(re.escape(form)), str(day.year), case_sensitive=True)

    def scan(self, haystacks: Iterable[tuple[str, str]]) -> list[Hit]:
        """Every (location, kind) where a needle occurs, each pair once, in scan order.

        Every needle matches as whole words (no letter or digit glued to either end), so each
        of its words is a word of any text it occurs in: a set lookup of the needle's longest
        word rules out almost every needle before any regular expression runs."""
        hits: dict[Hit, None] = {}
        for location, text in haystacks:
            if not text:
                continue
            # Raw binary files (SQLite pages holding zlib-compressed snapshots) contain every
            # short word by chance: there, needles of fewer than MIN_BINARY_KEY characters are
            # not tried. What Dagster stores is read decompressed through its API as well
            # (instance_haystacks), where every needle is tried.
            binary = "\x00" in text
            tokens = {token.casefold() for token in _TOKEN.findall(text)}
            for token in tokens & self._index.keys():
                if binary and len(token) < MIN_BINARY_KEY:
                    continue
                for needle in self._index[token]:
                    if needle.pattern.search(text):
                        hits[Hit(location, needle.kind)] = None
            for needle in self._unindexed:
                if needle.pattern.search(text):
                    hits[Hit(location, needle.kind)] = None
        return list(hits)


def _name_parts_that_may_appear(conn: sa.Connection) -> set[str]:
    """Words that legitimately occur in what the pipeline shows: providers', payers',
    facilities', cities' and streets' words (see the module docstring)."""
    t = reference
    words: set[str] = set(COMMON_WORDS)
    queries = [
        sa.select(t.providers.c.first_name, t.providers.c.last_name),
        sa.select(t.payers.c.name),
        sa.select(t.facilities.c.name, t.facilities.c.street, t.facilities.c.city),
        sa.select(t.patients.c.city, t.patients.c.street),
    ]
    for query in queries:
        for row in conn.execute(query):
            for value in row:
                words.update(_TOKEN.findall(value or ""))
    return words


def needles_from_ehr(
    ehr_url: str,
    secrets: Iterable[str] = (),
    allowed_dates: Iterable[date] = (),
) -> Needles:
    """The needles of every patient and coverage in the EHR at ``ehr_url`` plus ``secrets``."""
    needles = Needles()
    allowed = set(allowed_dates)
    engine = sa.create_engine(ehr_url)
    try:
        with engine.connect() as conn:
            may_appear = _name_parts_that_may_appear(conn)
            p = reference.patients.c
            for first, last, born, street in conn.execute(
                sa.select(p.first_name, p.last_name, p.date_of_birth, p.street)
            ):
                needles.add_words("patient name", [first, last])
                needles.add_words("patient name", [last, first])
                for part in (first, last):
                    if part and len(part) >= 3 and part not in may_appear:
                        needles.add_literal("patient name part", part)
                if born and born not in allowed:
                    needles.add_date("date of birth", born)
                if street:
                    needles.add_words("street address", street.split())
            c = reference.coverages.c
            for (member_id,) in conn.execute(sa.select(c.member_id)):
                if member_id:
                    needles.add_literal("member id", member_id, case_sensitive=False)
    finally:
        engine.dispose()
    for secret in secrets:
        needles.add_literal("secret", secret)
    return needles


def echo_needles(ehr_url: str, patient_ids: Iterable[int]) -> Needles:
    """Needles for the spellings of these patients' data that an API quoting them in its
    refusals uses and :func:`needles_from_ehr` does not cover (see the module docstring)."""
    needles = Needles()
    engine = sa.create_engine(ehr_url)
    p, c = reference.patients.c, reference.coverages.c
    try:
        with engine.connect() as conn:
            may_appear = _name_parts_that_may_appear(conn)
            ids = list(patient_ids)
            patients = conn.execute(
                sa.select(p.first_name, p.last_name, p.date_of_birth).where(p.id.in_(ids))
            ).all()
            member_ids = conn.execute(
                sa.select(c.member_id).where(c.patient_id.in_(ids), c.member_id.is_not(None))
            ).scalars()
            for member_id in member_ids:
                needles.add_spaced("echoed member id", member_id)
                digits = "".join(char for char in member_id if char.isdigit())
                if len(digits) >= 5:
                    needles.add_spaced("echoed member id", digits)
    finally:
        engine.dispose()
    for first, last, born in patients:
        name = f"{first or ''} {last or ''}"
        parts = {part for split in _NAME_PARTS for part in split.split(name)}
        for part in parts:
            if len(part) >= 2 and part not in may_appear and part not in COMMON_WORDS:
                needles.add_literal("echoed name part", part, case_sensitive=False)
        if born:
            needles.add_spaced("echoed date of birth", f"{born:%Y%m%d}")
            needles.add_spaced("echoed date of birth", f"{born:%m%d%Y}")
    return needles


def file_haystacks(root: Path, skip: Iterable[Path] = ()) -> Iterator[tuple[str, str]]:
    """Every file under ``root`` (SQLite databases and their WAL too) as text, except the
    directories in ``skip`` (where PHI at rest legitimately lives)."""
    skipped = [s.resolve() for s in skip]
    for directory, subdirectories, files in os.walk(root):
        here = Path(directory).resolve()
        subdirectories[:] = [d for d in subdirectories if (here / d) not in skipped]
        for name in files:
            path = here / name
            yield (
                f"file {path.relative_to(root.resolve())}",
                path.read_bytes().decode("utf-8", "replace"),
            )


def instance_haystacks(instance: Any) -> Iterator[tuple[str, str]]:
    """Everything the Dagster instance shows a person, read through its API: every run's
    record (config, tags), job snapshot, every event of its event log (messages, errors,
    metadata), and the metadata of every asset materialization and check evaluation."""
    import dagster as dg
    from dagster._serdes import serialize_value

    for run in instance.get_runs():
        where = f"run {run.run_id[:8]} ({run.job_name})"
        yield f"{where} config", json.dumps(run.run_config, default=str, ensure_ascii=False)
        yield f"{where} tags", json.dumps(run.tags, ensure_ascii=False)
        yield f"{where} record", serialize_value(run)
        if run.job_snapshot_id:
            snapshot = instance.get_job_snapshot(run.job_snapshot_id)
            yield f"{where} job snapshot", serialize_value(snapshot)
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            kind = event.event_type_value if event else "log message"
            yield f"{where} event {kind}", serialize_value(entry)
            yield f"{where} event {kind} message", entry.user_message or ""
            error = getattr(getattr(event, "event_specific_data", None), "error", None)
            if error is not None:
                yield f"{where} event {kind} exception", error.to_string()
    for key in instance.get_asset_keys():
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=10_000
        ).records
        for record in records:
            materialization = record.event_log_entry.asset_materialization
            yield (
                f"materialization of {key.to_user_string()} {materialization.partition or ''}",
                serialize_value(materialization),
            )


class CapturedOutput(logging.Handler):
    """Python log records at every level (httpx and httpcore at DEBUG included), and whatever
    was written to sys.stdout/sys.stderr (unless ``redirect`` is false: then a run's output
    reaches Dagster's compute logs), while the ``with`` block runs."""

    # Loggers turned up to DEBUG. Not sqlalchemy: its DEBUG level *is* "echo every result row",
    # an operator's explicit choice that docs/phi.md warns against on a PHI database.
    VERBOSE = ("httpx", "httpcore", "claims_pipeline", "dagster", "stamina", "uvicorn")

    def __init__(self, redirect: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.redirect = redirect
        self.records: list[str] = []
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self._stack = contextlib.ExitStack()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))

    def __enter__(self) -> CapturedOutput:
        root = logging.getLogger()
        root.addHandler(self)
        self._stack.callback(root.removeHandler, self)
        for name in self.VERBOSE:
            logger = logging.getLogger(name)
            self._stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.DEBUG)
        if self.redirect:
            self._stack.enter_context(contextlib.redirect_stdout(self.stdout))
            self._stack.enter_context(contextlib.redirect_stderr(self.stderr))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def haystacks(self, label: str) -> Iterator[tuple[str, str]]:
        yield f"{label}: python logging", "\n".join(self.records)
        yield f"{label}: stdout", self.stdout.getvalue()
        yield f"{label}: stderr", self.stderr.getvalue()


def parquet_haystacks(directory: Path) -> Iterator[tuple[str, str]]:
    """Every Parquet file under ``directory`` as text, one row a line (Parquet compresses its
    pages, so the raw bytes would hide a value)."""
    import pyarrow.parquet as pq

    for path in sorted(directory.rglob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        text = "\n".join(json.dumps(row, default=str, ensure_ascii=False) for row in rows)
        yield f"stored file {directory.name}/{path.relative_to(directory)}", text
