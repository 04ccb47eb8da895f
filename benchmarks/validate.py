"""Time claim assembly + validation: ``python -m benchmarks.validate --claims 100000``.

Builds realistic encounter rows (1-5 charge lines, about 3 on average, about 2% broken) with a
fixed seed, loads the ICD-10-CM code set once (timed on its own: it is a one-off per process),
then times :func:`claims_pipeline.rules.build_claims` over all rows and prints claims/s.
Results are consumed as the ``claims`` asset consumes them, one at a time (counting accepted
claims and reason codes), not collected into a list.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from claims_pipeline.rules import build_claims
from claims_pipeline.rules.code_sets import icd_statuses
from claims_pipeline_tests.rules.factories import TODAY, random_encounter_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=100_000, help="encounters to build")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is shown")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    rows = [row for n in range(args.claims) for row in random_encounter_rows(rng, n)]

    started = time.perf_counter()
    icd_statuses()
    load_seconds = time.perf_counter() - started

    timings = []
    for _ in range(args.repeat):
        claims = accepted = 0
        reasons: Counter[str] = Counter()
        started = time.perf_counter()
        for result in build_claims(rows, today=TODAY):
            claims += 1
            accepted += result.accepted
            reasons.update(problem.code.value for problem in result.problems)
        timings.append(time.perf_counter() - started)
    best = min(timings)

    print(f"ICD-10-CM code set loaded in {load_seconds:.2f} s (once per process)")
    print(f"{claims:,} claims from {len(rows):,} charge-line rows")
    print(f"accepted {accepted:,}, rejected {claims - accepted:,}: {dict(reasons)}")
    print(
        f"build_claims: best of {args.repeat} {best:.2f} s"
        f" (all: {', '.join(f'{t:.2f}' for t in timings)}) = {claims / best:,.0f} claims/s"
    )


if __name__ == "__main__":
    main()
