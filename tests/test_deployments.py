"""The deployments end to end: a real ``prefect server``, ``mnist-pipeline serve``/``stack``,
``prefect deployment run --watch``, and the work-pool route with a real process worker.

Every process a test starts carries a marker in its environment, which Prefect passes on
to the flow-run processes; after a stop, no process with the marker may be left.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows.deployments import NIGHTLY_CRON, SCORING, TRAINING, build_deployments
from tests.conftest import run_cli, run_cli_process
from tests.support import (
    REPO,
    free_port,
    seed_database,
    synthetic_digits,
    wait_healthy,
    write_mirror,
)

pytestmark = pytest.mark.usefixtures("prefect_api")

TIMEZONE = "Europe/Paris"  # not UTC, so 02:00 local is not 02:00 UTC
POOL = "mnist-process"  # as in prefect.yaml
MARKER = "MNIST_E2E_MARKER"
RUN_TIMEOUT = 240


class Spawned:
    """A long-running process of the test in its own process group, tagged with a marker."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO):
        self.marker = uuid.uuid4().hex
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=cwd,
                env={**os.environ, **env, MARKER: self.marker},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> list[int]:
        """PIDs of live processes carrying this marker (the process and its descendants)."""
        return marked_processes(self.marker)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the process itself (not its group) and wait; None if it did not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Last resort for teardown: SIGKILL the group and anything else with the marker."""
        for pid in [self.proc.pid, *self.alive()]:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def marked_processes(marker: str) -> list[int]:
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie is gone, only not yet reaped by its parent
                    pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def wait_until_gone(spawned: Spawned, timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := spawned.alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def prefect(*args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def deployment_run(name: str, **params) -> tuple[subprocess.CompletedProcess, str]:
    """``prefect deployment run NAME --param k=<json> … --watch``; returns (result, run id)."""
    flags = [f"--param={key}={json.dumps(value)}" for key, value in params.items()]
    done = prefect("deployment", "run", name, *flags, "--watch", timeout=RUN_TIMEOUT)
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout + done.stderr
    return done, found.group(1)


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def wait_for_deployments(spawned: Spawned, timeout: float = 120) -> None:
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with client() as c:
        while True:
            assert spawned.proc.poll() is None, spawned.output()
            try:
                deployments = [c.read_deployment_by_name(n) for n in (TRAINING, SCORING)]
                if all(d.work_pool_name is None for d in deployments):  # served, not pooled
                    return
            except ObjectNotFound:
                pass
            assert time.monotonic() < deadline, spawned.output()
            time.sleep(0.5)


def task_states(flow_run_id: str) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with client() as c:
        runs = c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    return {run.name: run.state.name for run in runs}


def champion(artifacts: Path) -> str:
    return json.loads((artifacts / "models" / "champion.json").read_text())["version"]


def versions(artifacts: Path) -> list[str]:
    return sorted(p.name for p in (artifacts / "models").iterdir() if p.is_dir())


def write_csv(path: Path, n: int) -> None:
    images, _ = synthetic_digits(n, seed=11)
    with path.open("w") as f:
        f.write(",".join(f"pixel{k}" for k in range(784)) + "\n")
        for row in images.reshape(n, 784):
            f.write(",".join(map(str, row)) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deployments")
    checksums = write_mirror(root / "mirror")
    return {"root": root, "mirror": root / "mirror", "checksums": checksums}


@pytest.fixture(scope="module")
def served(world, prefect_api):
    """``mnist-pipeline serve`` on its own artifacts root, deployments registered."""
    artifacts = world["root"] / "served-artifacts"
    spawned = Spawned(
        [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
         "--timezone", TIMEZONE, "--poll-seconds", "1"],
        env={"MNIST_CHECKSUMS_FILE": str(world["checksums"])},
        log=world["root"] / "serve.log",
    )  # fmt: skip
    try:
        wait_for_deployments(spawned)
        yield {"spawned": spawned, "artifacts": artifacts}
    finally:
        spawned.kill()


# --- the serve route ---------------------------------------------------------------------


@pytest.mark.e2e
def test_nightly_deployment_runs_at_2am_in_its_timezone_one_at_a_time(served):
    with client() as c:
        nightly = c.read_deployment_by_name(TRAINING)
        (schedule,) = nightly.schedules
        assert schedule.active and not nightly.paused
        assert schedule.schedule.cron == NIGHTLY_CRON == "0 2 * * *"
        assert schedule.schedule.timezone == TIMEZONE
        assert nightly.parameters == {"preset": "default", "artifacts": str(served["artifacts"])}
        assert nightly.global_concurrency_limit.limit == 1
        assert nightly.concurrency_options.collision_strategy.value == "ENQUEUE"
        batch = c.read_deployment_by_name(SCORING)
        assert batch.schedules == []
        assert set(batch.parameter_openapi_schema["properties"]) >= {
            "inputs", "output_dir", "model", "artifacts",
        }  # fmt: skip

        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        deadline = time.monotonic() + 60
        while not (
            runs := c.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id]))
            )
        ):
            assert time.monotonic() < deadline, "the server scheduled no nightly run"
            time.sleep(1)
    starts = sorted(r.expected_start_time.astimezone(ZoneInfo(TIMEZONE)) for r in runs)
    assert starts[0] > datetime.now(ZoneInfo(TIMEZONE))
    assert {(s.hour, s.minute) for s in starts} == {(2, 0)}


@pytest.mark.e2e
def test_training_deployment_run_completes_and_promotes_a_champion(served, world):
    artifacts = served["artifacts"]
    done, run_id = deployment_run(TRAINING, mirror=str(world["mirror"]), epochs=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Flow run finished successfully in 'Completed'" in done.stdout
    (version,) = versions(artifacts)
    assert champion(artifacts) == version
    assert set(task_states(run_id).values()) == {"Completed"}


@pytest.mark.e2e
def test_deployment_run_after_a_cli_run_with_the_same_parameters_is_fully_cached(served, world):
    artifacts = served["artifacts"]
    cli = run_cli(
        "train", "--mirror", str(world["mirror"]), "--epochs", "3",
        "--artifacts", str(artifacts), env={"MNIST_CHECKSUMS_FILE": str(world["checksums"])},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    before = versions(artifacts)
    done, run_id = deployment_run(TRAINING, mirror=str(world["mirror"]), epochs=3)
    assert done.returncode == 0, done.stdout + done.stderr
    states = task_states(run_id)
    assert len(states) == 10 and set(states.values()) == {"Cached"}, states
    assert versions(artifacts) == before


@pytest.mark.e2e
def test_scoring_deployment_writes_predictions_with_the_champion(served, world, tmp_path):
    write_csv(tmp_path / "digits.csv", 20)
    done, run_id = deployment_run(
        SCORING, inputs=[str(tmp_path / "digits.csv")], output_dir=str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with (tmp_path / "out" / "digits.predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and list(rows[0]) == ["ImageId", "Label", "Confidence"]
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as c:
        (summary,) = c.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)])
            )
        )
    assert summary.description == f"scored with model {champion(served['artifacts'])}"


@pytest.mark.e2e
def test_stopping_serve_leaves_no_process_and_keeps_the_schedule(served):
    spawned = served["spawned"]
    assert spawned.stop(signal.SIGTERM) == 143, spawned.output()  # 128 + SIGTERM
    assert wait_until_gone(spawned) == []
    with client() as c:
        nightly = c.read_deployment_by_name(TRAINING)
    assert not nightly.paused and all(s.active for s in nightly.schedules)


# --- the one-command stack ---------------------------------------------------------------


@pytest.mark.e2e
def test_stack_serves_overlapping_training_runs_one_at_a_time_and_stops_cleanly(world, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    artifacts = tmp_path / "artifacts"
    database = seed_database(artifacts / ".prefect" / "prefect.db")
    spawned = Spawned(
        [sys.executable, "-m", "cli.main", "stack", "--port", str(port),
         "--artifacts", str(artifacts), "--poll-seconds", "1"],
        env={
            "MNIST_CHECKSUMS_FILE": str(world["checksums"]),
            # The stack's server retries a run that waits for the slot after 1 s, not 30 s.
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
        },
        log=tmp_path / "stack.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            wait_healthy(f"{api}/health", timeout=180, proc=spawned.proc)
            wait_for_deployments(spawned)
            # The UI is told to call the API on the stack's own port (issue 16).
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings") as answer:
                assert json.load(answer)["api_url"] == api
            # A "nightly" and a "manual" run at once, both doing real work. Both are due
            # at the same moment, just beyond the runner's 10 s prefetch window, so that
            # one poll fetches both and they contend for the slot however loaded the
            # machine is (due at once, a busy runner could fetch the second only after
            # the first, a few seconds long, had finished).
            due = datetime.now(UTC) + timedelta(seconds=12)
            runs = [
                run_deployment(
                    TRAINING, timeout=0, scheduled_time=due,
                    parameters={"mirror": str(world["mirror"]), "epochs": e, "force": True},
                )
                for e in (2, 3)
            ]  # fmt: skip
            histories = [wait_final(run.id) for run in runs]
        for history in histories:
            assert history[-1][0] == "Completed", histories
        # The stack's history is the root's own database.
        with contextlib.closing(sqlite3.connect(database)) as db:
            recorded = {row[0] for row in db.execute("SELECT id FROM flow_run")}
        assert {str(run.id) for run in runs} <= recorded, recorded
        assert "AwaitingConcurrencySlot" in [name for h in histories for name, _ in h]
        first, second = sorted(histories, key=lambda h: started(h))
        assert started(second) >= dict(first)["Completed"], histories  # no overlap
        from core import registry

        assert len(versions(artifacts)) == 2
        registry.load(artifacts / "models")  # the champion is intact: its SHA-256 checks out
        assert spawned.stop(signal.SIGTERM) == 143, spawned.output()  # 128 + SIGTERM
        assert wait_until_gone(spawned) == [], spawned.output()
    finally:
        spawned.kill()


def wait_final(flow_run_id: uuid.UUID, timeout: float = RUN_TIMEOUT) -> list[tuple[str, datetime]]:
    """Wait until the flow run is final; return its (state name, timestamp) history."""
    deadline = time.monotonic() + timeout
    with client() as c:
        while not c.read_flow_run(flow_run_id).state.is_final():
            assert time.monotonic() < deadline, f"flow run {flow_run_id} not final"
            time.sleep(0.5)
        states = c.read_flow_run_states(flow_run_id)
    return [(s.name, s.timestamp) for s in sorted(states, key=lambda s: s.timestamp)]


def started(history: list[tuple[str, datetime]]) -> datetime:
    return next(ts for name, ts in history if name == "Running")


def test_serve_without_a_server_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mnist-pipeline serve: error: no Prefect server configured: start one with "
        "`mnist-pipeline stack`, or set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) "
        "to a running `prefect server`"
    ]


def test_stack_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli_process("stack", "--port", str(port), "--artifacts", str(tmp_path))
    assert done.returncode == 2
    assert f"mnist-pipeline stack: error: port {port} on 127.0.0.1 is in use" in done.stderr
    assert not (tmp_path / ".prefect" / "prefect.db").exists()


def test_deployments_carry_the_absolute_artifacts_root_and_the_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nightly, batch = build_deployments(Path("rel"), timezone="America/New_York")
    assert (nightly.flow_name, nightly.name) == tuple(TRAINING.split("/"))
    assert (batch.flow_name, batch.name) == tuple(SCORING.split("/"))
    assert nightly.entrypoint == "flows.training.training_flow"
    assert batch.entrypoint == "flows.scoring.scoring_flow"
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "America/New_York")
    assert nightly.parameters == {"preset": "default", "artifacts": str(tmp_path / "rel")}
    assert nightly.concurrency_limit == 1
    assert nightly.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert batch.parameters == {"artifacts": str(tmp_path / "rel")}
    assert not batch.schedules and batch.concurrency_limit is None


def test_serve_rejects_an_unknown_timezone(tmp_path):
    done = run_cli_process("serve", "--artifacts", str(tmp_path), "--timezone", "Mars/Olympus")
    assert done.returncode == 2
    assert "unknown timezone 'Mars/Olympus'" in done.stderr
    assert "Traceback" not in done.stderr


# --- the work-pool route -----------------------------------------------------------------


@pytest.mark.e2e
def test_work_pool_route_runs_both_deployments_on_a_worker(world, tmp_path):
    created = prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with client() as c:
        assert c.read_deployment_by_name(TRAINING).work_pool_name == POOL
        assert c.read_deployment_by_name(SCORING).work_pool_name == POOL

    artifacts = tmp_path / "artifacts"
    worker = Spawned(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
        env={
            "MNIST_PIPELINE_HOME": str(REPO),
            "MNIST_ARTIFACTS_DIR": str(artifacts),
            "MNIST_CHECKSUMS_FILE": str(world["checksums"]),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        },
        log=tmp_path / "worker.log",
        cwd=tmp_path,  # runs find the code through MNIST_PIPELINE_HOME, not the cwd
    )
    try:
        done, _ = deployment_run(TRAINING, mirror=str(world["mirror"]), epochs=2)
        assert done.returncode == 0, done.stdout + done.stderr + worker.output()
        (version,) = versions(artifacts)
        assert champion(artifacts) == version

        write_csv(tmp_path / "digits.csv", 10)
        done, _ = deployment_run(
            SCORING, inputs=[str(tmp_path / "digits.csv")], output_dir=str(tmp_path / "out")
        )
        assert done.returncode == 0, done.stdout + done.stderr + worker.output()
        assert (tmp_path / "out" / "digits.predictions.csv").is_file()

        # Ctrl-C. Prefect 3.9.1's process worker has been seen to miss a graceful stop
        # (interrupted soon after it started); a second interrupt is its own hard stop.
        if worker.stop(signal.SIGINT, timeout=10) is None:
            worker.stop(signal.SIGINT, timeout=20)
        assert worker.proc.poll() is not None, worker.output()
        assert wait_until_gone(worker) == [], worker.output()
    finally:
        worker.kill()


@pytest.mark.e2e
def test_worker_without_a_checkout_fails_the_run_with_one_line(tmp_path, monkeypatch):
    """Started as `prefect deploy` suggests, without MNIST_PIPELINE_HOME, a worker crashed
    the run 11 s in on FileNotFoundError for flows/scoring.py; now the pull step fails it."""
    monkeypatch.delenv("MNIST_PIPELINE_HOME", raising=False)
    created = prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("--no-prompt", "deploy", "--name", SCORING.split("/")[1])
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    write_csv(tmp_path / "digits.csv", 5)
    not_a_checkout = tmp_path / "elsewhere"
    not_a_checkout.mkdir()
    fix = (
        f"start the worker with MNIST_PIPELINE_HOME={REPO} "
        "(the mnist-pipeline checkout its Python runs from)"
    )
    worker = Spawned(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
        env={"PREFECT_WORKER_QUERY_SECONDS": "1"},
        log=tmp_path / "worker.log",
        cwd=tmp_path,
    )
    try:
        # The second run sets the variable through the pool's job variables, as a user may.
        for job_env, line in [
            ({}, f"MNIST_PIPELINE_HOME is not set on this worker: {fix}"),
            (
                {"MNIST_PIPELINE_HOME": str(not_a_checkout)},
                f"MNIST_PIPELINE_HOME={not_a_checkout} is not a checkout of mnist-pipeline: {fix}",
            ),
        ]:
            done = prefect(
                "deployment", "run", SCORING, "--watch",
                f"--param=inputs={json.dumps([str(tmp_path / 'digits.csv')])}",
                f"--param=output_dir={json.dumps(str(tmp_path / 'out'))}",
                f"--job-variable=env={json.dumps(job_env)}",
                env={"COLUMNS": "1000"}, timeout=RUN_TIMEOUT,
            )  # fmt: skip
            assert done.returncode == 1, done.stdout + done.stderr + worker.output()
            assert "Flow run finished in state 'Failed'." in done.stdout
            assert f"mnist-pipeline.worker.misconfigured * {line}\n" in done.stdout, done.stdout
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
            with client() as c:
                state = c.read_flow_run(run_id).state
            assert (state.name, state.message) == ("Failed", line)
            assert f" - {line}\n" in worker.output()
        assert "Traceback" not in worker.output() and "FileNotFoundError" not in worker.output()
        assert not (tmp_path / "out").exists()
        if worker.stop(signal.SIGINT, timeout=10) is None:
            worker.stop(signal.SIGINT, timeout=20)
        assert wait_until_gone(worker) == [], worker.output()
    finally:
        worker.kill()


# --- timeouts ----------------------------------------------------------------------------

_TIMEOUTS = """
from pathlib import Path
from prefect.flows import load_flow_from_entrypoint
from flows.deployments import build_deployments
for deployment in build_deployments(Path("artifacts")):
    print(deployment.name, load_flow_from_entrypoint(deployment.entrypoint).timeout_seconds)
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["nightly 3600.0", "batch 21600.0"]),
        ({"MNIST_TRAINING_TIMEOUT": "90", "MNIST_SCORING_TIMEOUT": "0"},
         ["nightly 90.0", "batch None"]),
    ],
)  # fmt: skip
def test_both_deployments_run_their_flow_with_a_timeout(env, expected):
    # A deployment run loads its flow from the entrypoint, in the serve process's or the
    # worker's environment: this is the timeout such a run gets.
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_TIMEOUT")}
    done = subprocess.run(
        [sys.executable, "-c", _TIMEOUTS], cwd=REPO, env={**clean, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_a_bad_timeout_setting_is_a_one_line_usage_error(tmp_path):
    done = run_cli("train", "--artifacts", str(tmp_path), env={"MNIST_TRAINING_TIMEOUT": "soon"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "mnist-pipeline train: error: MNIST_TRAINING_TIMEOUT='soon': expected seconds "
        "(0 for no limit), e.g. 3600"
    )


def test_a_training_run_over_its_time_limit_ends_timed_out(world, tmp_path):
    artifacts = tmp_path / "artifacts"
    done = run_cli(
        "train", "--mirror", str(world["mirror"]), "--checksums", str(world["checksums"]),
        "--artifacts", str(artifacts), "--epochs", "1500", "--batch-size", "4",
        env={"MNIST_TRAINING_TIMEOUT": "3"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        "mnist-pipeline train: error: the run exceeded its time limit: "
        "Scope timed out after 3.0 second(s)."
    ) in done.stderr.splitlines()
    with client() as c:
        runs = c.read_flow_runs(sort="START_TIME_DESC", limit=50)
    (run,) = [r for r in runs if r.parameters.get("artifacts") == str(artifacts)]
    assert run.state.name == "TimedOut" and run.state.is_failed()
    assert run.state.message == "Flow run exceeded timeout of 3.0 second(s)"
    assert not (artifacts / "models").exists() or not list((artifacts / "models").iterdir())


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("host", "expected"), [("127.0.0.1", "http://127.0.0.1:{port}/api"), ("0.0.0.0", "/api")]
)
def test_the_stack_servers_ui_calls_its_own_api_on_any_host(tmp_path, host, expected):
    """--host: the UI's API URL names the host and port, or for every interface the
    relative /api (a browser elsewhere calls back the address it loaded the UI from)."""
    from cli.stack import start_server, stop_server

    port = free_port()
    seed_database(tmp_path / "home" / "prefect.db")
    proc, api = start_server(port, tmp_path / "home", host)
    try:
        assert api == f"http://127.0.0.1:{port}/api"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings") as answer:
            assert json.load(answer)["api_url"] == expected.format(port=port)
    finally:
        stop_server(proc)
