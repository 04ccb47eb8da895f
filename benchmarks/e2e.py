"""End-to-end benchmark of claims_sync: extract -> validate -> post, through Dagster.

    python -m benchmarks.e2e --lines 1000000 --db sqlite
    python -m benchmarks.e2e --lines 100000 1000000 --db postgres --repeat 2
    python -m benchmarks.e2e --lines 1000000 --schema openemr
    python -m benchmarks.e2e --generator demo --days 365 --encounters-per-day 200 --no-floor

For each N it:

1. writes N billable charge lines into a fresh EHR database (:mod:`claims_pipeline.demo.bulk`; all
   on one date of service unless ``--days``, the worst case for memory), or, with
   ``--generator demo``, seeds the demo practice (``seed_demo``) for a backfill;
2. runs the real assets (``ehr_encounters``, ``claims`` + ``claim_rejections``,
   ``claims_import``) with ``dagster.materialize``, ``build_resources()`` and the in-process
   executor, in a fresh process (:mod:`benchmarks.pipeline_run`) against a fresh emulator in a
   process of its own, ``--repeat`` times; reports wall time (process start to run end,
   Dagster's import included), lines/s, claims/s, the peak RSS of the pipeline process
   (VmHWM; the emulator's is reported apart) and each step's time;
3. runs each stage alone, each in a fresh process (extract; claims; import against a fresh
   emulator);
4. measures the floor (:mod:`benchmarks.floor`): a raw-cursor read of the adapter's SELECT plus
   posting the already-serialised claims, 100 per request, 4 keep-alive connections, to a
   fresh emulator;
5. with ``--dlt-python``, times dlt's sql_database source (pyarrow backend) on the same
   database (:mod:`benchmarks.peer_dlt`).

``--profile`` samples every run (and the emulator) with py-spy.

The client-side request cap (CLAIMS_MAX_REQUESTS_PER_SECOND, default 10 req/s: a politeness
setting toward the real API) is lifted to 1000, the most the setting accepts (100,000 claims/s
in batches of 100): at 10 req/s, posting 330,000 claims would take 330 s by itself. The
rejection-rate gate is set to 1 (the generated data has about 2 % defects anyway).

``--targets`` runs issue 15's matrix (both databases, both schemas, one day and 30 days) and
prints each target met or missed; every end-to-end run prints a SHA-256 over every claim's wire
JSON (sorted by NPI and claim key) and the same over what the emulator stored, to compare with
a run of other code on the same data (``--workdir`` + ``--reuse-data``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from claims_pipeline.demo import bulk as datagen

API_KEY = "bench-key-5e0c7a1d93"
TENANT_ID = 4242
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/claims_bench"
ROOT = Path(__file__).resolve().parent.parent
LINE_TABLES = {"reference": "charges", "openemr": "billing"}

# --- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    try:
        from importlib.metadata import version

        dagster_version = version("dagster")
    except Exception:  # pragma: no cover - informational only
        dagster_version = "?"
    return {
        "code": code_state(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "dagster": dagster_version,
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
    }


def code_state() -> str:
    """The commit measured, plus a digest of uncommitted changes to claims_pipeline/."""
    import hashlib

    def git(*args: str) -> str:
        completed = subprocess.run(  # noqa: S603 - git, fixed arguments
            ["git", *args],  # noqa: S607 - whichever git is on PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return completed.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=all", "claims_pipeline")
    if not dirty:
        return head
    digest = hashlib.sha256()
    for line in sorted(dirty.splitlines()):
        path = ROOT / line[3:]
        digest.update(line.encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return f"{head}+dirty:{digest.hexdigest()[:10]}"


# --- helpers -------------------------------------------------------------------------------


def wire_digest(claims_dir: Path) -> dict[str, Any]:
    """SHA-256 over every stored claim's wire JSON (the ``payload`` column: the bytes posted),
    one ``provider_npi TAB claim_submitter_identifier TAB payload LF`` per claim, sorted by
    (provider_npi, claim_submitter_identifier): independent of partition, file and row order,
    so a run before and after a change prove the same claims went out byte for byte."""
    import hashlib

    import pyarrow.parquet as pq

    rows: list[tuple[str, str, str]] = []
    for path in sorted(claims_dir.glob("*.parquet")):
        table = pq.read_table(
            path, columns=["provider_npi", "claim_submitter_identifier", "payload"]
        )
        rows.extend(zip(*(table.column(i).to_pylist() for i in range(3)), strict=True))
    rows.sort(key=lambda row: (row[0], row[1]))
    digest = hashlib.sha256()
    for npi, key, payload in rows:
        digest.update(f"{npi}\t{key}\t{payload}\n".encode())
    return {"claims": len(rows), "sha256": digest.hexdigest()}


def received_digest(emulator_db: Path) -> dict[str, Any]:
    """The same digest over what the emulator stored (its ``content`` column, as received and
    kept), so the wire is checked on the API's side too."""
    import hashlib
    import sqlite3

    connection = sqlite3.connect(emulator_db)
    try:
        cursor = connection.execute(
            "SELECT provider_npi, claim_submitter_identifier, content FROM claims "
            "ORDER BY provider_npi, claim_submitter_identifier"
        )
        digest = hashlib.sha256()
        count = 0
        for npi, key, content in cursor:
            digest.update(f"{npi}\t{key}\t{content}\n".encode())
            count += 1
    finally:
        connection.close()
    return {"claims": count, "sha256": digest.hexdigest()}


