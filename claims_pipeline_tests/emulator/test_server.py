"""The emulator process: restart and crash keep committed state, and it never outlives its
parent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from claims_pipeline.emulator import (
    EmulatorConfig,
    EmulatorError,
    RunningEmulator,
    running_emulator,
)
from claims_pipeline.emulator.__main__ import main
from claims_pipeline_tests.emulator.factories import (
    TENANT_ID,
    make_claim,
    make_claims,
    make_config,
    post_claims,
)


def _gone(url: str, pid: int, within: float = 10.0) -> bool:
    """True once nothing answers on ``url`` and process ``pid`` has ended."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/_emulator/health", timeout=0.5)
        except httpx.TransportError:
            if not _alive(pid):
                return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an orphan may wait for a reaper as a zombie


def test_restart_keeps_claims_ids_port_and_counters(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    post_claims(api, [make_claim("A"), make_claim("B")])
    url = emulator.url

    emulator.restart()

    assert emulator.url == url
    assert [claim["claim_submitter_identifier"] for claim in emulator.claims()] == ["A", "B"]
    response = post_claims(api, [make_claim("C"), make_claim("A")])
    assert response.json()["claim_ids"] == [3, 1]
    assert emulator.stats()["claims_received"] == 4


def test_kill_is_a_crash_that_keeps_committed_claims(
    api: httpx.Client, emulator: RunningEmulator
) -> None:
    post_claims(api, make_claims(5))

    emulator.kill()

    assert not emulator.is_running
    with pytest.raises(httpx.TransportError):
        post_claims(api, [make_claim("LOST")])
    emulator.start()
    assert len(emulator.claims()) == 5


def test_a_request_is_stored_whole_or_not_at_all_when_the_process_dies(
    emulator: RunningEmulator,
) -> None:
    acknowledged: list[str] = []

    def post_batches() -> None:
        with httpx.Client(base_url=emulator.url, headers={"x-api-key": emulator.api_key}) as api:
            for batch in range(1000):
                try:
                    response = post_claims(api, make_claims(100, prefix=f"B{batch:04d}"))
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    acknowledged.append(f"B{batch:04d}")

    poster = threading.Thread(target=post_batches)
    poster.start()
    while len(acknowledged) < 5:
        time.sleep(0.01)
    emulator.kill()
    poster.join()
    emulator.start()

    per_batch = Counter(c["claim_submitter_identifier"][:5] for c in emulator.claims())
    assert set(per_batch.values()) == {100}
    assert set(acknowledged) <= set(per_batch)


def test_port_zero_picks_a_free_port(emulator: RunningEmulator) -> None:
    assert emulator.port > 0
    assert emulator.url == f"http://127.0.0.1:{emulator.port}"


def test_the_process_stops_when_the_block_fails(config: EmulatorConfig) -> None:
    with pytest.raises(RuntimeError), running_emulator(config) as emulator:
        pid, url = emulator.pid, emulator.url
        raise RuntimeError("a failing test")

    assert pid is not None
    assert _gone(url, pid)


def test_the_process_dies_with_its_parent(tmp_path: Path) -> None:
    parent = textwrap.dedent(
        f"""
        import os, signal
        from claims_pipeline.emulator import EmulatorConfig, running_emulator
        config = EmulatorConfig(db_path={str(tmp_path / "e.sqlite")!r}, api_key="k", tenant_id=1)
        with running_emulator(config) as emulator:
            print(emulator.pid, emulator.url, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )

    finished = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60
    )

    pid, url = finished.stdout.split()
    assert _gone(url, int(pid))


def test_a_taken_port_is_a_clear_startup_error(emulator: RunningEmulator, tmp_path: Path) -> None:
    config = make_config(tmp_path / "other.sqlite")

    with (
        pytest.raises(EmulatorError, match="exited with code"),
        running_emulator(config, port=emulator.port),
    ):
        pass


def test_wrong_tenant_on_the_listing_is_403(emulator: RunningEmulator) -> None:
    response = httpx.get(
        f"{emulator.url}/_emulator/claims",
        params={"tenant_id": TENANT_ID + 1},
        headers={"x-api-key": emulator.api_key},
    )

    assert response.status_code == 403


def test_command_line_needs_an_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAIMS_API_KEY", raising=False)

    with pytest.raises(SystemExit) as exit_info:
        main(["--db", str(tmp_path / "e.sqlite"), "--tenant-id", "1"])

    assert exit_info.value.code == 2
