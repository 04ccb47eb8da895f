"""Before/after table of two ``benchmarks.e2e --json`` files, as Markdown.

``python -m benchmarks.compare before.json after.json``

One row per configuration (database, schema, days, lines) found in both: end-to-end wall time,
pipeline CPU seconds, each step's CPU seconds, peak RSS, the floor and the ratio to it, and
whether the wire digests (SHA-256 over every claim's wire JSON) are equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _steps(summary: dict[str, Any]) -> str:
    return " / ".join(f"{(step.get('cpu_seconds') or 0):.1f}" for step in summary["steps"].values())


def _cell(summary: dict[str, Any]) -> list[str]:
    floor = summary.get("floor_seconds")
    return [
        f"{summary['wall_seconds_best']:.1f} s",
        f"{summary['cpu_seconds_best_run']:.1f}",
        _steps(summary),
        f"{summary['peak_rss_mib_max']:.0f}",
        f"{floor:.1f} s, {summary['e2e_over_floor']:.2f}x" if floor else "-",
    ]


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    header = (
        "| configuration | wall before → after | pipeline CPU s | step CPU s (extract / claims /"
        " import) | peak RSS MiB | floor, e2e/floor | wire digest |\n|---|---|---|---|---|---|---|"
    )
    rows = [header]
    for key, then in before["runs"].items():
        now = after["runs"].get(key)
        if now is None:
            continue
        old, new = _cell(then["summary"]), _cell(now["summary"])
        same = then["e2e"][0]["wire_digest"] == now["e2e"][0]["wire_digest"]
        digest = now["e2e"][0]["wire_digest"]["sha256"][:16]
        rows.append(
            f"| {key.replace('/', ', ')} | "
            + " | ".join(f"{a} → {b}" for a, b in zip(old, new, strict=True))
            + f" | {'equal' if same else 'DIFFERENT'} `{digest}` |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    print(table(json.loads(args.before.read_text()), json.loads(args.after.read_text())))


if __name__ == "__main__":
    main()
