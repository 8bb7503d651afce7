"""The one-command local stack: a ``prefect server`` on loopback, serving both deployments.

A server that other machines can reach needs an auth string: the Prefect API runs code
for whoever calls it (a deployment run executes the flow's code here), so ``stack``
refuses a non-loopback ``--host`` without PREFECT_SERVER_API_AUTH_STRING unless told
``--no-auth``, and gives its own clients (the runner, its flow runs) the same string.

Its database is the artifacts root's own SQLite file, ``.prefect/prefect.db``, which CLI
commands on that root use too when no stack runs: the stack's UI shows every run of the
root. ``--database`` (or PREFECT_SERVER_DATABASE_CONNECTION_URL) gives it PostgreSQL
instead, checked before the server starts (``cli.database``). While it runs, the stack
records its address and pid in ``.prefect/stack.json``, and the CLI's commands on that
root use its server (``cli.backend``) rather than start one of their own.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.database import DatabaseError, check_postgres, check_url, configured_database, is_postgres
from cli.root_database import embedded_database_url, migration_lock
from cli.stack_record import forget_stack, record_stack, running_stack
from flows.deployments import (
    NIGHTLY_CRON,
    SERVER_STARTUP_SECONDS,
    DeploymentError,
    check_schedule,
    serve,
)

# Addresses that mean "every interface": a browser cannot call them, and a client here
# reaches the server on loopback.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def server_env(
    home: Path,
    port: int,
    host: str = "127.0.0.1",
    auth_string: str | None = None,
    database: str | None = None,
) -> dict[str, str]:
    """The environment of a local ``prefect server``: its own home, no telemetry, no
    promotional pop-ups, a UI that calls the API on this host and port, the auth string
    if there is one (a profile's would not reach it: the server has its own home), and
    its ``database`` URL if given (in the environment, not on its command line, where
    ``ps`` would show a password).

    ``prefect server start --port N`` does not move the URL the UI is told to call
    (``/ui-settings``): that follows PREFECT_SERVER_API_HOST/PORT, 127.0.0.1:4200 by
    default, so on any other port every page said "Can't connect to Server API". A server
    on every interface (``--host 0.0.0.0``) tells the UI the relative ``/api`` instead,
    so a browser on another machine calls back the address it loaded the UI from. A
    PREFECT_UI_API_URL the user set wins over both (a server behind a reverse proxy).
    """
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    env.pop("PREFECT_API_URL", None)
    ui_api = configured_ui_api_url()
    env.pop("PREFECT_UI_API_URL", None)
    env.pop("PREFECT_SERVER_UI_API_URL", None)
    if ui_api:  # behind a reverse proxy, only the user knows the address browsers use
        env["PREFECT_UI_API_URL"] = ui_api
    elif host in WILDCARD_HOSTS:
        env["PREFECT_UI_API_URL"] = "/api"
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    if database:
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # Prefect's legacy alias
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
    return env


def stack_database(artifacts: Path, given: str | None = None) -> tuple[str, str | None]:
    """(URL, where it was chosen) of the stack's database: ``given`` (``--database``),
    else PREFECT_SERVER_DATABASE_CONNECTION_URL (or its alias) from the environment or
    the profile, as for any Prefect server; else (None) the root's SQLite file."""
    from prefect.settings import get_current_settings

    if given:
        return given, "--database"
    configured = configured_database(get_current_settings())
    if configured is not None:
        return configured
    return embedded_database_url(artifacts), None


def check_database(url: str, source: str | None) -> str | None:
    """Raise DeploymentError, one line that names ``source`` and what to do, unless the
    stack's server can use the database at ``url``; return PostgreSQL's version."""
    try:
        check_url(url)
        return check_postgres(url) if is_postgres(url) else None
    except DatabaseError as exc:
        raise DeploymentError(f"{source or 'database'}: {exc}") from None


def configured_ui_api_url() -> str | None:
    """The API URL the UI is to call, if the user set one (PREFECT_UI_API_URL, in the
    environment or the profile): e.g. the address of a reverse proxy in front of the
    server, or ``/api``."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().server.ui
    return ui.api_url if "api_url" in ui.model_fields_set else None


def configured_auth_string() -> str | None:
    """The server auth string configured here (PREFECT_SERVER_API_AUTH_STRING, in the
    environment or the profile), if any."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().server.api.auth_string
    return secret.get_secret_value() if secret is not None else None


def is_loopback(host: str) -> bool:
    """True if only this machine can reach a server bound to ``host``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or every interface ("")
        return False


def listen_address(host: str, port: int) -> str:
    """``host``:``port`` as the server binds it, e.g. 0.0.0.0:4200 or [::]:4200."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_host(host: str) -> str:
    """The address this machine's own clients use for a server bound to ``host``."""
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the server binds it: a port whose last connections are in TIME_WAIT (a stack
        # stopped a moment ago) is free; one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start_server(
    port: int,
    home: Path,
    host: str = "127.0.0.1",
    auth_string: str | None = None,
    database: str | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on ``host``:``port`` in its own process group, logging
    to ``home``/server.log, on ``database`` (default: Prefect's, under ``home``), and wait
    until it is healthy; return (process, API URL)."""
    if not port_is_free(port, host):
        raise DeploymentError(
            f"port {port} on {host} is in use or cannot be bound (a server already running?): "
            "choose another with --port, or point PREFECT_API_URL at that server and run "
            "`mnist-pipeline serve`"
        )
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host,
             "--port", str(port)],
            env=server_env(home, port, host, auth_string, database),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own group: Ctrl-C reaches only us, and we stop it after the runner.
            start_new_session=True,
        )  # fmt: skip
    api = f"http://{client_host(host)}:{port}/api"
    try:
        wait_healthy(api, SERVER_STARTUP_SECONDS, proc, log)
    except BaseException:
        stop_server(proc)
        raise
    return proc, api


def wait_healthy(api: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    """Poll ``api``/health until it answers 200; DeploymentError if ``proc`` dies or time runs
    out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise DeploymentError(
                f"prefect server exited with code {proc.returncode}: {tail[0]} (log: {log})"
            )
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise DeploymentError(f"prefect server not healthy after {timeout:.0f} s (log: {log})")


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group may outlive its leader for a moment; make sure nothing of it is left.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_stack(
    port: int,
    artifacts: Path,
    timezone: str = "UTC",
    cron: str = NIGHTLY_CRON,
    home: Path | None = None,
    poll_seconds: float | None = None,
    on_ready: Callable[[str], None] | None = None,
    host: str = "127.0.0.1",
    database: str | None = None,
    labeled: list[str] | None = None,
) -> None:
    """Start a local ``prefect server`` (home ``artifacts``/.prefect-server unless ``home``)
    on ``database`` (checked already; default: the root's SQLite file), serve both
    deployments against it, and stop the server when serving ends (Ctrl-C or SIGTERM).
    ``on_ready(api_url)`` is called once the server is healthy and recorded in the root's
    ``.prefect/stack.json`` (removed on the way out). With an auth string configured, the
    server requires it, and the runner and its flow runs send it."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    check_schedule(cron, timezone)
    already = running_stack(artifacts)
    if already is not None:
        raise DeploymentError(
            f"a stack is already running on {artifacts} (pid {already['pid']}, "
            f"{already['api']}): stop it first, or give this one another --artifacts"
        )
    home = home or Path(artifacts) / ".prefect-server"
    database = database or embedded_database_url(artifacts)
    auth = configured_auth_string()
    # Until the runner installs its own handler, SIGTERM must still stop the server.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    proc = None
    try:
        # On SQLite, the lock that a command's embedded server takes to migrate the same
        # file; the record is written before it is released (see cli.stack_record.running_stack).
        with migration_lock(database):
            proc, api = start_server(port, home, host, auth, database)
            record_stack(artifacts, api, auth=bool(auth))
        if on_ready is not None:
            on_ready(api)
        # For this process, and for the flow-run processes through the environment.
        updates = {PREFECT_API_URL: api}
        os.environ["PREFECT_API_URL"] = api
        if auth:
            updates[PREFECT_API_AUTH_STRING] = auth
            os.environ["PREFECT_API_AUTH_STRING"] = auth
        with temporary_settings(updates=updates):
            serve(artifacts, timezone, cron, poll_seconds, labeled=labeled)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_stack(artifacts)  # first: no new command may pick a stopping server
        if proc is not None:
            stop_server(proc)
