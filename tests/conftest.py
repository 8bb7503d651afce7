"""Shared fixtures: one real Prefect server and one trained champion for the session (per
xdist worker), synthetic mirrors, an S3 server; ``run_cli`` (tests.support) runs the CLI.

Environment for Prefect is set in ``pytest_configure``, before any test module imports
Prefect, because Prefect reads its settings when it is first imported.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import postgres  # noqa: F401 (a fixture: a PostgreSQL for the session)
from tests.support import (
    REAL_MNIST,
    FaultyMirror,
    MotoServer,
    run_cli,  # noqa: F401 (the tests import it from here)
    run_cli_process,  # noqa: F401
    start_prefect_server,
    stop_process_group,
    train_champion,
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


# A test that needs one of these (or a fixture built on them) takes seconds: it is end to
# end. `pytest -m "not e2e and not realdata"` is the quick loop.
SERVERS = {"prefect_api", "s3_server", "postgres"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def champion_root(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One champion for the session, trained by the training flow (3 epochs) on synthetic
    digits: ``mirror/`` and ``artifacts/`` (tests.support.train_champion). Only read it;
    a test or module that changes it, or needs a root of its own, takes a copy
    (tests.support.copy_root)."""
    return train_champion(tmp_path_factory.mktemp("champion"), epochs=3)


@pytest.fixture(scope="session")
def real_mnist_champion(
    prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """(artifacts root, the training flow's result): the default preset trained once on
    the real MNIST files (../shared/mnist), for the realdata tests that only read it."""
    from flows.training import training_flow

    if not REAL_MNIST.is_dir():
        pytest.skip("../shared/mnist is not there")
    artifacts = tmp_path_factory.mktemp("real-mnist") / "artifacts"
    return artifacts, training_flow(mirror=str(REAL_MNIST), artifacts=str(artifacts))


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
