"""The leak scan: run the demo data end to end, failures included, then search everything a
person can see for every patient's name, date of birth, member id and street address and for
every secret used. Zero hits. See ``leak_scan.py`` for how the needles are chosen.

Scenarios (one Dagster instance with real SQLite storage in a temporary DAGSTER_HOME):
a ranged run with planted validation defects and two claims the API refuses (422) while quoting
their patients in several spellings (the emulator's ``echo_phi`` fault; the two patients are
renamed first to carry an apostrophe, a hyphen, an accent and a two-letter part), a dry run,
a run with a wrong API key, a source missing a table, a source URL with a password that does
not connect, one whose URL is malformed; then the CLI: ``claims-pipeline demo`` (and
``check-source`` when present) in a subprocess with its own DAGSTER_HOME.

Searched: run records (config, tags), job snapshots, every event (messages, exceptions,
metadata), materializations, the raw files of DAGSTER_HOME (SQLite run/event storage and
compute logs, WAL included), the emulator's log, python logging at DEBUG (httpx, httpcore),
stdout/stderr of the runs, and the CLI's stdout/stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from claims_pipeline import settings
from claims_pipeline.delivery.client import batch_body
from claims_pipeline.demo.seed import SeedSummary, seed_demo
from claims_pipeline.emulator import EmulatorConfig, running_emulator
from claims_pipeline.errors import ClaimsPipelineError
from claims_pipeline.phi import REDACTED
from claims_pipeline.sources import reference
from claims_pipeline_tests.leak_scan import (
    CapturedOutput,
    Hit,
    Needles,
    echo_needles,
    file_haystacks,
    instance_haystacks,
    needles_from_ehr,
    parquet_haystacks,
)

API_KEY = "leak-scan-key-7f3a9c2e51d4"
WRONG_API_KEY = "wrong-key-c81b47e09a3f"
DB_PASSWORD = "Ehr-pw-5d2e9b7a1c"  # noqa: S105 - a made-up password the scan must not find
TENANT_ID = 77
PROJECT_ROOT = Path(__file__).resolve().parents[1]
YESTERDAY = date.today() - timedelta(days=1)
SEED_DAYS = 3

_ENV_PREFIXES = ("CLAIMS_", "EHR_", "DAGSTER_")

# Every scenario through the CLI, Dagster and the emulator, then a scan: ~30 s.
pytestmark = pytest.mark.slow


@dataclass
class Scanned:
    """What the scenarios produced: the needles, the haystacks, and facts that prove the
    scenarios did what they claim (so a clean scan is not clean because nothing ran)."""

    needles: Needles
    haystacks: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def _instance(home: Path, env: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """A persistent instance in ``home`` with the project's dagster.yaml: SQLite run and event
    storage and compute logs are real files there (storage follows $DAGSTER_HOME)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def _materialize(instance: dg.DagsterInstance, first: date, last: date, **import_config: Any):
    from claims_pipeline.definitions import defs
    from claims_pipeline.defs.claims_sync.schedules import range_tags
    from claims_pipeline.defs.resources import build_resources

    assets = [defs().get_assets_def(key) for key in ("ehr_encounters", "claims", "claims_import")]
    run_config = {"ops": {"claims_import": {"config": import_config}}} if import_config else None
    return dg.materialize(
        list(dict.fromkeys(assets)),
        resources=build_resources(),
        instance=instance,
        tags=range_tags(first, last),
        run_config=run_config,
        raise_on_error=False,
    )


# The patients of the claims the API refuses, renamed so that its echo of them has what
# scrubbing finds hardest: an apostrophe, a hyphen, an accent, a two-letter part.
ECHOED_PATIENTS = (
    ("Mary", "O'Brien-Smith", date(1980, 3, 7), "MEM98765432"),
    ("Zoë", "D'Arcy-Ng", date(1975, 11, 23), "QX55123987"),
)


