"""The project's helper processes (``python -m claims_pipeline...``): the same interpreter and
package as the caller, spoken to in JSON lines over their stdin and stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start_module(module: str) -> subprocess.Popen[str]:
    """``python -m module`` with pipes to its stdin and stdout. Its stderr is discarded: a
    traceback could quote a row, and what the helpers answer is free of PHI."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(  # noqa: S603 - the command is this interpreter and a module of ours
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
        text=True,
    )