def _run_child(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        completed = subprocess.run(  # noqa: S603 - this interpreter, our own module
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False
        )
    if completed.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{' '.join(command[:4])} failed ({completed.returncode}):\n{tail}")


def _proc_figures(pid: int | None) -> dict[str, float]:
    """Peak RSS and CPU seconds of a live process (the emulator), from /proc."""
    if pid is None:
        return {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "peak_rss_mib": round(hwm / 1024, 1),
        "cpu_seconds": round((int(stat[11]) + int(stat[12])) / ticks, 2),
    }


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


class Bench:
    """One N: its database, its work directory, and the runs against it."""

    def __init__(self, args: argparse.Namespace, lines: int, workdir: Path):
        self.args = args
        self.lines = lines
        self.workdir = workdir
        self.schema = args.schema
        self.first: date
        self.last: date
        self.generated: dict[str, Any] = {}

    # -- data -----------------------------------------------------------------------------

    def database_url(self) -> str:
        tag = f"{self.schema}_{self.args.generator}_{self.lines}_{self.args.days}"
        if self.args.db == "sqlite":
            return f"sqlite:///{self.workdir / f'ehr-{tag}.sqlite'}"
        base = sa.make_url(self.args.pg_url)  # its database name is the prefix of ours
        return str(base.set(database=f"{base.database or 'claims_bench'}_{tag}"))

    def prepare_data(self) -> None:
        url = self.database_url()
        sidecar = self.workdir / f"generated-{Path(sa.make_url(url).database).stem}.json"
        if self.args.reuse_data and sidecar.exists():
            self.generated = json.loads(sidecar.read_text())
            self.first = date.fromisoformat(self.generated["first_day"])
            self.last = date.fromisoformat(self.generated["last_day"])
            print(f"  data: reusing {self.generated['url']}", flush=True)
            return
        if self.args.db == "sqlite":
            Path(sa.make_url(url).database).unlink(missing_ok=True)
        else:
            datagen.recreate_postgres_database(url)
        if self.args.generator == "demo":
            self.generated = self._seed_demo(url)
        else:
            generated = datagen.generate(
                url, self.lines, schema=self.schema, days=self.args.days, seed=self.args.seed
            )
            self.generated = {
                k: (v.isoformat() if isinstance(v, date) else v)
                for k, v in asdict(generated).items()
            }
        self.first = date.fromisoformat(self.generated["first_day"])
        self.last = date.fromisoformat(self.generated["last_day"])
        sidecar.write_text(json.dumps(self.generated, indent=2))
        print(
            f"  data: {self.generated['lines']:,} charge lines of "
            f"{self.generated['encounters']:,} billable encounters, "
            f"{self.first}..{self.last}, written in {self.generated['seconds']:.1f} s",
            flush=True,
        )

    def _seed_demo(self, url: str) -> dict[str, Any]:
        from claims_pipeline.demo.seed import seed_demo

        if self.schema != "reference":
            raise SystemExit("--generator demo writes the reference schema only")
        started = time.perf_counter()
        summary = seed_demo(
            url, days=self.args.days, encounters_per_day=self.args.encounters_per_day
        )
        return {
            "schema": "reference",
            "url": sa.make_url(url).render_as_string(hide_password=True),
            "lines": summary.billable_charge_lines,
            "encounters": summary.billable_encounters,
            "first_day": summary.first_service_date.isoformat(),
            "last_day": summary.last_service_date.isoformat(),
            "seconds": round(time.perf_counter() - started, 2),
        }

    # -- runs -----------------------------------------------------------------------------

    def environment(self, data_dir: Path, api_url: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CLAIMS_", "EHR_", "DAGSTER_", "PYTHONPATH"))
        }
        env.update(
            {
                "EHR_DATABASE_URL": self.database_url(),
                "EHR_SCHEMA": self.schema,
                "CLAIMS_API_URL": api_url,
                "CLAIMS_API_KEY": API_KEY,
                "CLAIMS_TENANT_ID": str(TENANT_ID),
                "CLAIMS_DATA_DIR": str(data_dir),
                "CLAIMS_MAX_REQUESTS_PER_SECOND": str(self.args.max_requests_per_second),
                "CLAIMS_MAX_REJECTION_RATE": "1",
                "CLAIMS_PARTITIONS_START": min(self.first, date(2025, 1, 1)).isoformat(),
                "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT),
            }
        )
        if self.args.build_processes is not None:
            env["CLAIMS_BUILD_PROCESSES"] = str(self.args.build_processes)
        return env

    def emulator(self, name: str):
        from claims_pipeline.emulator import EmulatorConfig, running_emulator

        db_path = self.workdir / f"emulator-{name}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        return running_emulator(
            EmulatorConfig(db_path=db_path, api_key=API_KEY, tenant_id=TENANT_ID)
        )

    def pipeline(self, stage: str, data_dir: Path, api_url: str, name: str) -> dict[str, Any]:
        out = self.workdir / f"{name}.json"
        command = [sys.executable, "-m", "benchmarks.pipeline_run", "--stage", stage]
        if self.args.profile:
            # Every non-idle thread of the process, 100 samples/s (the HTTP workers too).
            command = [
                _py_spy(), "record", "--format", "raw", "--rate", "100", "--nonblocking",
                "-o", str(self.workdir / f"{name}.pyspy.txt"), "--", *command,
            ]  # fmt: skip
        command += ["--first", self.first.isoformat(), "--last", self.last.isoformat()]
        command += ["--out", str(out)]
        _run_child(command, self.environment(data_dir, api_url), self.workdir / f"{name}.log")
        figures = json.loads(out.read_text())
        if not figures["success"]:
            raise SystemExit(f"{name}: the run failed:\n" + "\n".join(figures["failures"]))
        return figures

    def end_to_end(self, attempt: int) -> dict[str, Any]:
        data_dir = self.workdir / f"data-e2e-{attempt}"
        shutil.rmtree(data_dir, ignore_errors=True)
        with self.emulator(f"e2e-{attempt}") as emulator:
            spy = None
            if self.args.profile:
                spy = subprocess.Popen(  # noqa: S603 - py-spy of this venv
                    [_py_spy(), "record", "--format", "raw", "--rate", "100", "--nonblocking",
                     "--pid", str(emulator.pid),
                     "-o", str(self.workdir / f"e2e-{attempt}.emulator.pyspy.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            figures = self.pipeline("all", data_dir, emulator.url, f"e2e-{attempt}")
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            figures["emulator"] = _proc_figures(emulator.pid)
            figures["emulator"]["claims_stored"] = emulator.stats()["claims_stored"]
        figures["load_average_after"] = os.getloadavg()
        figures["wire_digest"] = wire_digest(data_dir / "claims")
        figures["received_digest"] = received_digest(
            self.workdir / f"emulator-e2e-{attempt}.sqlite"
        )
        return figures

    def stages(self) -> dict[str, Any]:
        data_dir = self.workdir / "data-stages"
        shutil.rmtree(data_dir, ignore_errors=True)
        figures = {}
        # Extract and claims never call the API; the URL only has to be valid.
        figures["extract"] = self.pipeline("extract", data_dir, "http://127.0.0.1:9", "stage-1")
        figures["claims"] = self.pipeline("claims", data_dir, "http://127.0.0.1:9", "stage-2")
        with self.emulator("stages") as emulator:
            figures["import"] = self.pipeline("import", data_dir, emulator.url, "stage-3")
            figures["import"]["emulator"] = _proc_figures(emulator.pid)
        return figures

    def floor(self, claims_dir: Path) -> dict[str, Any]:
        out = self.workdir / "floor.json"
        with self.emulator("floor") as emulator:
            command = [
                sys.executable, "-m", "benchmarks.floor",
                "--db-url", self.database_url(), "--schema", self.schema,
                "--first", self.first.isoformat(), "--last", self.last.isoformat(),
                "--claims-dir", str(claims_dir), "--api-url", emulator.url,
                "--api-key", API_KEY, "--tenant-id", str(TENANT_ID), "--out", str(out),
            ]  # fmt: skip
            _run_child(
                command, self.environment(self.workdir, emulator.url), out.with_suffix(".log")
            )
            figures = json.loads(out.read_text())
            figures["post"]["emulator"] = _proc_figures(emulator.pid)
        return figures

    def peer(self) -> dict[str, Any]:
        from benchmarks.floor import _statement

        engine = sa.create_engine(self.database_url(), poolclass=sa.NullPool)
        try:
            statement = _statement(self.schema, self.first, self.last)
            join_sql = str(
                statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            )
        finally:
            engine.dispose()
        sql_file = self.workdir / "join.sql"
        sql_file.write_text(join_sql)
        out = self.workdir / "dlt.json"
        url = self.database_url().replace("+psycopg", "+psycopg")
        command = [
            self.args.dlt_python, str(ROOT / "benchmarks" / "peer_dlt.py"),
            "--db-url", url, "--table", LINE_TABLES[self.schema],
            "--join-sql", str(sql_file), "--out", str(out),
        ]  # fmt: skip
        _run_child(command, {**os.environ, "PYTHONPATH": ""}, out.with_suffix(".log"))
        return json.loads(out.read_text())


# --- reporting -----------------------------------------------------------------------------


def _rate(count: float, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s" if seconds else "-"


def summarise(bench: Bench, results: dict[str, Any]) -> dict[str, Any]:
    lines = bench.generated["lines"]
    e2e = results["e2e"]
    best = min(e2e, key=lambda r: r["wall_seconds"])
    claims_meta = best["materializations"].get("claims", {})
    claims = claims_meta.get("claims") or claims_meta.get("dagster/row_count") or 0
    summary: dict[str, Any] = {
        "lines": lines,
        "encounters": bench.generated["encounters"],
        "claims": claims,
        "wall_seconds_best": best["wall_seconds"],
        "wall_seconds_all": [r["wall_seconds"] for r in e2e],
        "run_seconds_best": best["run_seconds"],
        "lines_per_second": round(lines / best["wall_seconds"]),
        "claims_per_second": round(claims / best["wall_seconds"]),
        "cpu_seconds_best_run": round(best["cpu_user_seconds"] + best["cpu_system_seconds"], 1),
        "children_cpu_seconds_best_run": best.get("children_cpu_seconds", 0.0),
        "children_peak_rss_mib_best_run": best.get("children_peak_rss_mib", 0.0),
        "peak_rss_mib_best_run": best["peak_rss_mib"],
        "peak_process_rss_mib_max": max(r["peak_rss_mib"] for r in e2e),
        # what the targets judge: the pipeline process and its workers, summed
        "peak_rss_mib_max": max(_tree_peak(r) for r in e2e),
        "steps": best["steps"],
        "emulator": best["emulator"],
    }
    floor = results.get("floor")
    if floor:
        read = floor["read"]["join_query_seconds"]
        post = floor["post"]["post_seconds"]
        summary["floor_seconds"] = round(read + post, 3)
        summary["e2e_over_floor"] = round(best["wall_seconds"] / (read + post), 2)
        summary["run_over_floor"] = round(best["run_seconds"] / (read + post), 2)
    return summary


def _tree_peak(run: dict[str, Any]) -> float:
    """Peak RSS of a run's pipeline process plus the processes it started (claims workers,
    the SQLite fingerprint process), summed at each sample; the process alone for figures
    from before the sum was recorded."""
    return max(run["peak_rss_mib"], run.get("peak_tree_rss_mib", 0.0))


def report(bench: Bench, results: dict[str, Any]) -> None:
    s = results["summary"]
    print(f"\n== {s['lines']:,} charge lines, {bench.args.db}, {bench.schema} schema, "
          f"{bench.first}..{bench.last} ==")  # fmt: skip
    print(
        f"end to end (claims_sync via dagster.materialize): best {s['wall_seconds_best']:.1f} s "
        f"of {len(s['wall_seconds_all'])} ({', '.join(f'{t:.1f}' for t in s['wall_seconds_all'])})"
        f" = {s['lines_per_second']:,} lines/s, {s['claims_per_second']:,} claims/s "
        f"({s['claims']:,} claims)"
    )
    print(
        f"  run alone (after Dagster import) {s['run_seconds_best']:.1f} s; pipeline process CPU "
        f"{s['cpu_seconds_best_run']:.1f} s; peak RSS pipeline "
        f"process {s['peak_rss_mib_best_run']:.0f} MiB, with its child processes "
        f"{s['peak_rss_mib_max']:.0f} (max over runs, summed); the children "
        f"{s.get('children_cpu_seconds_best_run', 0):.1f} CPU s;"
        f" emulator (apart) {s['emulator'].get('peak_rss_mib', 0):.0f} MiB, "
        f"{s['emulator'].get('cpu_seconds', 0):.1f} CPU s"
    )
    print(
        "  steps: "
        + ", ".join(
            f"{k} {v['seconds']:.1f} s ({v.get('cpu_seconds') or 0:.1f} CPU s"
            f" + {v.get('children_cpu_seconds') or 0:.1f} in child processes, peak "
            f"{v['peak_rss_mib']:.0f} MiB, {v.get('peak_tree_rss_mib') or 0:.0f} with children)"
            for k, v in s["steps"].items()
        )
    )
    stages = results.get("stages")
    if stages:
        print("stages alone (each a fresh process; step time, process wall, peak RSS):")
        for name, figures in stages.items():
            step = next(iter(figures["steps"].values()))
            print(
                f"  {name:8s} {step['seconds']:7.1f} s  ({step.get('cpu_seconds') or 0:.1f} CPU s;"
                f" process {figures['wall_seconds']:.1f} s)"
                f"  {_rate(s['lines'], step['seconds'])} lines  peak {figures['peak_rss_mib']:.0f}"
                f" MiB ({_tree_peak(figures):.0f} with children)"
            )
    floor = results.get("floor")
    if floor:
        read, post = floor["read"], floor["post"]
        print(
            f"floor: raw-cursor read of the adapter's SELECT {read['join_query_seconds']:.2f} s "
            f"({read['join_query_rows']:,} rows incl. diagnosis rows) + posting "
            f"{post['claims']:,} serialised claims in {post['requests']:,} requests "
            f"{post['post_seconds']:.2f} s = {s['floor_seconds']:.2f} s; "
            f"end to end / floor = {s['e2e_over_floor']:.2f} (run alone / floor = "
            f"{s['run_over_floor']:.2f})"
        )
        print(
            f"  plain SELECT * FROM {read['table']}: {read['table_rows']:,} rows in "
            f"{read['table_seconds']:.2f} s ({_rate(read['table_rows'], read['table_seconds'])});"
            f" to Arrow {read['table_to_arrow_seconds']:.2f} s"
        )
    peer = results.get("dlt")
    if peer:
        if stages:
            ours, where = next(iter(stages["extract"]["steps"].values()))["seconds"], "alone"
        else:
            ours, where = s["steps"]["ehr_encounters"]["seconds"], "in the end-to-end run"
        print(
            f"peer: dlt {peer['dlt_version']} sql_database pyarrow, {peer['table']['table']}: "
            f"{peer['table']['rows']:,} rows in {peer['table']['seconds_best']:.2f} s "
            f"({peer['table']['rows_per_second']:,} rows/s)"
        )
        if "join" in peer:
            seconds = peer["join"]["seconds_best"]
            print(
                f"  dlt with our join query: {peer['join']['rows']:,} rows in {seconds:.2f} s = "
                f"{_rate(s['lines'], seconds)} charge lines"
            )
        if ours:
            print(f"  ours (ehr_encounters step {where}): {_rate(s['lines'], ours)} charge lines")


def run_size(args: argparse.Namespace, lines: int, workdir: Path) -> dict[str, Any]:
    """Everything measured for one N in one configuration (database, schema, days)."""
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, lines, workdir)
    label = f"{lines:,} lines" if args.generator == "bulk" else "seed_demo"
    print(f"\n-- {label}, {args.db}, {args.schema}, {args.days} day(s)", flush=True)
    bench.prepare_data()
    results: dict[str, Any] = {"generated": bench.generated, "e2e": []}
    for attempt in range(1, args.repeat + 1):
        results["e2e"].append(bench.end_to_end(attempt))
        run = results["e2e"][-1]
        print(
            f"  e2e run {attempt}: {run['wall_seconds']:.1f} s; wire digest "
            f"{run['wire_digest']['sha256'][:16]} over {run['wire_digest']['claims']:,} claims "
            f"(received by the API: {run['received_digest']['sha256'][:16]})",
            flush=True,
        )
    if args.stages:
        results["stages"] = bench.stages()
    if args.floor:
        results["floor"] = bench.floor(workdir / "data-e2e-1" / "claims")
    if args.dlt_python and (args.days == 1 or not args.targets):
        results["dlt"] = bench.peer()
    results["summary"] = summarise(bench, results)
    report(bench, results)
    if args.profile:
        from benchmarks.profile_report import render

        for profile in sorted(workdir.glob("*.pyspy.txt")):
            print("\n" + render(profile, top=15))
    for attempt in range(1, args.repeat + 1):  # keep the disk small between sizes
        shutil.rmtree(workdir / f"data-e2e-{attempt}", ignore_errors=True)
    shutil.rmtree(workdir / "data-stages", ignore_errors=True)
    for emulator_db in workdir.glob("emulator-*.sqlite*"):
        emulator_db.unlink()
    return results


# --- targets (issue 15) ----------------------------------------------------------------------

WALL_TARGET_SECONDS = 60.0
FLOOR_TARGET_RATIO = 2.0
RANGED_TARGET_RATIO = 1.10
PEAK_RSS_TARGET_MIB = 1024.0
RSS_GROWTH_TARGET = 1.3


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def targets(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's targets, each met or missed with its figure, for every configuration run.

    ``runs`` maps ``db/schema/dN/lines`` to a size's results."""
    rows: list[dict[str, Any]] = []

    def add(what: str, figure: str, ok: bool | None) -> None:
        rows.append({"target": what, "figure": figure, "verdict": _verdict(ok)})

    def at(db: str, schema: str, days: int, lines: int) -> dict[str, Any] | None:
        return runs.get(f"{db}/{schema}/d{days}/{lines}")

    keys = [key.split("/") for key in runs]
    largest = max(int(k[3]) for k in keys)
    smallest = min(int(k[3]) for k in keys)
    combos = sorted({(k[0], k[1]) for k in keys})
    for db, schema in combos:
        one = at(db, schema, 1, largest)
        ranged = [
            (int(k[2][1:]), runs["/".join(k)])
            for k in keys
            if (k[0], k[1], k[3]) == (db, schema, str(largest)) and k[2] != "d1"
        ]
        for days, result in ([(1, one)] if one else []) + ranged:
            s = result["summary"]
            where = f"{largest:,} lines, {db}, {schema}, {days} day(s)"
            add(f"wall <= {WALL_TARGET_SECONDS:.0f} s [{where}]", f"{s['wall_seconds_best']:.1f} s",
                s["wall_seconds_best"] <= WALL_TARGET_SECONDS)  # fmt: skip
            ratio = s.get("e2e_over_floor")
            add(f"<= {FLOOR_TARGET_RATIO}x floor [{where}]",
                f"{ratio:.2f}x of {s['floor_seconds']:.1f} s" if ratio else "-",
                None if ratio is None else ratio <= FLOOR_TARGET_RATIO)  # fmt: skip
            add(f"peak RSS <= 1 GiB [{where}]", f"{s['peak_rss_mib_max']:.0f} MiB",
                s["peak_rss_mib_max"] <= PEAK_RSS_TARGET_MIB)  # fmt: skip
            digest = result["e2e"][0]["wire_digest"]
            add(f"wire digest [{where}]", f"{digest['sha256'][:16]} ({digest['claims']:,} claims)",
                None)  # fmt: skip
            rows[-1]["verdict"] = "compare with the run before"
            rows[-1]["sha256"] = digest["sha256"]
            if "dlt" in result and "join" in result["dlt"]:
                ours = s["steps"]["ehr_encounters"]["seconds"]
                dlt = result["dlt"]["join"]["seconds_best"]
                lines = s["lines"]
                add(f"extract >= dlt pyarrow, same join [{where}]",
                    f"{lines / ours:,.0f} vs {lines / dlt:,.0f} lines/s ({dlt / ours:.2f}x)",
                    ours <= dlt)  # fmt: skip
        for days, result in ranged:
            if one is None:
                continue
            ratio = result["summary"]["wall_seconds_best"] / one["summary"]["wall_seconds_best"]
            add(f"{days}-day ranged run within 10 % of one day [{largest:,}, {db}, {schema}]",
                f"{result['summary']['wall_seconds_best']:.1f} s / "
                f"{one['summary']['wall_seconds_best']:.1f} s = {ratio:.2f}",
                ratio <= RANGED_TARGET_RATIO)  # fmt: skip
        small = at(db, schema, 1, smallest)
        if one is not None and small is not None and smallest != largest:
            growth = one["summary"]["peak_rss_mib_max"] / small["summary"]["peak_rss_mib_max"]
            add(f"RSS {largest:,} / {smallest:,} <= {RSS_GROWTH_TARGET} [{db}, {schema}]",
                f"{growth:.2f}", growth <= RSS_GROWTH_TARGET)  # fmt: skip
    return rows


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\n== targets (issue 15) ==")
    width = max(len(r["target"]) for r in rows)
    for row in rows:
        print(f"  {row['target']:<{width}}  {row['figure']:<36}  {row['verdict']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000])
    parser.add_argument("--db", choices=("sqlite", "postgres"), nargs="+", default=["sqlite"])
    parser.add_argument("--schema", choices=datagen.SCHEMAS, nargs="+", default=["reference"])
    parser.add_argument("--generator", choices=("bulk", "demo"), default="bulk")
    parser.add_argument(
        "--days", type=int, nargs="+", default=[1], help="dates of service to spread over"
    )
    parser.add_argument(
        "--targets",
        action="store_true",
        help="issue 15's matrix: --db sqlite postgres --schema reference openemr --days 1 30, "
        "no stages, the smaller N only for sqlite/reference/1 day (the RSS ratio)",
    )
    parser.add_argument("--encounters-per-day", type=int, default=200, help="--generator demo")
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs (best shown)")
    parser.add_argument("--no-stages", dest="stages", action="store_false")
    parser.add_argument("--no-floor", dest="floor", action="store_false")
    parser.add_argument("--dlt-python", help="a python with dlt installed: run the peer")
    parser.add_argument(
        "--profile", action="store_true", help="sample every run and the emulator with py-spy"
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--max-requests-per-second", type=float, default=1000)
    parser.add_argument(
        "--build-processes",
        type=int,
        help="CLAIMS_BUILD_PROCESSES for the runs (default: the setting's own, one per CPU)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="kept; default a temporary directory")
    parser.add_argument("--reuse-data", action="store_true", help="keep a database from before")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--from-json", type=Path, help="print the targets of a --json file written before"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        print_targets(targets(json.loads(args.from_json.read_text())["runs"]))
        return
    if args.targets:
        args.db, args.schema, args.days = ["sqlite", "postgres"], ["reference", "openemr"], [1, 30]
        args.stages = False

    temporary = None
    root = args.workdir
    if root is None:
        temporary = tempfile.TemporaryDirectory(prefix="claims-bench-")
        root = Path(temporary.name)
    root.mkdir(parents=True, exist_ok=True)
    everything: dict[str, Any] = {"machine": machine(), "args": vars(args), "runs": {}}
    print(f"machine: {everything['machine']}", flush=True)
    largest = max(args.lines)
    try:
        for db in args.db:
            for schema in args.schema:
                for days in args.days:
                    for lines in args.lines:
                        if (
                            args.targets
                            and lines != largest
                            and (db, schema, days) != ("sqlite", "reference", 1)
                        ):
                            continue
                        config = argparse.Namespace(
                            **{**vars(args), "db": db, "schema": schema, "days": days}
                        )
                        key = f"{db}/{schema}/d{days}/{lines}"
                        workdir = root / f"{db}-{schema}-d{days}" / f"n{lines}"
                        everything["runs"][key] = run_size(config, lines, workdir)
                        if args.json:  # what is done survives a run stopped later
                            args.json.write_text(json.dumps(everything, indent=2, default=str))
        if args.generator == "bulk":
            everything["targets"] = targets(everything["runs"])
            print_targets(everything["targets"])
    finally:
        everything["machine"]["load_average_end"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps(everything, indent=2, default=str))
        if temporary is not None:
            temporary.cleanup()


if __name__ == "__main__":
    main()
