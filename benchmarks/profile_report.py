"""Summarise a py-spy ``--format raw`` profile: where the samples are, by function.

``python -m benchmarks.profile_report e2e-1.pyspy.txt [--top 25] [--match claims_pipeline]``

Prints, for each function (name and file, line numbers merged), its *self* share (samples
where it is the running frame) and its *inclusive* share (samples where it is anywhere on the
stack, counted once per sample). py-spy samples every thread that is not idle, so the HTTP
worker threads of ``claims_import`` are in it, unlike a main-thread-only profiler.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r".*/site-packages/")


def _frame(text: str) -> str:
    match = _FRAME.match(text.strip())
    if not match:
        return text.strip()
    path = _SITE.sub("", match["file"])
    path = path.replace(str(Path.cwd()) + "/", "")
    return f"{match['name']}  {path}"


def load(path: Path) -> tuple[Counter, Counter, int]:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return own, inclusive, total


def render(path: Path, top: int = 25, match: str | None = None) -> str:
    own, inclusive, total = load(path)
    out = [f"{path.name}: {total} samples (non-idle, all threads)"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        out.append(f"\n  top {top} by {title} time")
        shown = 0
        for frame, samples in counter.most_common():
            if match and match not in frame:
                continue
            out.append(f"  {100 * samples / total:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only functions whose name or file contains this")
    args = parser.parse_args(argv)
    print(render(args.profile, args.top, args.match))


if __name__ == "__main__":
    main()
