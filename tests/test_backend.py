"""The CLI's Prefect backend: the user's profile, else the embedded server (its database
under the artifacts root, stopped only once it has recorded every run)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    get_current_settings,
    temporary_settings,
)

from cli.backend import in_process_backend
from cli.database import DATABASE_VARIABLES
from cli.root_database import embedded_database_url
from tests.support import REPO, home_env, run_cli, run_cli_exactly, seed_database

# --- which backend: the user's profile, else the embedded server under the artifacts root


def test_with_no_api_url_the_embedded_database_is_under_the_artifacts_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in DATABASE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    artifacts = tmp_path / "artifacts"
    # Only the database's URL is under test: no embedded server is started in this process.
    no_server = {PREFECT_API_URL: None, PREFECT_SERVER_EPHEMERAL_ENABLED: False}
    with temporary_settings(updates=no_server):
        with in_process_backend(artifacts):
            url = get_current_settings().server.database.connection_url.get_secret_value()
        assert url == embedded_database_url(artifacts)
        assert url.endswith(f"{artifacts}/.prefect/prefect.db")
        assert (artifacts / ".prefect").is_dir()
        # A database the user chose is theirs to keep.
        monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "sqlite+aiosqlite:///x.db")
        with in_process_backend(artifacts):
            url = get_current_settings().server.database.connection_url.get_secret_value()
        assert url != embedded_database_url(artifacts)


def test_a_profile_set_with_prefect_config_set_sends_runs_to_its_server(
    prefect_api: str, mirror: tuple[Path, Path], tmp_path: Path
) -> None:
    from prefect import get_client

    env = home_env(tmp_path / "home")
    configured = subprocess.run(
        [sys.executable, "-m", "prefect", "config", "set", f"PREFECT_API_URL={prefect_api}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert configured.returncode == 0, configured.stderr
    assert (tmp_path / "home" / ".prefect" / "profiles.toml").is_file()
    artifacts = tmp_path / "artifacts"
    done = run_cli_exactly(
        "ingest", "--mirror", str(mirror[0]), "--checksums", str(mirror[1]),
        "--artifacts", str(artifacts), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Starting temporary server" not in done.stdout + done.stderr
    assert not (artifacts / ".prefect").exists(), "no embedded server, no database of its own"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort="START_TIME_DESC", limit=50)
    ours = [r for r in runs if r.parameters.get("artifacts") == str(artifacts)]
    assert len(ours) == 1 and ours[0].state.is_completed()


# A flow of many quick tasks leaves the embedded server a backlog of task-run states to
# record when it ends; the script counts those recorded once the backend block is left.
_BACKLOG_SCRIPT = """
import sys
from prefect import flow, get_client, task
from cli.backend import in_process_backend
from flows import run_recorded

@task
def step(i):
    return i

@flow
def many_steps(fail: bool):
    done = [f.result() for f in [step.submit(i) for i in range(40)]]
    if fail:  # a failed run ends with the same burst of states to record
        raise RuntimeError("failed on purpose")
    return done

with in_process_backend():
    run_recorded(many_steps, fail=False)
    try:
        run_recorded(many_steps, fail=True)
    except RuntimeError:
        pass
with get_client(sync_client=True) as client:
    runs = client.read_task_runs()
print("recorded", sum(1 for r in runs if r.state is not None and r.state.is_completed()))
"""


@pytest.mark.e2e
def test_the_embedded_server_has_recorded_every_task_run_before_it_stops(
    tmp_path: Path,
) -> None:
    # Before the fix the CLI stopped the server while it was still recording (6 of 10
    # warm `train` runs printed tracebacks at exit); the count was then below 40.
    env = home_env(tmp_path / "home")
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    seed_database(tmp_path / "prefect-home" / "prefect.db")
    done = subprocess.run(
        [sys.executable, "-c", _BACKLOG_SCRIPT], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recorded 80" in done.stdout.splitlines()
    # The one traceback is the failed run's own; none from a server stopped mid-write.
    assert done.stderr.count("Traceback") == 1, done.stderr
    assert "RuntimeError: failed on purpose" in done.stderr
    assert "Error flushing" not in done.stderr


def test_an_unreachable_api_is_one_line(mirror: tuple[Path, Path], tmp_path: Path) -> None:
    # It was Prefect's "Failed to reach API" traceback from inside the first flow run.
    env = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = run_cli("ingest", "--mirror", str(mirror[0]), "--artifacts", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "mnist-pipeline ingest: error: cannot reach the Prefect API at http://127.0.0.1:9/api ("
    )
    assert line.endswith("unset it to run on Prefect's embedded server")


class _ForbiddingAPI(http.server.BaseHTTPRequestHandler):
    """An API that answers /health and forbids everything else, as a proxy in front of a
    Prefect server might."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/api/health" else 403)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


def test_an_api_that_refuses_this_client_is_one_line(mirror: tuple[Path, Path], tmp_path: Path):
    # A 401 or 403 came out of the first flow run as a 59-line traceback.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForbiddingAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}/api"
    try:
        done = run_cli(
            "ingest", "--mirror", str(mirror[0]), "--artifacts", str(tmp_path),
            env={"PREFECT_API_URL": api},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"mnist-pipeline ingest: error: the Prefect API at {api} refused this client "
        "(403 Forbidden): PREFECT_API_AUTH_STRING is not set: set it to the server's "
        "PREFECT_SERVER_API_AUTH_STRING"
    ]


def _waits_for_a_lock(pid: int) -> bool:
    """True if process ``pid`` is blocked on a file lock (a ``->`` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/locks")
def test_commands_started_together_on_a_fresh_root_take_turns_migrating_its_database(
    mirror: tuple[Path, Path], tmp_path: Path
) -> None:
    # Embedded servers started together migrated artifacts/.prefect/prefect.db at once, and
    # one of the commands printed ~110 lines of uvicorn traceback (NoSuchTableError, or
    # KeyError ix_artifact__task_run_state_id), though all exited 0. That race happens only
    # some of the time; holding the lock here shows the turn-taking every time: while
    # another holds it, no command starts its server. Then all three take their turns.
    import fcntl

    env = home_env(tmp_path / "home")
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    database = tmp_path / "artifacts" / ".prefect" / "prefect.db"
    database.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "cli.main", "train", "--mirror", str(mirror[0]),
            "--checksums", str(mirror[1]), "--artifacts", str(tmp_path / "artifacts")]  # fmt: skip
    logs = [tmp_path / f"train-{i}.log" for i in range(3)]
    commands = []
    try:
        with open(f"{database}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            commands = [
                subprocess.Popen(argv, cwd=REPO, env=env, stdout=log.open("w"),
                                 stderr=subprocess.STDOUT)
                for log in logs
            ]  # fmt: skip
            deadline = time.monotonic() + 180
            for command, log in zip(commands, logs, strict=True):
                while not (_waits_for_a_lock(command.pid) or database.exists()):
                    assert command.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            assert not database.exists(), "a server started without the lock"
            for log in logs:
                assert "Starting temporary server" not in log.read_text()
        codes = [command.wait(timeout=600) for command in commands]
    finally:
        for command in commands:
            if command.poll() is None:
                command.kill()
                command.wait(timeout=30)
    for code, log in zip(codes, logs, strict=True):
        output = log.read_text()
        assert code == 0, output
        assert "Traceback" not in output, output
    assert (
        (tmp_path / "artifacts" / ".prefect" / "prefect.db.lock")
        .read_text()
        .startswith("migrated by prefect ")
    )
