"""The stack beyond loopback needs an auth string, and clients without it get one line.

The Prefect API runs code for whoever calls it (a deployment run executes the flow's code
on the serving machine), so ``stack --host`` other than loopback refuses to start without
PREFECT_SERVER_API_AUTH_STRING unless given ``--no-auth``; with the string, the stack's
own runner and flow runs send it, and a ``train`` without it is a one-line error.
"""

from __future__ import annotations

import secrets
import time

import pytest

from flows.deployments import SCORING, TRAINING
from tests.support import StackProcess, free_port, run_cli, run_cli_exactly, user_env, write_mirror


@pytest.mark.e2e  # a process each: the refusal must come before any server is started
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_stack_beyond_loopback_without_an_auth_string_refuses_to_start(tmp_path, host):
    # It started without a word, and then anyone on the network could run code here.
    started = time.monotonic()
    done = run_cli_exactly("stack", "--host", host, "--port", str(free_port()),
                           "--artifacts", str(tmp_path / "art"), env=user_env(),
                           timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"mnist-pipeline stack: error: --host {host}: ")
    assert "PREFECT_SERVER_API_AUTH_STRING" in line and line.endswith("or pass --no-auth")
    assert not (tmp_path / "art" / ".prefect-server").exists(), "no server was started"
    assert time.monotonic() - started < 30


@pytest.mark.e2e
def test_a_stack_with_no_auth_starts_and_says_where_it_listens(tmp_path):
    # It printed http://127.0.0.1:PORT for a server listening on every interface.
    port = free_port()
    stack = StackProcess(tmp_path / "art", "--host", "0.0.0.0", "--port", str(port), "--no-auth",
                  env=user_env())  # fmt: skip
    try:
        line = stack.line("prefect server: ")
        assert line.startswith(
            f"prefect server: listening on 0.0.0.0:{port} (every interface), "
            f"from this machine http://127.0.0.1:{port} "
        ), line
        assert stack.stop() == 143, stack.err.read_text()
    finally:
        stack.kill()


@pytest.mark.e2e
def test_a_stack_with_an_auth_string_serves_its_clients_and_refuses_others(tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    secret = secrets.token_urlsafe(16)
    checksums = write_mirror(tmp_path / "mirror")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    stack = StackProcess(
        tmp_path / "art", "--host", "0.0.0.0", "--port", str(port), "--poll-seconds", "1",
        env=user_env(PREFECT_SERVER_API_AUTH_STRING=secret, MNIST_CHECKSUMS_FILE=str(checksums)),
    )  # fmt: skip
    data = ["--mirror", str(tmp_path / "mirror"), "--checksums", str(checksums),
            "--artifacts", str(tmp_path / "cli-art")]  # fmt: skip
    try:
        assert "PREFECT_API_AUTH_STRING" in stack.line("in other shells: ")
        # The stack's runner registered both deployments: it sent the string.
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: secret}):
            deadline = time.monotonic() + 120
            with get_client(sync_client=True) as client:
                while len(client.read_deployments()) < 2:
                    assert time.monotonic() < deadline, stack.err.read_text()
                    time.sleep(0.5)
                names = {f"{client.read_flow(d.flow_id).name}/{d.name}"
                         for d in client.read_deployments()}  # fmt: skip
            assert names == {TRAINING, SCORING}
            # Its flow runs send it too: a deployment run goes all the way.
            run = run_deployment(
                TRAINING, timeout=240,
                parameters={"mirror": str(tmp_path / "mirror"), "epochs": 1},
            )  # fmt: skip
            assert run.state.is_completed(), (run.state, stack.err.read_text())

        # A command on the stack's root, in a shell where the server's string is exported
        # (as for the stack) and no API URL is set: it uses the stack, sending that string.
        ingest = ["ingest", "--mirror", str(tmp_path / "mirror"), "--checksums",
                  str(checksums), "--artifacts", str(tmp_path / "art")]  # fmt: skip
        exported = user_env(PREFECT_SERVER_API_AUTH_STRING=secret)
        done = run_cli_exactly(*ingest, env=exported)
        assert done.returncode == 0, done.stderr
        assert "Prefect server: the stack at " in done.stderr, done.stderr

        # A client without the string, or with a wrong one: one line, exit 1. `train` runs
        # in this process (tests.support.run_cli), which has no auth string of its own.
        for variable in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
            monkeypatch.delenv(variable, raising=False)
        for client_env, reason in (
            ({}, "PREFECT_API_AUTH_STRING is not set: set it to"),
            ({"PREFECT_API_AUTH_STRING": "wrong"}, "PREFECT_API_AUTH_STRING does not match"),
        ):
            done = run_cli("train", *data, env={"PREFECT_API_URL": api, **client_env})
            assert done.returncode == 1, done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert line == (
                f"mnist-pipeline train: error: the Prefect API at {api} refused this client "
                f"(401 Unauthorized): {reason} the server's PREFECT_SERVER_API_AUTH_STRING"
            )
        done = run_cli_exactly("serve", "--artifacts", str(tmp_path / "cli-art"),
                               env=user_env(PREFECT_API_URL=api))  # fmt: skip
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"mnist-pipeline serve: error: the Prefect API at {api} refused")
        done = run_cli(
            "train", *data, env={"PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": secret}
        )
        assert done.returncode == 0, done.stderr
        assert stack.stop() == 143, stack.err.read_text()
    finally:
        stack.kill()
    # The exported string reached the embedded server of every later command in that
    # shell too, and the command, with no PREFECT_API_AUTH_STRING, was refused by its own
    # server: a 401 traceback. It must send the string to its own server as well.
    done = run_cli_exactly(*ingest, "--force", env=exported)
    assert done.returncode == 0, done.stderr
    assert "Prefect server: embedded, for this command only" in done.stderr
    assert "Traceback" not in done.stderr
