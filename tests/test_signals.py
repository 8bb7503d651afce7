"""SIGINT and SIGTERM end a command within 5 s (exit 130 / 143), in one line, and leave no
partial file: real ``mnist-pipeline`` processes, stopped while a download stalls on a
drip-feeding mirror, while training runs, or while scoring runs."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import signals
from tests.support import (
    REPO,
    FaultyMirror,
    copy_root,
    seed_database,
    synthetic_digits,
    write_mirror,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
STOP_WITHIN = 5.0  # seconds, the contract


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``mnist-pipeline ARGS`` in the background, its output in tmp_path/{out,err}."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=(tmp_path / "out").open("w"),
        stderr=(tmp_path / "err").open("w"),
    )


def stop(proc: subprocess.Popen, sig: int) -> float:
    """Send ``sig``; return the seconds until the process ended (killing it after 30)."""
    assert proc.poll() is None, "the command ended before it was signalled"
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - sent


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def assert_stopped(proc: subprocess.Popen, seconds: float, sig: int, tmp_path: Path) -> None:
    stderr = (tmp_path / "err").read_text()
    assert proc.returncode == 128 + sig, stderr
    assert seconds < STOP_WITHIN, f"took {seconds:.1f} s\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith(f"mnist-pipeline: stopped by {signal.Signals(sig).name}")


def leftovers(folder: Path) -> list[str]:
    """Temporaries and anything but the Prefect home left under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and ".prefect" not in p.parts
    )


def test_exit_codes_follow_the_shell_convention():
    assert signals.exit_code(signal.SIGINT) == 130
    assert signals.exit_code(signal.SIGTERM) == 143


@pytest.fixture
def stalled_mirror(tmp_path):
    """A mirror that answers every request one byte every 0.5 s."""
    checksums = write_mirror(tmp_path / "mirror")
    mirror = FaultyMirror(tmp_path / "mirror", drip_seconds=0.5)
    for name in RAW_FILES:
        mirror.faults[f"{name}.gz"] = ["drip"] * 100
    try:
        yield mirror, checksums
    finally:
        mirror.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_ingest_stuck_on_a_stalled_mirror(tmp_path, stalled_mirror, sig):
    mirror, checksums = stalled_mirror
    artifacts = tmp_path / "artifacts"
    proc = start(tmp_path, "ingest", "--mirror", mirror.url, "--checksums", str(checksums),
                 "--artifacts", str(artifacts))  # fmt: skip
    try:
        wait_for(lambda: len(mirror.hits) == 4, "all four downloads to start")
        time.sleep(1)  # well into the transfers; the default deadline is 10 s away
        seconds = stop(proc, sig)
    finally:
        proc.kill()
    assert_stopped(proc, seconds, sig, tmp_path)
    # Nothing under a final name, and this process's temporaries are gone too.
    assert leftovers(artifacts) == []


def test_a_signal_ends_ingest_on_the_embedded_server_and_stops_that_server(
    tmp_path, stalled_mirror
):
    mirror, checksums = stalled_mirror
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    seed_database(tmp_path / "artifacts" / ".prefect" / "prefect.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "ingest", "--mirror", mirror.url,
         "--checksums", str(checksums), "--artifacts", str(tmp_path / "artifacts")],
        cwd=REPO, env=env, stdout=(tmp_path / "out").open("w"),
        stderr=(tmp_path / "err").open("w"),
    )  # fmt: skip
    try:
        wait_for(lambda: mirror.hits, "the first download")
        time.sleep(1)
        # SIGTERM: during a flow run Prefect's own handler has it, not ours.
        seconds = stop(proc, signal.SIGTERM)
    finally:
        proc.kill()
    assert_stopped(proc, seconds, signal.SIGTERM, tmp_path)
    started = [line for line in (tmp_path / "err").read_text().splitlines()
               if "Starting temporary server on http://127.0.0.1:" in line]  # fmt: skip
    port = int(started[0].rsplit(":", 1)[1])
    wait_for(lambda: not _listening(port), "the embedded server to stop", timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def trained(champion_root, tmp_path_factory):
    """An artifacts root with a champion trained on synthetic digits, and its mirror (the
    session's, copied: a stopped run must not leave anything in the shared one)."""
    return copy_root(champion_root, tmp_path_factory.mktemp("signals"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_train_mid_training(tmp_path, trained, sig):
    artifacts = tmp_path / "artifacts"
    proc = start(tmp_path, "train", "--mirror", str(trained / "mirror"),
                 "--checksums", str(trained / "mirror" / "SHA256SUMS.raw"),
                 "--artifacts", str(artifacts), "--epochs", "1000000")  # fmt: skip
    try:
        # The data is ready once the train split exists; training has started by then.
        wait_for(lambda: (artifacts / "data" / "train.parquet.sha256").exists(), "the data")
        time.sleep(2)
        seconds = stop(proc, sig)
    finally:
        proc.kill()
    assert_stopped(proc, seconds, sig, tmp_path)
    assert not any(p.name.endswith(".tmp") for p in artifacts.rglob("*"))
    assert [p for p in (artifacts / "models").glob("*") if not p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    """200k rows of digits, gzipped: far more than a second of scoring (~7 s to write, so
    written once for both signals; scoring only reads it)."""
    big = tmp_path_factory.mktemp("big") / "digits.csv.gz"
    images, _ = synthetic_digits(50, seed=3)
    lines = [",".join(map(str, row)) + "\n" for row in images.reshape(50, 784)]
    header = ",".join(f"pixel{k}" for k in range(784)) + "\n"
    with gzip.open(big, "wt", compresslevel=1) as f:
        f.write(header)
        for _ in range(4_000):
            f.writelines(lines)
    return big


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_score_mid_file(tmp_path, trained, big_csv, sig):
    big = big_csv
    out = tmp_path / "scored"
    proc = start(tmp_path, "score", str(big), "--output-dir", str(out),
                 "--artifacts", str(trained / "artifacts"))  # fmt: skip
    try:
        wait_for(lambda: out.is_dir() and any(out.iterdir()), "scoring to start writing")
        time.sleep(1)
        seconds = stop(proc, sig)
    finally:
        proc.kill()
    assert_stopped(proc, seconds, sig, tmp_path)
    assert leftovers(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_ends_with_the_signal_exit_code(tmp_path, prefect_api, sig):
    """serve stops its runner itself, gracefully; its exit code still says which signal.

    The signal is sent once serve has printed its banner, which may be before Prefect's
    runner has installed its own SIGTERM handler: the command must end either way."""
    proc = start(tmp_path, "serve", "--artifacts", str(tmp_path / "artifacts"),
                 env={"PREFECT_API_URL": prefect_api})  # fmt: skip
    wait_for(lambda: "serving" in (tmp_path / "out").read_text(), "serve to start")
    seconds = stop(proc, sig)
    stderr = (tmp_path / "err").read_text()
    assert proc.returncode == 128 + sig, stderr
    assert seconds < STOP_WITHIN, f"took {seconds:.1f} s\n{stderr}"
    assert "Traceback" not in stderr, stderr
