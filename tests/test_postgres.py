"""The stack on PostgreSQL: ``stack --database URL`` (or PREFECT_SERVER_DATABASE_CONNECTION_URL)
checks the database before its server starts, and then runs the deployments on it.

Against a real PostgreSQL on loopback (tests/postgres.py). Every line the stack writes
keeps the password out (``***``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.database import masked, supported
from flows.deployments import SCORING, TRAINING
from tests.conftest import run_cli
from tests.postgres import Postgres
from tests.support import REPO, StackProcess, free_port, user_env, write_mirror


def stack_refusal(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``stack``; assert it exits 2 with one line on stderr, quickly, having started
    no server; return that line."""
    started = time.monotonic()
    done = run_cli("stack", "--artifacts", str(tmp_path / "art"), "--port", str(free_port()),
                   *args, env=env or {})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("mnist-pipeline stack: error: "), line
    assert not (tmp_path / "art" / ".prefect-server").exists(), "no server was started"
    assert time.monotonic() - started < 30
    return line


# --- without a PostgreSQL


def test_a_password_is_masked_in_a_database_url():
    url = "postgresql+asyncpg://prefect:s3cr%40t@db.example:5432/prefect"
    assert masked(url) == "postgresql+asyncpg://prefect:***@db.example:5432/prefect"
    assert masked("sqlite+aiosqlite:////tmp/prefect.db") == "sqlite+aiosqlite:////tmp/prefect.db"


def test_the_oldest_postgresql_prefect_supports_is_14_9():
    # server_version_num: 14.8 is 140008, 15.0 is 150000.
    assert not supported(130015) and not supported(140008)
    assert supported(140009) and supported(150000) and supported(170002)


@pytest.mark.e2e  # a process: `stack` owns the signals
def test_a_url_prefect_cannot_take_is_one_line_without_its_password(tmp_path):
    line = stack_refusal(tmp_path, "--database", "mysql://prefect:hunter2@127.0.0.1/prefect")
    assert line == (
        "mnist-pipeline stack: error: --database: mysql://prefect:***@127.0.0.1/prefect is not "
        "a database URL Prefect's server takes: use "
        "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE (or sqlite+aiosqlite:///FILE)"
    )


# --- the checks, against a real PostgreSQL


def test_an_unreachable_postgresql_is_one_line(tmp_path, postgres: Postgres):
    port = free_port()  # nothing listens there
    line = stack_refusal(tmp_path, "--database", postgres.url("prefect", "hunter2", "x", port))
    assert line == (
        f"mnist-pipeline stack: error: --database: cannot reach PostgreSQL at 127.0.0.1:{port} "
        "(connection refused): start it (Debian: `sudo systemctl start postgresql`), or "
        "correct the host and port"
    )


def test_the_environment_variable_is_checked_too(tmp_path, postgres: Postgres):
    # As in Prefect: PREFECT_SERVER_DATABASE_CONNECTION_URL chooses the server's database.
    url, password = postgres.new_database("wrongpassword")
    bad = url.replace(password, "not-the-password")
    line = stack_refusal(tmp_path, env={"PREFECT_SERVER_DATABASE_CONNECTION_URL": bad})
    assert line == (
        "mnist-pipeline stack: error: PREFECT_SERVER_DATABASE_CONNECTION_URL: PostgreSQL at "
        f"127.0.0.1:{postgres.port} refused user 'wrongpassword': password authentication "
        "failed (check the user and password)"
    )
    assert "not-the-password" not in line


def test_a_missing_database_says_how_to_create_it(tmp_path, postgres: Postgres):
    url, password = postgres.new_database("nodatabase")
    line = stack_refusal(tmp_path, "--database", url.rsplit("/", 1)[0] + "/missing")
    assert line.endswith(
        f"PostgreSQL at 127.0.0.1:{postgres.port} has no database 'missing': create it "
        "(`sudo -u postgres createdb -O nodatabase missing`)"
    )
    assert password not in line


