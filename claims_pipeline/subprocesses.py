"""The project's helper processes (``python -m claims_pipeline...``): the same interpreter and
package as the caller, spoken to in JSON lines over their stdin and stdout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def start_module(module: str, text: bool = True) -> subprocess.Popen[Any]:
    """``python -m module`` with pipes to its stdin and stdout (``text``, else bytes). Its
    stderr is discarded: a traceback could quote a row."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(  # noqa: S603 - the command is this interpreter and a module of ours
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
        text=text,
    )


def exit_with_parent(interval: float = 1.0) -> None:
    """In a helper process: end it when the process that started it is gone (killed with its
    step), instead of finishing work nobody waits for while holding a database snapshot or
    writing files. What it was writing stays a temporary file (purged by age)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
