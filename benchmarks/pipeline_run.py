"""One measured run of the real assets through Dagster, in a process of its own.

``python -m benchmarks.pipeline_run --stage all --first D --last D --out result.json``

The parent (:mod:`benchmarks.e2e`) sets the environment the code location reads
(EHR_DATABASE_URL, CLAIMS_API_URL/KEY/TENANT_ID, CLAIMS_DATA_DIR, ...). This process runs
``dagster.materialize`` over the real assets with ``build_resources()`` and the in-process
executor, on a throw-away on-disk instance, and writes: wall time (from process start, so it
includes importing Dagster), the run's own duration, each step's duration from the event log,
the peak RSS of this process (VmHWM) and of each step (sampled from /proc), and the
counts recorded in the materializations.

``--stage`` selects what runs: ``all`` (the claims_sync assets in one run, as the nightly job),
or one stage alone, reading what the previous stage stored under CLAIMS_DATA_DIR.
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

STAGES = {
    "all": ["ehr_encounters", "claims", "claim_rejections", "claims_import"],
    "extract": ["ehr_encounters"],
    "claims": ["claims", "claim_rejections"],
    "import": ["claims_import"],
}
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """High-water mark of this process's RSS since its exec (VmHWM). Not ``ru_maxrss``: Linux
    carries the parent's RSS into a child's ``ru_maxrss`` across fork+exec, so a child of a big
    parent would report the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def rss_kib() -> int:
    """Resident set size of this process now, in KiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


def descendants_rss_kib(pid: str = "self") -> int:
    """RSS of every process this one started and that still runs (the claims step's workers,
    the SQLite fingerprint process), and of theirs, in KiB."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                kids = children.read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/statm") as statm:
                    total += int(statm.read().split()[1]) * _PAGE_KIB
            except (OSError, IndexError):
                continue
            total += descendants_rss_kib(kid)
    return total


class RssSampler(threading.Thread):
    """Samples this process's RSS and CPU time every ``interval`` seconds, and the RSS of the
    processes it started: (epoch seconds, RSS KiB, CPU seconds of this process so far, RSS
    KiB of this process and its descendants)."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, float, int]] = []
        #: (epoch seconds, CPU seconds of the child processes waited for so far)
        self.children_cpu: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def _sample(self) -> None:
        own, now = rss_kib(), time.time()
        self.samples.append((now, own, time.process_time(), own + descendants_rss_kib()))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children_cpu.append((now, children.ru_utime + children.ru_stime))

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._sample()

    def children_cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds of the child processes that ended in the interval (and were waited for:
        the claims workers, the fingerprint process), to a sample."""
        inside = [cpu for at, cpu in self.children_cpu if start <= at <= end]
        return round(inside[-1] - inside[0], 2) if len(inside) > 1 else None

    def tree_peak_between(self, start: float, end: float) -> int | None:
        """The largest RSS sum of this process and its descendants in the interval."""
        inside = [tree for at, _, _, tree in self.samples if start <= at <= end]
        return max(inside) if inside else None

    def peak_between(self, start: float, end: float) -> int | None:
        inside = [kib for at, kib, _, _ in self.samples if start <= at <= end]
        return max(inside) if inside else None

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds of the process (all threads) between two instants, to a sample."""
        inside = [cpu for at, _, cpu, _ in self.samples if start <= at <= end]
        return round(inside[-1] - inside[0], 2) if len(inside) > 1 else None


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def run(stage: str, first: date, last: date) -> dict[str, Any]:
    sampler = RssSampler()
    sampler.start()
    import dagster as dg

    from claims_pipeline.definitions import defs
    from claims_pipeline.defs.claims_sync.schedules import range_tags
    from claims_pipeline.defs.resources import build_resources

    imported = time.perf_counter()
    assets = list(
        dict.fromkeys(
            defs().get_assets_def(k) for k in ("ehr_encounters", "claims", "claims_import")
        )
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-dagster-home-") as home,
        dg.DagsterInstance.local_temp(
            home, overrides={"telemetry": {"enabled": False}}
        ) as instance,
    ):
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=STAGES[stage],
            resources=build_resources(),
            instance=instance,
            tags=range_tags(first, last),
            raise_on_error=False,
        )
        finished = time.perf_counter()
        # Before reading the event log back: only the run counts toward the peak.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # Processes the run started and waited for (the SQLite fingerprint process).
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kib = peak_rss_kib()
        sampler.stop()
        steps: dict[str, dict[str, Any]] = {}
        materializations: dict[str, dict[str, Any]] = {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
                step = steps.setdefault(event.step_key, {})
                step[event.event_type_value] = entry.timestamp
            if event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.step_materialization_data.materialization
                # The first of each asset carries the range's totals (MaterializeResult).
                materializations.setdefault(
                    materialization.asset_key.to_user_string(),
                    {key: _plain(value) for key, value in materialization.metadata.items()},
                )
        step_figures = {}
        for key, times in steps.items():
            end = times.get("STEP_SUCCESS") or times.get("STEP_FAILURE")
            step_figures[key] = {
                "seconds": round(end - times["STEP_START"], 3) if end else None,
                "succeeded": "STEP_SUCCESS" in times,
                "cpu_seconds": sampler.cpu_between(times["STEP_START"], end) if end else None,
                "peak_rss_mib": round(
                    (sampler.peak_between(times["STEP_START"], end) or 0) / 1024, 1
                )
                if end
                else None,
                "children_cpu_seconds": sampler.children_cpu_between(times["STEP_START"], end)
                if end
                else None,
                "peak_tree_rss_mib": round(
                    (sampler.tree_peak_between(times["STEP_START"], end) or 0) / 1024, 1
                )
                if end
                else None,
            }
        failures = [
            event.event_specific_data.error.to_string()
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE"
        ]
    return {
        "stage": stage,
        "success": result.success,
        "failures": [f[-3000:] for f in failures],
        "wall_seconds": round(finished - PROCESS_STARTED, 3),
        "import_seconds": round(imported - PROCESS_STARTED, 3),
        "run_seconds": round(finished - started, 3),
        "steps": step_figures,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        # this process and the processes it started, summed at each sample (0.1 s)
        "peak_tree_rss_mib": round(
            max(peak_kib, max(tree for *_, tree in sampler.samples)) / 1024, 1
        ),
        "ru_maxrss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_user_seconds": round(usage.ru_utime, 2),
        "cpu_system_seconds": round(usage.ru_stime, 2),
        "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 2),
        "children_peak_rss_mib": round(children.ru_maxrss / 1024, 1),
        "rss_timeline_mib": _thin(sampler.samples),
        "materializations": materializations,
    }


def _thin(
    samples: list[tuple[float, int, float, int]], points: int = 60
) -> list[tuple[float, float]]:
    if not samples:
        return []
    start = samples[0][0]
    step = max(1, len(samples) // points)
    picked = samples[::step] + [samples[-1]]
    return [(round(at - start, 1), round(tree / 1024, 1)) for at, _, _, tree in picked]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(STAGES), default="all")
    parser.add_argument("--first", type=date.fromisoformat, required=True)
    parser.add_argument("--last", type=date.fromisoformat, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    figures = run(args.stage, args.first, args.last)
    args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
