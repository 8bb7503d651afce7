"""Shared fixtures: one real Prefect server for the session, synthetic mirrors, a CLI runner.

Environment for Prefect is set in ``pytest_configure``, before any test module imports
Prefect, because Prefect reads its settings when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    REPO,
    FaultyMirror,
    MotoServer,
    start_prefect_server,
    stop_process_group,
    write_mirror,
)

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mnist-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(
        {
            "PREFECT_HOME": str(_SESSION_DIR / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            # Retries keep their real shape, but tests should not sleep for 22 s.
            "MNIST_RETRY_DELAYS": "0.05,0.05,0.05",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    for var in ("MNIST_MIRROR", "MNIST_ARTIFACTS_DIR", "MNIST_CHECKSUMS_FILE"):
        os.environ.pop(var, None)
    (_SESSION_DIR / "prefect-home").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real ``prefect server`` on a free loopback port, shared by every test in the run."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, api = start_prefect_server(
        _SESSION_DIR / "server-home", _SESSION_DIR / "prefect-server.log"
    )
    os.environ["PREFECT_API_URL"] = api
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send buffered logs while the server is still up
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop_process_group(proc)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """One real S3 API (moto's server) on loopback for the session. Its endpoint and dummy
    credentials go into this process's environment (s3fs and boto read them there) and so
    into every CLI subprocess the tests start; tests that use it ask for ``s3_bucket``."""
    server = MotoServer(_SESSION_DIR / "moto.log")
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoServer, request: pytest.FixtureRequest) -> str:
    """A new empty bucket for this test: ``s3://<name>``."""
    name = f"t{len(_BUCKETS)}-{request.node.name.lower()}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)[:60].rstrip("-")
    _BUCKETS.append(name)
    return s3_server.bucket(name)


_BUCKETS: list[str] = []


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with four small synthetic MNIST files; returns (folder, checksums file)."""
    folder = tmp_path / "mirror"
    return folder, write_mirror(folder)


@pytest.fixture
def http_mirror(mirror: tuple[Path, Path]) -> Iterator[FaultyMirror]:
    server = FaultyMirror(mirror[0])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``mnist-pipeline`` in a subprocess, as a user would; returns CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