def _refusable_claims(
    ehr_url: str, day: date, count: int, exclude: set[str]
) -> list[tuple[str, int]]:
    """(claim key, patient id) of ``count`` billable encounters of ``day`` without a planted
    defect, of distinct patients."""
    e = reference.encounters.c
    engine = sa.create_engine(ehr_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(e.id, e.patient_id)
                .where(e.status == reference.BILLABLE_STATUS, e.service_date == day)
                .order_by(e.id)
            ).all()
    finally:
        engine.dispose()
    chosen: dict[int, str] = {}
    for encounter_id, patient_id in rows:
        if str(encounter_id) not in exclude and patient_id not in chosen:
            chosen[patient_id] = f"{reference.CLAIM_ID_PREFIX}{encounter_id}"
    return [(key, patient_id) for patient_id, key in list(chosen.items())[:count]]


def _rename_patients(ehr_url: str, patient_ids: list[int]) -> None:
    """Give these patients the names, dates of birth and member ids of ECHOED_PATIENTS (a
    coverage without a member id, a planted defect, stays without)."""
    p, c = reference.patients, reference.coverages
    engine = sa.create_engine(ehr_url)
    try:
        with engine.begin() as conn:
            for patient_id, (first, last, born, member_id) in zip(
                patient_ids, ECHOED_PATIENTS, strict=True
            ):
                conn.execute(
                    sa.update(p)
                    .where(p.c.id == patient_id)
                    .values(first_name=first, last_name=last, date_of_birth=born)
                )
                conn.execute(
                    sa.update(c)
                    .where(c.c.patient_id == patient_id, c.c.member_id.is_not(None))
                    .values(member_id=member_id)
                )
    finally:
        engine.dispose()


def _post_directly(url: str, data_dir: Path, day: date, keys: list[str]) -> httpx.Response:
    """The stored claims ``keys`` of ``day``, posted as the pipeline posts them."""
    table = pq.read_table(data_dir / "claims" / f"{day.isoformat()}.parquet")
    payloads = [
        row["payload"] for row in table.to_pylist() if row["claim_submitter_identifier"] in keys
    ]
    return httpx.post(
        f"{url}/claims-import",
        params={"tenant_id": TENANT_ID},
        content=batch_body(payloads),
        headers={"x-api-key": API_KEY, "content-type": "application/json"},
        timeout=30,
    )


def _refusal_reasons(data_dir: Path, day: date) -> list[str | None]:
    rows = pq.read_table(data_dir / "claims_import" / f"{day.isoformat()}.parquet").to_pylist()
    return [row["reason"] for row in rows if row["outcome"] == "rejected"]


def _patients_as_text(ehr_url: str) -> str:
    engine = sa.create_engine(ehr_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(reference.patients)).all()
    engine.dispose()
    return "\n".join(", ".join(str(value) for value in row) for row in rows)