def test_a_user_who_may_not_create_pg_trgm_is_told_how_to_get_it(tmp_path, postgres: Postgres):
    # pg_trgm is a trusted extension: a database's owner may create it, another user may
    # not. Here the database belongs to the superuser, and Prefect's user only connects.
    password = "weak-password"
    postgres.sql(f"CREATE ROLE weak LOGIN PASSWORD '{password}'")
    postgres.sql("CREATE DATABASE weakdb")
    postgres.sql("GRANT CREATE ON SCHEMA public TO weak", database="weakdb")
    url = postgres.url("weak", password, "weakdb")
    line = stack_refusal(tmp_path, "--database", url)
    assert line == (
        "mnist-pipeline stack: error: --database: user 'weak' may not create the pg_trgm "
        f"extension that Prefect needs in database 'weakdb' at 127.0.0.1:{postgres.port}: "
        "create it once as a superuser "
        "(`sudo -u postgres psql -d weakdb -c 'CREATE EXTENSION pg_trgm'`)"
    )
    assert postgres.sql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'",
                        database="weakdb") == "0", "the check changed nothing"  # fmt: skip

    # Once a superuser has created it, the same user passes.
    from cli.stack import check_database

    postgres.sql("CREATE EXTENSION pg_trgm", database="weakdb")
    assert check_database(url, "--database") == postgres.sql("SHOW server_version").split()[0]


def test_a_user_who_may_not_create_tables_is_told_how(tmp_path, postgres: Postgres):
    # PostgreSQL 15: only the database's owner may create tables in schema public.
    postgres.sql("CREATE ROLE guest LOGIN PASSWORD 'guest-password'")
    postgres.sql("CREATE DATABASE guestdb")
    postgres.sql("CREATE EXTENSION pg_trgm", database="guestdb")
    line = stack_refusal(tmp_path, "--database", postgres.url("guest", "guest-password", "guestdb"))
    assert line == (
        "mnist-pipeline stack: error: --database: user 'guest' may not create tables in "
        f"database 'guestdb' at 127.0.0.1:{postgres.port}: make it the database's owner "
        "(`sudo -u postgres psql -c 'ALTER DATABASE guestdb OWNER TO guest'`)"
    )


# --- the stack on PostgreSQL, end to end


def test_a_stack_on_postgresql_runs_the_training_deployment(tmp_path, postgres: Postgres):
    url, password = postgres.new_database("prefect")
    checksums = write_mirror(tmp_path / "mirror")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = user_env(MNIST_CHECKSUMS_FILE=str(checksums))
    stack = StackProcess(tmp_path / "art", "--port", str(port), "--poll-seconds", "1",
                         "--database", url, env=env)  # fmt: skip
    try:
        database = stack.line("database: ")
        assert database.startswith(
            f"database: postgresql+asyncpg://prefect:***@127.0.0.1:{postgres.port}/prefect "
            "(PostgreSQL 1"
        ), database
        wait_for_deployments(api, stack)
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", TRAINING,
             f"--param=mirror={json.dumps(str(tmp_path / 'mirror'))}", "--param=epochs=1",
             "--watch"],
            cwd=REPO, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + stack.err.read_text()
        assert "warning:" not in stack.out.read_text()  # SQLite's, not PostgreSQL's
        # The run is in PostgreSQL, and the root's SQLite file was never made.
        states = postgres.sql("SELECT state_type FROM flow_run WHERE state_type = 'COMPLETED'",
                              database="prefect")  # fmt: skip
        assert states.splitlines() == ["COMPLETED"]
        assert postgres.sql("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'",
                            database="prefect") == "pg_trgm"  # fmt: skip
        assert not (tmp_path / "art" / ".prefect" / "prefect.db").exists()
        assert (tmp_path / "art" / "models" / "champion.json").is_file()
        assert stack.stop() == 143, stack.err.read_text()
        assert not (tmp_path / "art" / ".prefect" / "stack.json").exists()
    finally:
        stack.kill()
    server_log = tmp_path / "art" / ".prefect-server" / "server.log"
    for text in (stack.out.read_text(), stack.err.read_text(), server_log.read_text()):
        assert password not in text


def wait_for_deployments(api: str, stack: StackProcess, timeout: float = 180) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        while True:
            names = {f"{c.read_flow(d.flow_id).name}/{d.name}" for d in c.read_deployments()}
            if names == {TRAINING, SCORING}:
                return
            assert stack.proc.poll() is None and time.monotonic() < deadline, stack.err.read_text()
            time.sleep(0.5)


def test_the_postgresql_fixture_runs_as_an_unprivileged_user(postgres: Postgres):
    # initdb refuses root: as root, the cluster belongs to another user.
    owner = postgres.data.stat().st_uid
    assert owner == os.geteuid() if os.geteuid() != 0 else owner != 0
