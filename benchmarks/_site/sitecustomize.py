"""Applies ``BENCH_EXPERIMENTS`` (see benchmarks/experiments.py) at interpreter start.

Only on PYTHONPATH when ``python -m benchmarks.e2e --experiment ...`` runs, in its children."""

import os
import sys

if os.environ.get("BENCH_EXPERIMENTS"):
    extra = os.environ.get("BENCH_EXTRA_PATH")
    if extra:
        sys.path.append(extra)
    from benchmarks.experiments import apply

    apply(os.environ["BENCH_EXPERIMENTS"])
