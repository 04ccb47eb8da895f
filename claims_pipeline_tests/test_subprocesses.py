"""A helper process ends with the process that started it (a step killed mid-run leaves no
worker building claims, or holding a snapshot of the EHR, for nobody)."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
HELPER = (
    "import time\n"
    "from claims_pipeline.subprocesses import exit_with_parent\n"
    "exit_with_parent(interval=0.05)\n"
    "time.sleep(120)\n"
)
STARTER = (
    "import subprocess, sys\n"
    f"helper = subprocess.Popen([sys.executable, '-c', {HELPER!r}], stdin=subprocess.DEVNULL)\n"
    "print(helper.pid, flush=True)\n"
    "sys.stdin.readline()\n"
)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected


def test_a_helper_ends_when_the_process_that_started_it_is_killed():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    helper = int(starter.stdout.readline())
    try:
        time.sleep(0.5)
        assert running(helper)  # alive while its parent is
        starter.kill()
        starter.wait()
        deadline = time.monotonic() + 30
        while running(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(helper)
    finally:
        if running(helper):
            os.kill(helper, 9)
        starter.stdin.close()
        starter.stdout.close()
