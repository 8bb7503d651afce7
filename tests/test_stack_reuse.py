"""CLI commands reuse a stack running on their artifacts root, and one root keeps one run
history.

A stack records its address and pid in ``<artifacts>/.prefect/stack.json`` while it runs.
A command with no Prefect API URL configured uses that stack's server instead of starting
an embedded one (one log line says which server it uses); a configured PREFECT_API_URL
always wins; a stale record is ignored and removed. With SQLite, the stack serves the
root's own ``.prefect/prefect.db``, so its API shows the runs made before it started.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cli.stack_record import record_stack, running_stack, stack_record
from tests.support import (
    StackProcess,
    free_port,
    run_cli_exactly,
    seed_database,
    synthetic_digits,
    user_env,
    write_mirror,
)

STACK_LINE = "Prefect server: the stack at "
EMBEDDED_LINE = "Prefect server: embedded, for this command only"


def flow_runs(api: str) -> dict[str, list[str]]:
    """flow name -> the states of its runs, as the server at ``api`` has them."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runs: dict[str, list[str]] = {}
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        names = {}
        for run in c.read_flow_runs(limit=200):
            if run.flow_id not in names:
                names[run.flow_id] = c.read_flow(run.flow_id).name
            if run.state is not None and not run.state.is_scheduled():
                runs.setdefault(names[run.flow_id], []).append(run.state.name)
    return runs


def ingest_runs_of(api: str, artifacts: Path) -> int:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        runs = c.read_flow_runs(sort="START_TIME_DESC", limit=100)
    return sum(1 for r in runs if r.parameters.get("artifacts") == str(artifacts))


def digits_csv(path: Path, n: int = 50) -> Path:
    images, _ = synthetic_digits(n, seed=5)
    lines = [",".join(f"pixel{k}" for k in range(784))]
    lines += [",".join(map(str, row)) for row in images.reshape(n, 784)]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the record


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(lambda: {"api": "http://127.0.0.1:9/api", "pid": _dead_pid()}, id="pid-gone"),
        pytest.param(
            lambda: {"api": f"http://127.0.0.1:{free_port()}/api", "pid": os.getpid()},
            id="no-answer",
        ),
        pytest.param(lambda: "{not json", id="unreadable"),
    ],
)
def test_a_stale_record_is_ignored_and_removed(tmp_path, record):
    path = stack_record(tmp_path)
    path.parent.mkdir(parents=True)
    value = record()
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    assert running_stack(tmp_path) is None
    assert not path.exists()


def test_a_live_record_is_used_and_kept(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}/api"
    try:
        path = record_stack(tmp_path, api, auth=False)
        assert running_stack(tmp_path) == {"api": api, "pid": os.getpid(), "auth": False}
        assert path.exists()
    finally:
        server.shutdown()
        server.server_close()


def test_no_record_means_no_stack(tmp_path):
    assert running_stack(tmp_path / "nothing-here") is None
    assert not (tmp_path / "nothing-here").exists(), "looking creates nothing"


# --- end to end


def test_cli_commands_use_the_running_stack_and_its_ui_shows_every_run_of_the_root(
    tmp_path, prefect_api
):
    checksums = write_mirror(tmp_path / "mirror")
    artifacts = tmp_path / "art"
    data = ["--mirror", str(tmp_path / "mirror"), "--checksums", str(checksums),
            "--artifacts", str(artifacts)]  # fmt: skip
    env = user_env(MNIST_CHECKSUMS_FILE=str(checksums))
    seed_database(artifacts / ".prefect" / "prefect.db")

    # A week of CLI runs before any stack: on the embedded server, in the root's database.
    before = run_cli_exactly("train", "--epochs", "1", *data, env=env)
    assert before.returncode == 0, before.stderr
    assert EMBEDDED_LINE in before.stderr
    assert f"run history in {artifacts / '.prefect' / 'prefect.db'}" in before.stderr

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    stack = StackProcess(artifacts, "--port", str(port), env=env)
    try:
        assert stack.line("database: ") == (
            f"database: {artifacts / '.prefect' / 'prefect.db'} "
            "(SQLite, this root's run history, CLI runs included)"
        )
        # SQLite's measured limit under load, said where a team starts its server.
        assert "use --database postgresql+asyncpg://" in stack.line("warning: SQLite refuses")
        record = json.loads(stack_record(artifacts).read_text())
        assert record == {"api": api, "pid": stack.proc.pid, "auth": False}
        # Its UI shows the run made before it started.
        assert flow_runs(api) == {"mnist-training": ["Completed"]}

        # No API configured: the commands use the stack, and say so in one line.
        for args in (["train", "--epochs", "1", *data],
                     ["score", str(digits_csv(tmp_path / "digits.csv")), "--output-dir",
                      str(tmp_path / "scored"), "--artifacts", str(artifacts)]):  # fmt: skip
            done = run_cli_exactly(*args, env=env)
            assert done.returncode == 0, done.stderr
            said = [line for line in done.stderr.splitlines() if "Prefect server: " in line]
            assert len(said) == 1 and said[0].endswith(
                f"{STACK_LINE}http://127.0.0.1:{port} (pid {stack.proc.pid}, from "
                f"{stack_record(artifacts)}); this command's runs show in its UI"
            ), done.stderr
            assert "Starting temporary server" not in done.stderr
        runs = flow_runs(api)
        assert runs == {"mnist-training": ["Completed"] * 2, "mnist-scoring": ["Completed"]}

        # A configured PREFECT_API_URL wins over the stack.
        done = run_cli_exactly("ingest", *data, env={**env, "PREFECT_API_URL": prefect_api})
        assert done.returncode == 0, done.stderr
        assert "Prefect server: " not in done.stderr
        assert ingest_runs_of(prefect_api, artifacts) == 1
        assert "mnist-ingest" not in flow_runs(api)

        # A second stack on the same root would serve the same database: refused.
        done = run_cli_exactly(
            "stack", "--artifacts", str(artifacts), "--port", str(free_port()), env=env
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"mnist-pipeline stack: error: a stack is already running on {artifacts} "
            f"(pid {stack.proc.pid}, {api}): stop it first, or give this one another --artifacts"
        ]

        assert stack.stop() == 143, stack.err.read_text()
        assert not stack_record(artifacts).exists()
    finally:
        stack.kill()

    # A record left by a stack that died (SIGKILL: it could not remove it) is stale: the
    # next command runs on the embedded server, which then has every run of the root.
    stack_record(artifacts).write_text(json.dumps({"api": api, "pid": _dead_pid()}))
    done = run_cli_exactly("train", "--epochs", "1", *data, env=env)
    assert done.returncode == 0, done.stderr
    assert EMBEDDED_LINE in done.stderr
    assert not stack_record(artifacts).exists()
    check = subprocess.run(
        [sys.executable, "-c", _COUNT_RUNS, str(artifacts / ".prefect" / "prefect.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.stdout.split() == ["mnist-scoring", "1", "mnist-training", "3"], check.stderr


# The flow runs recorded in a root's SQLite database, by flow name (sqlite3, no server).
_COUNT_RUNS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "SELECT flow.name, count(*) FROM flow_run JOIN flow ON flow.id = flow_run.flow_id "
    "WHERE flow_run.state_type = 'COMPLETED' GROUP BY flow.name ORDER BY flow.name"
).fetchall()
print(" ".join(f"{name} {count}" for name, count in rows))
"""
