"""A throwaway PostgreSQL for the tests (and benchmarks): ``initdb`` and ``pg_ctl`` in a
temporary folder, listening on 127.0.0.1 on a free port, its unix socket in that folder.

``start_postgres()`` starts one; the session fixture ``postgres`` (registered in
tests/conftest.py) starts one per test session (per xdist worker) when a test asks for it,
and stops it at the end. Where PostgreSQL's server programs are not installed, the tests
that need it are skipped with one line that says why; under ``CI=true`` that is a failure
instead, so that CI always runs them (``make test`` installs Debian's ``postgresql`` when
it can: as root, with apt-get).

``initdb`` refuses to run as root (a database server must not own the machine), so as
root the cluster is made and run by an unprivileged user (``postgres`` when it exists,
which Debian's package creates, else ``nobody``), through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port

SUPERUSER = "postgres"  # the cluster's superuser, trusted on its unix socket only
START_SECONDS = 60


def find_pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (``pg_ctl``, ``initdb``): on PATH, else
    the newest of Debian's /usr/lib/postgresql/*/bin (not on PATH there)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: _major(Path(p).parent.parent.name))
    return Path(newest).parent


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def unavailable_reason() -> str | None:
    """Why a PostgreSQL cannot be started here, or None if it can."""
    if find_pg_bin() is None:
        return (
            "no pg_ctl on PATH or in /usr/lib/postgresql/*/bin (install Debian's postgresql "
            "package; `make test` does, as root)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, and no runuser to run initdb as another user"
    return None


def _server_user() -> str | None:
    """The user that runs the cluster: None (this process's own) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


@dataclass
class Postgres:
    """A running cluster: its programs, its folder, its port. ``sql`` runs as superuser."""

    bin: Path
    folder: Path
    port: int
    user: str | None  # the OS user that runs the server (None: this process's)
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _as_server_user(self, args: list[str]) -> list[str]:
        return args if self.user is None else ["runuser", "-u", self.user, "--", *args]

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run ``statement`` as the superuser over the unix socket; its output, unaligned."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.folder), "-p", str(self.port), "-U", SUPERUSER, "-d", database,
             "-c", statement],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql: {statement}: {done.stderr.strip()}")
        return done.stdout.strip()

    def url(self, user: str, password: str, database: str, port: int | None = None) -> str:
        """The SQLAlchemy URL Prefect takes, over TCP on loopback."""
        return f"postgresql+asyncpg://{user}:{password}@{self.host}:{port or self.port}/{database}"

    def new_database(self, name: str, extension: bool = False) -> tuple[str, str]:
        """A new role ``name`` (a random password) owning a new database ``name``; returns
        (its URL, the password). The owner may create pg_trgm itself (a trusted extension
        since PostgreSQL 13), as Prefect's first migration does; ``extension`` creates it
        beforehand as the superuser."""
        password = secrets.token_urlsafe(12)
        self.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.sql(f"CREATE DATABASE {name} OWNER {name}")
        if extension:
            self.sql("CREATE EXTENSION pg_trgm", database=name)
        return self.url(name, password, name), password

    def stop(self) -> None:
        subprocess.run(
            self._as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                  "-w", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(max_connections: int = 100) -> Postgres:
    """initdb a new cluster in a new temporary folder and start it on a free loopback port.

    The folder is made with ``tempfile.mkdtemp`` (not pytest's tmp_path, whose parents
    only root may enter) and given to the server's user. Durability is off (``fsync``):
    the cluster dies with the test session.
    """
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise RuntimeError(f"no PostgreSQL here: {unavailable_reason()}")
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    server = Postgres(pg_bin, folder, free_port(), user)
    run = server._as_server_user
    try:
        subprocess.run(
            run([str(pg_bin / "initdb"), "-D", str(server.data), "-U", SUPERUSER,
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--locale=C"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-c listen_addresses={server.host} -c port={server.port} "
            f"-c unix_socket_directories={folder} -c fsync=off -c full_page_writes=off "
            f"-c synchronous_commit=off -c max_connections={max_connections}"
        )
        subprocess.run(
            run([str(pg_bin / "pg_ctl"), "-D", str(server.data), "-l", str(folder / "server.log"),
                 "-o", options, "-w", "-t", str(START_SECONDS), "start"]),
            check=True, capture_output=True, timeout=START_SECONDS + 30,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = folder / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"{exc.cmd[0]} failed: {exc.stderr!r} {tail}") from None
    _wait_ready(server)
    return server


def _wait_ready(server: Postgres, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.sql("SELECT 1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the session (see the module docstring); skipped, saying
    why, where none can be started, and a failure then under CI=true."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests cannot run, and CI=true: {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
