"""Nothing a command started outlives it, even when the command is SIGKILLed (cli.reaper)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cli.reaper import _start_time, descendants
from tests.support import REPO, seed_database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_sigkill_of_a_command_takes_its_embedded_server_along(http_mirror, mirror, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # its own embedded server
    seed_database(tmp_path / "artifacts" / ".prefect" / "prefect.db")
    command = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "train", "--epochs", "50", "--mirror", http_mirror.url,
         "--checksums", str(mirror[1]), "--artifacts", str(tmp_path / "artifacts")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        servers = wait_for(
            lambda: {
                pid: started
                for pid, started in descendants(command.pid).items()
                if "uvicorn" in cmdline(pid)
            },
            timeout=180,
            what="the command's embedded server",
        )
        time.sleep(1.0)  # the watcher notes descendants every 0.25 s
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=10)
        gone = time.monotonic()
        wait_for(
            lambda: all(_start_time(pid) != started for pid, started in servers.items()),
            timeout=10,
            what=f"the orphaned server(s) {sorted(servers)} to be stopped",
        )
        assert time.monotonic() - gone < 10
    finally:
        if command.poll() is None:
            command.kill()