def _missing_table_ehr(path: Path) -> str:
    """A database with the reference schema minus ``coverages``."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    tables = [t for t in reference.metadata.sorted_tables if t.name != "coverages"]
    reference.metadata.create_all(engine, tables=tables)
    engine.dispose()
    return url


def _error_texts(result: Any) -> Iterator[tuple[str, str]]:
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            yield f"exception of {event.event_type_value}", error.to_string()


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter running our own CLI
        [sys.executable, "-m", "claims_pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _phi_dirs(data_dir: Path) -> list[Path]:
    """The directories of CLAIMS_DATA_DIR that hold PHI by design (README's table)."""
    return [data_dir / name for name in ("ehr_encounters", "claims", "claims_import_dry_run")]


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` ("." ) and of everything under it, by relative path."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
        for path in [root, *root.rglob("*")]
    }


def _clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    return env | extra


def _cli_commands() -> set[str]:
    from claims_pipeline.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a.choices, dict))
    return set(commands.choices)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    root = tmp_path_factory.mktemp("leak_scan")
    ehr_url = f"sqlite:///{root / 'ehr.sqlite'}"
    seeded: SeedSummary = seed_demo(ehr_url, days=SEED_DAYS, encounters_per_day=40)
    first, last = seeded.first_service_date, seeded.last_service_date
    refusable = _refusable_claims(ehr_url, first, len(ECHOED_PATIENTS), set(seeded.defects))
    refused = [key for key, _ in refusable]
    echoed_patients = [patient_id for _, patient_id in refusable]
    _rename_patients(ehr_url, echoed_patients)
    source_errors = {
        "missing_table": _missing_table_ehr(root / "missing_table.sqlite"),
        # nothing listens on port 9: the connection is refused, the URL holds a password
        "password_url": f"postgresql+psycopg://claims_reader:{DB_PASSWORD}@127.0.0.1:9/ehr",
        "malformed_url": f"mysql+pymysql://claims_reader:{DB_PASSWORD}@ehr-host:port/ehr",
    }
    home = root / "dagster_home"
    data_dir = root / "claims_data"  # PHI at rest lives here: not scanned
    config = EmulatorConfig(db_path=root / "emulator.sqlite", api_key=API_KEY, tenant_id=TENANT_ID)
    out = Scanned(needles=Needles())
    with pytest.MonkeyPatch.context() as env, running_emulator(config) as emulator:
        for name in list(os.environ):
            if name.startswith(_ENV_PREFIXES):
                env.delenv(name)
        env.setenv("EHR_DATABASE_URL", ehr_url)
        env.setenv("CLAIMS_API_URL", emulator.url)
        env.setenv("CLAIMS_API_KEY", API_KEY)
        env.setenv("CLAIMS_TENANT_ID", str(TENANT_ID))
        env.setenv("CLAIMS_DATA_DIR", str(data_dir))
        with _instance(home, env) as instance:
            with CapturedOutput() as captured:
                emulator.set_faults(reject_claims=refused, echo_phi=True)
                out.results["normal"] = _materialize(instance, first, last)
                echo = _post_directly(emulator.url, data_dir, first, refused)  # the control
                emulator.set_faults()
                out.results["dry_run"] = _materialize(
                    instance, last, last, dry_run=True, force_resend=True
                )
                env.setenv("CLAIMS_API_KEY", WRONG_API_KEY)
                out.results["wrong_key"] = _materialize(instance, first, first, force_resend=True)
                env.setenv("CLAIMS_API_KEY", API_KEY)
                for name, url in source_errors.items():
                    env.setenv("EHR_DATABASE_URL", url)
                    out.results[name] = _materialize(instance, first, first)
            out.haystacks += list(captured.haystacks("in-process runs"))
            for name, result in out.results.items():
                out.haystacks += [(f"{name} run: {w}", t) for w, t in _error_texts(result)]
            out.haystacks += list(instance_haystacks(instance))
            out.facts["rejected_by_api"] = _latest_metadata(instance, "claims_import", first)
            out.facts["rejected_by_validation"] = sum(
                _latest_metadata(instance, "claim_rejections", first + timedelta(days=n))[
                    "rejected"
                ]
                for n in range((last - first).days + 1)
            )
        out.haystacks.append(("emulator log", emulator.log_path.read_text(errors="replace")))
        out.facts["data_modes"] = _modes(data_dir)
        out.facts["refusal_reasons"] = _refusal_reasons(data_dir, first)
        # The stored files README calls free of PHI, kept by purge: they are searched too.
        for asset in ("claims_import", "claim_rejections"):
            out.haystacks += list(parquet_haystacks(data_dir / asset))
        out.haystacks += list(file_haystacks(data_dir, skip=_phi_dirs(data_dir)))
        out.facts["emulator"] = emulator.stats()
        out.haystacks += list(file_haystacks(home))
        out.facts["home_files"] = sum(1 for p in home.rglob("*") if p.is_file())

        # The CLI as a person runs it: own cwd and DAGSTER_HOME, nothing else configured.
        cli_dir = root / "cli"
        cli_dir.mkdir()
        demo_home = cli_dir / ".dagster_home"
        demo = _cli(
            ["demo", "--days", "2", "--encounters-per-day", "20"],
            cli_dir,
            _clean_environment(DAGSTER_HOME=str(demo_home)),
        )
        out.facts["demo"] = demo
        out.facts["demo_modes"] = _modes(demo_home)
        out.haystacks += [("`claims-pipeline demo` stdout", demo.stdout)]
        out.haystacks += [("`claims-pipeline demo` stderr", demo.stderr)]
        out.haystacks += list(file_haystacks(demo_home, skip=[demo_home / "claims_data"]))
        env.setenv("DAGSTER_HOME", str(demo_home))
        with dg.DagsterInstance.get() as demo_instance:
            out.haystacks += [(f"demo: {w}", t) for w, t in instance_haystacks(demo_instance)]
        if "check-source" in _cli_commands():
            for name, url in {"seeded": ehr_url, **source_errors}.items():
                check = _cli(["check-source"], cli_dir, _clean_environment(EHR_DATABASE_URL=url))
                out.facts[f"check-source {name}"] = check
                out.haystacks += [(f"`check-source` ({name}) stdout", check.stdout)]
                out.haystacks += [(f"`check-source` ({name}) stderr", check.stderr)]

    demo_ehr = f"sqlite:///{demo_home / 'claims_data' / 'demo_ehr.sqlite'}"
    allowed_dates = {date.fromisoformat(settings.CLAIMS_PARTITIONS_START.default or "2025-01-01")}
    out.needles = needles_from_ehr(
        ehr_url, secrets=[API_KEY, WRONG_API_KEY, DB_PASSWORD], allowed_dates=allowed_dates
    )
    out.needles.extend(needles_from_ehr(demo_ehr, allowed_dates=allowed_dates))
    echoes = echo_needles(ehr_url, echoed_patients)
    out.needles.extend(echoes)
    out.facts["echo_needles"] = echoes
    out.facts["echo_status"] = echo.status_code
    out.facts["echo_control"] = out.needles.scan([("422 body", echo.text)])
    out.facts["seeded"] = seeded
    out.facts["refused"] = refused
    # The control: the emulator's database holds the claims as posted, so the same scan over
    # it must find every kind of needle, in the shapes the pipeline really handles.
    out.facts["control"] = out.needles.scan(
        [
            ("emulator", (root / "emulator.sqlite").read_bytes().decode("utf-8", "replace")),
            ("ehr", _patients_as_text(ehr_url)),
        ]
    )
    yield out


def _latest_metadata(instance: dg.DagsterInstance, asset: str, day: date) -> dict[str, Any]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]),
        limit=1,
    ).records
    metadata = records[0].event_log_entry.asset_materialization.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def _report(hits: list[Hit]) -> str:
    return f"{len(hits)} leak(s):\n" + "\n".join(f"  {hit}" for hit in hits)


def test_nothing_a_person_can_see_holds_phi_or_a_secret(scanned: Scanned) -> None:
    hits = scanned.needles.scan(scanned.haystacks)
    assert not hits, _report(hits)


def test_the_scenarios_ran_as_described(scanned: Scanned) -> None:
    """A clean scan means something only if the failures really happened."""
    results = scanned.results
    assert results["normal"].success
    metadata = scanned.facts["rejected_by_api"]
    assert metadata["rejected_by_api"] == len(scanned.facts["refused"]) == 2
    assert scanned.facts["seeded"].defects, "the seed planted no defect to reject"
    assert scanned.facts["rejected_by_validation"] >= len(scanned.facts["seeded"].defects)
    assert results["dry_run"].success
    for name in ("wrong_key", "missing_table", "password_url", "malformed_url"):
        assert not results[name].success, name
    failures = {
        name: " ".join(text for _, text in _error_texts(results[name]))
        for name in ("wrong_key", "missing_table", "password_url", "malformed_url")
    }
    assert "CLAIMS_API_KEY" in failures["wrong_key"]
    assert "coverages" in failures["missing_table"]
    assert "EHR_DATABASE_URL" in failures["malformed_url"]
    assert scanned.facts["emulator"]["requests_by_status"].get("401", 0) >= 1
    demo = scanned.facts["demo"]
    assert demo.returncode == 0, demo.stderr[-2000:]
    kinds = scanned.needles.kinds()
    for kind in ("patient name", "patient name part", "date of birth", "member id"):
        assert kinds.get(kind, 0) > 50, kind
    assert kinds["street address"] > 50
    assert kinds["secret"] >= 3
    assert sum(len(text) for _, text in scanned.haystacks) > 1_000_000
    assert scanned.facts["home_files"] > 10
    locations = [location for location, _ in scanned.haystacks]
    kept = ("stored file claims_import/", "stored file claim_rejections/", "file ledger.sqlite")
    for stored in kept:
        assert any(location.startswith(stored) for location in locations), stored


def test_the_needles_find_the_data_where_it_legitimately_is(scanned: Scanned) -> None:
    """The control: the emulator's SQLite database holds the posted claims (names, dates of
    birth, member ids as the pipeline shapes them); the EHR's patients, printed, hold all."""
    found = {(hit.location, hit.kind) for hit in scanned.facts["control"]}
    for kind in ("patient name", "patient name part", "date of birth", "member id"):
        assert ("emulator", kind) in found
    for kind in ("patient name", "patient name part", "date of birth", "street address"):
        assert ("ehr", kind) in found


def test_what_the_api_echoes_of_patients_in_its_refusals_is_kept_nowhere(
    scanned: Scanned,
) -> None:
    """The API quoted the patients of the claims it refused, in several spellings; the
    pipeline kept each refusal's reason, scrubbed, and nothing a person can see (logs, event
    log, metadata, exceptions, the delivery results file, the ledger) holds any spelling."""
    assert scanned.facts["echo_status"] == 422
    echoed = {hit.kind for hit in scanned.facts["echo_control"]}
    assert echoed >= {"patient name", "date of birth", "member id"}
    assert echoed >= {"echoed name part", "echoed member id", "echoed date of birth"}
    assert scanned.facts["echo_needles"].kinds()["echoed name part"] >= 5  # Brien, Ng, ...

    hits = scanned.facts["echo_needles"].scan(scanned.haystacks)
    assert not hits, _report(hits)
    reasons = scanned.facts["refusal_reasons"]
    assert len(reasons) == len(ECHOED_PATIENTS)
    for reason in reasons:  # each echoed part reached the reason kept, redacted
        assert reason and reason.startswith('{"detail": "patient \\"[redacted]\\" ('), reason
        assert f"member {REDACTED} ({REDACTED}, " in reason
        assert f"born {REDACTED} ({REDACTED}, {REDACTED}" in reason


# -- the scan can fail ----------------------------------------------------------------------


def _a_patient(ehr_url: str) -> tuple[str, str, date, str]:
    p, c = reference.patients.c, reference.coverages.c
    engine = sa.create_engine(ehr_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(p.first_name, p.last_name, p.date_of_birth, c.member_id)
            .join(reference.coverages, c.patient_id == p.id)
            .where(c.member_id.is_not(None))
            .limit(1)
        ).one()
    engine.dispose()
    return row.first_name, row.last_name, row.date_of_birth, row.member_id


def test_the_scan_finds_planted_leaks(tmp_path: Path) -> None:
    ehr_url = f"sqlite:///{tmp_path / 'ehr.sqlite'}"
    seed_demo(ehr_url, days=1, encounters_per_day=10)
    first, last, born, member_id = _a_patient(ehr_url)

    @dg.asset
    def leaky(context):  # no annotation: this module postpones them, dagster checks it
        context.log.info(f"working on {first} {last}")
        print(f"born {born.month}/{born.day}/{born.year}")
        logging.getLogger("claims_pipeline.leaky").debug("member %s", member_id)
        return dg.MaterializeResult(metadata={"member": member_id})

    @dg.asset(deps=[leaky])
    def leaky_failure() -> None:
        raise ClaimsPipelineError(f"the API refused key {API_KEY}")

    home = tmp_path / "dagster_home"
    with (
        pytest.MonkeyPatch.context() as env,
        _instance(home, env) as instance,
        CapturedOutput(redirect=False) as captured,
    ):
        dg.materialize([leaky, leaky_failure], instance=instance, raise_on_error=False)
    haystacks = [*captured.haystacks("run"), *instance_haystacks(instance)]
    haystacks += list(file_haystacks(home))
    needles = needles_from_ehr(ehr_url, secrets=[API_KEY])
    hits = needles.scan(haystacks)

    found = {(hit.kind, hit.location.split(" ")[-1]) for hit in hits}
    kinds = {hit.kind for hit in hits}
    assert kinds >= {"patient name", "date of birth", "member id", "secret"}, _report(hits)
    where = " | ".join(hit.location for hit in hits)
    assert "event LOG_MESSAGE" in where or "log message" in where
    assert "materialization of leaky" in where
    assert "python logging" in where
    assert "compute_logs" in where
    assert "exception" in where
    assert found
    # The report names where and what kind, never the value itself.
    report = _report(hits)
    for value in (first, last, member_id, API_KEY, born.isoformat()):
        assert value not in report


def test_the_demo_keeps_its_phi_owner_only(scanned: Scanned) -> None:
    """Everything `claims-pipeline demo` created is the owner's alone: the data directory
    (EHR, emulator and ledger databases with their WAL files, Parquet) and Dagster's storage."""
    modes = scanned.facts["demo_modes"]
    for name in ("demo_ehr.sqlite", "emulator.sqlite", "ledger.sqlite"):
        assert modes[f"claims_data/{name}"] == 0o600
    assert modes["claims_data"] == 0o700
    assert modes["claims_data/claims"] == 0o700
    loose = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
    assert not loose


def test_the_pipeline_keeps_its_phi_owner_only_whatever_the_umask(scanned: Scanned) -> None:
    """The runs of the scan, in this process (umask as the test runner has it): Parquet files,
    the ledger and their directories are owner-only by themselves."""
    modes = {k: v for k, v in scanned.facts["data_modes"].items() if "dry_run" not in k}
    assert modes["."] == 0o700 and modes["ledger.sqlite"] == 0o600
    assert modes["claims/" + scanned.facts["seeded"].first_service_date.isoformat() + ".parquet"]
    loose = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
    assert not loose


def test_dry_run_payloads_are_owner_only(scanned: Scanned) -> None:
    modes = {k: v for k, v in scanned.facts["data_modes"].items() if "dry_run" in k}
    assert modes
    loose = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
    assert not loose


# -- a source value the driver cannot read ----------------------------------------------------


def test_a_malformed_source_value_is_not_quoted_in_the_rejection(tmp_path: Path) -> None:
    """An EHR whose date_of_birth column holds a US-format text date: SQLite's driver layer
    cannot read it, and its error would quote the value ("Invalid isoformat string:
    '04/12/1985'"), a date of birth. Each such encounter is rejected as unreadable_value,
    naming the source column, and the value appears nowhere a person can see."""
    ehr_url = f"sqlite:///{tmp_path / 'ehr.sqlite'}"
    seeded = seed_demo(ehr_url, days=1, encounters_per_day=10)
    needles = needles_from_ehr(ehr_url)
    engine = sa.create_engine(ehr_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE patients SET date_of_birth = strftime('%m/%d/%Y', date_of_birth) "
                "WHERE id IN (SELECT patient_id FROM encounters WHERE status = 'finalized')"
            )
        )
    engine.dispose()
    home = tmp_path / "dagster_home"
    data_dir = tmp_path / "claims_data"
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(_ENV_PREFIXES):
                env.delenv(name)
        env.setenv("EHR_DATABASE_URL", ehr_url)
        env.setenv("CLAIMS_DATA_DIR", str(data_dir))
        with _instance(home, env) as instance, CapturedOutput() as captured:
            from claims_pipeline.definitions import defs
            from claims_pipeline.defs.claims_sync.schedules import range_tags
            from claims_pipeline.defs.resources import build_resources

            resources = build_resources()
            result = dg.materialize(
                [defs().get_assets_def(key) for key in ("ehr_encounters", "claims")],
                resources={k: resources[k] for k in ("ehr", "claims_storage", "quality_gates")},
                instance=instance,
                tags=range_tags(seeded.first_service_date, seeded.last_service_date),
                raise_on_error=False,
            )
        haystacks = [*captured.haystacks("run"), *instance_haystacks(instance)]
        haystacks += list(_error_texts(result))
        haystacks += list(file_haystacks(home))
        rejections = list(parquet_haystacks(data_dir / "claim_rejections"))
        haystacks += rejections
    assert result.asset_materializations_for_node("validate_claims")
    (extracted,) = [
        m
        for m in result.asset_materializations_for_node("ehr_encounters")
        if "lines_with_unreadable_values" in m.metadata and "partitions" in m.metadata
    ]
    assert extracted.metadata["lines_with_unreadable_values"].value > 0
    assert "unreadable_value" in " ".join(text for _, text in rejections)
    assert "patients.date_of_birth" in " ".join(text for _, text in rejections)
    hits = needles.scan(haystacks)
    assert not hits, _report(hits)


# -- secrets: from the environment only, never shown -------------------------------------------


@pytest.fixture
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CLAIMS_API_KEY": API_KEY,
        "CLAIMS_TENANT_ID": str(TENANT_ID),
        "EHR_DATABASE_URL": f"postgresql+psycopg://claims_reader:{DB_PASSWORD}@ehr-host/ehr",
        "CLAIMS_LEDGER_URL": f"postgresql+psycopg://ledger:{DB_PASSWORD}@ledger-host/claims",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_secrets_reach_the_resources_only_as_environment_variables(
    secret_environment: dict[str, str],
) -> None:
    from claims_pipeline.defs.resources import build_resources

    resources = build_resources()
    for resource, field_name, variable in (
        ("claims_api", "api_key", "CLAIMS_API_KEY"),
        ("ehr", "url", "EHR_DATABASE_URL"),
        ("claims_storage", "ledger_url", "CLAIMS_LEDGER_URL"),
    ):
        value = getattr(resources[resource], field_name)
        assert isinstance(value, dg.EnvVar) and value.env_var_name == variable


def test_repr_of_every_resource_masks_the_key_and_passwords(
    secret_environment: dict[str, str],
) -> None:
    from claims_pipeline.defs.resources import ClaimsApi, ClaimsStorage, EhrDatabase

    resolved = [  # as a run holds them, with the values the EnvVars resolve to
        ClaimsApi(base_url="https://api.example.com", api_key=API_KEY, tenant_id=TENANT_ID),
        EhrDatabase(url=secret_environment["EHR_DATABASE_URL"]),
        ClaimsStorage(data_dir="/srv/claims", ledger_url=secret_environment["CLAIMS_LEDGER_URL"]),
    ]
    for resource in resolved:
        for text in (repr(resource), str(resource), f"{resource}", f"{resource!r}"):
            assert API_KEY not in text and DB_PASSWORD not in text, type(resource).__name__
    assert "api_key=***" in repr(resolved[0]).replace("'", "")
    assert "claims_reader:***@ehr-host" in repr(resolved[1])


def test_the_code_location_as_the_ui_shows_it_holds_no_secret(
    secret_environment: dict[str, str],
) -> None:
    """The repository snapshot is what the webserver shows (resources' configured values
    included): environment variables appear by name, never by value."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from claims_pipeline.definitions import defs

    definitions = defs()  # the code location, with resources built from this environment
    snapshot = serialize_value(RepositorySnap.from_def(definitions.get_repository_def()))
    assert "CLAIMS_API_KEY" in snapshot  # the resource is there, by variable name
    assert API_KEY not in snapshot and DB_PASSWORD not in snapshot
