"""The Prefect server dies in the middle of a run: the command ends in bounded time with
one line, what it wrote stays whole, and once the server is back a re-run continues from
the cache. A real ``prefect server`` is SIGKILLed under a real ``mnist-pipeline train``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support import (
    REPO,
    free_port,
    seed_database,
    stop_process_group,
    wait_healthy,
    write_mirror,
)

END_WITHIN = 60.0  # seconds from the server's death to the command's exit, the contract


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port`` (a restart reuses home and port)."""
    seed_database(home / "prefect.db")
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    wait_healthy(f"http://127.0.0.1:{port}/api/health", timeout=180, proc=proc)
    return proc


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.mark.e2e
def test_a_server_killed_mid_run_ends_train_in_one_line_and_a_rerun_continues(tmp_path):
    # Before: the train step blocked ~75 s, then a ConnectError traceback, and the process
    # hung for minutes at exit sending logs and events to the dead server.
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_server(tmp_path / "server-home", port, tmp_path / "server.log")
    # Enough rows that 30 epochs of 256 units are still running when the server dies.
    checksums = write_mirror(tmp_path / "mirror", n_train=3000)
    artifacts = tmp_path / "artifacts"
    data = ["--mirror", str(tmp_path / "mirror"), "--checksums", str(checksums),
            "--artifacts", str(artifacts), "--hidden", "256"]  # fmt: skip
    err = tmp_path / "err"
    train = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "train", "--epochs", "30", *data],
        cwd=REPO, env={**os.environ, "PREFECT_API_URL": api},
        stdout=(tmp_path / "out").open("w"), stderr=err.open("w"),
    )  # fmt: skip
    try:
        wait_for(lambda: "epoch 2/30" in err.read_text(), "epoch 2")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        killed = time.monotonic()
        try:
            code = train.wait(timeout=END_WITHIN + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"train still running 90 s after the server died:\n{err.read_text()}")
        seconds = time.monotonic() - killed
        stderr = err.read_text()
        assert code == 1, stderr
        assert seconds < END_WITHIN, f"took {seconds:.1f} s"
        assert "Traceback" not in stderr, stderr
        assert stderr.rstrip().splitlines()[-1] == (
            f"mnist-pipeline: error: the Prefect API at {api} stopped answering during the run"
        )
        # Nothing partial: no temporaries, no model version.
        assert [p for p in artifacts.rglob("*.tmp")] == []
        assert (
            not (artifacts / "models").exists()
            or [p for p in (artifacts / "models").iterdir() if not p.name.startswith(".")] == []
        )

        server = start_server(tmp_path / "server-home", port, tmp_path / "server.log")
        done = run_cli("train", "--epochs", "2", *data, env={"PREFECT_API_URL": api}, timeout=300)
        assert done.returncode == 0, done.stderr
        steps = [line.split() for line in done.stdout.splitlines()]
        ingest = [s for s in steps if s and s[0] in ("download", "convert")]
        assert len(ingest) == 6 and all(s[2] == "Cached" for s in ingest), done.stdout
    finally:
        if train.poll() is None:
            train.kill()
            train.wait(timeout=30)
        stop_process_group(server)


# The API-lost ending (cli.backend) is cli.signals.exit_now with code 1; its exit handlers
# are slow here, and a Ctrl-C comes while they run.
_ENDING = """
import atexit, threading, time
from cli import signals

signals.install()
atexit.register(time.sleep, 3)
threading.Timer(0.1, signals.exit_now, args=(1, "the API is gone")).start()
try:
    time.sleep(60)
except KeyboardInterrupt:
    signals.exit_now()
"""


@pytest.mark.e2e  # a process of its own, whose exit handlers take 3 s
@pytest.mark.parametrize("sigint", [False, True], ids=["alone", "then-SIGINT"])
def test_an_ending_with_its_own_code_still_gives_sigint_130(tmp_path, sigint):
    err = tmp_path / "err"
    proc = subprocess.Popen([sys.executable, "-c", _ENDING], cwd=REPO, stderr=err.open("w"))
    try:
        wait_for(lambda: "the API is gone" in err.read_text(), "the ending", timeout=30)
        if sigint:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == (130 if sigint else 1)
    assert err.read_text() == "the API is gone\n"
