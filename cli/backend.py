"""Which Prefect backend the CLI's flows talk to, and how the embedded one is run.

Like any Prefect project, the CLI honors the active Prefect profile and the ``PREFECT_*``
variables: with an API URL configured anywhere (``prefect config set PREFECT_API_URL=…``,
``prefect cloud login``, the environment), runs go there; an API that does not answer,
refuses this client, or stops answering mid-run ends the command with one line. Only
when none is configured do flows run on Prefect's embedded server, which lives and dies
with the command; its database is then kept under the artifacts root.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from core.errors import PipelineError
from core.storage import is_remote

# Either name sets the server's database (the second is Prefect's legacy alias).
DATABASE_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)
# A configured API that has not answered for this long mid-run ends the command (exit 1,
# one line). Left to Prefect, the running step retried its call for ~75 s, failed with a
# traceback, and the process then hung for minutes flushing logs and events at exit.
# Long enough that a busy server that is slow to answer does not end a healthy run.
API_SILENCE_SECONDS = 15.0
_PROBE_SECONDS = 2.0  # between /health probes
_PROBE_TIMEOUT_SECONDS = 5.0


def embedded_database_url(artifacts: Path) -> str:
    """The embedded server's SQLite database: ``<artifacts>/.prefect/prefect.db``."""
    return f"sqlite+aiosqlite:///{Path(artifacts) / '.prefect' / 'prefect.db'}"


@contextmanager
def in_process_backend(artifacts: Path | None = None) -> Iterator[None]:
    """Run the enclosed flows against the configured Prefect API, or else on Prefect's
    embedded server, with its database under ``artifacts`` (when given).

    Flow-run heartbeats stay as Prefect sets them. Turning them off on the embedded server
    (nothing reads them there) saved at most the ~1 s a flow waits for the heartbeat thread
    to wake; measured end to end it did not earn 10% (benchmarks/README.md, "CLI
    plumbing": warm ``train``, on/off median ratio 0.96 over 7 rounds), so it went.
    """
    from prefect.settings import (
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        get_current_settings,
        temporary_settings,
    )

    settings = get_current_settings()
    if settings.api.url:
        check_reachable(settings.api.url)
        with _api_watchdog(settings.api.url):
            yield
        return
    updates = {}
    # SQLite cannot live on an object store: with a store root, Prefect's own default
    # database (under PREFECT_HOME) serves instead.
    if artifacts is not None and not is_remote(artifacts) and not _database_configured(settings):
        (Path(artifacts) / ".prefect").mkdir(parents=True, exist_ok=True)
        updates[PREFECT_SERVER_DATABASE_CONNECTION_URL] = embedded_database_url(artifacts)
    # The server is stopped when this process exits; each flow run first waits until it
    # has recorded its task runs (flows.run_recorded).
    with temporary_settings(updates=updates):
        _start_embedded_server()
        yield


def _start_embedded_server() -> None:
    """Start Prefect's embedded server now if it is the first start on its SQLite database
    (for this Prefect version), holding a lock on that database until it has answered.

    The server migrates its database as it starts. Two commands starting together on a
    fresh artifacts root migrated the same file at once, and one of them printed ~110
    lines of uvicorn traceback (NoSuchTableError). With the lock (``prefect.db.lock``
    beside the database, fcntl) they take turns. The lock file then names the Prefect
    version that migrated the database; after that, the server starts as Prefect starts
    it, at the first flow run's first API call, so that a usage error found before any
    flow runs costs no server start (measured: `train --learning-rate -1` 3 s, not 10 s).
    """
    import prefect
    from prefect import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings().server
    if not settings.ephemeral.enabled:
        return
    url = settings.database.connection_url.get_secret_value()
    marker = f"migrated by prefect {prefect.__version__}\n"
    with _sqlite_lock(url) as (database, lock):
        if lock is None or (database.exists() and lock.read() == marker):
            return
        with get_client(sync_client=True) as client:
            client.hello()  # starts the server (a process-wide singleton) and waits for it
        lock.seek(0)
        lock.truncate()
        lock.write(marker)


@contextmanager
def _sqlite_lock(url: str) -> Iterator[tuple[Path | None, Any]]:
    """(database file, its lock file opened at the start), locked exclusively, for a
    SQLite ``url``; (None, None) for any other database, or without fcntl (Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    prefix = "sqlite+aiosqlite:///"
    if fcntl is None or not url.startswith(prefix) or ":memory:" in url:
        yield None, None
        return
    database = Path(url.removeprefix(prefix))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when this process dies
        lock.seek(0)
        yield database, lock


@contextmanager
def _api_watchdog(api_url: str) -> Iterator[None]:
    """End the command, exit 1 with one line, if ``api_url`` stops answering while the
    block runs: a thread probes its /health, and so does a block that fails."""
    done = threading.Event()
    threading.Thread(
        target=_watch_api, args=(api_url, done), name="api-watchdog", daemon=True
    ).start()
    try:
        yield
    except Exception:
        # Prefect's client gave up on the API first: end now, as the watchdog would,
        # rather than hang at exit sending the run's logs and events to nobody.
        if not _answers(api_url):
            _api_lost(api_url)
        raise
    finally:
        done.set()


def _watch_api(api_url: str, done: threading.Event) -> None:
    answered = time.monotonic()
    while not done.wait(_PROBE_SECONDS):
        if _answers(api_url):
            answered = time.monotonic()
        elif time.monotonic() - answered >= API_SILENCE_SECONDS and not done.is_set():
            _api_lost(api_url)


def _answers(api_url: str) -> bool:
    from flows.deployments import DeploymentError, check_api

    try:
        check_api(api_url, timeout=_PROBE_TIMEOUT_SECONDS)
    except DeploymentError:
        return False
    return True


def _api_lost(api_url: str) -> NoReturn:
    """End the process in one line: the run cannot record anything any more. What it
    already wrote is whole (files are renamed into place when complete), and its
    temporaries are removed, as after a stop signal (cli.signals)."""
    from cli.signals import exit_now

    # On a line of its own: Prefect's log shipping may have written "All connection
    # attempts failed" to stderr with no newline after it.
    exit_now(1, f"\nmnist-pipeline: error: the Prefect API at {api_url} stopped answering "
             "during the run")  # fmt: skip


class BackendUnreachable(PipelineError):
    """The configured Prefect API does not answer."""


class BackendRefused(PipelineError):
    """The configured Prefect API answers, but refuses this client (401 or 403)."""


def check_reachable(api_url: str) -> None:
    """Raise BackendUnreachable, in one line, unless something answers HTTP at ``api_url``.

    Without this, a server that is down (or a stale profile) surfaced as Prefect's
    "Failed to reach API" traceback from inside the first flow run.
    """
    from flows.deployments import DeploymentError, check_api

    try:
        check_api(api_url)
    except DeploymentError as exc:
        reason = str(exc).split("; ")[0]
        raise BackendUnreachable(
            f"{reason}: it is the API URL of your Prefect profile or PREFECT_API_URL "
            "(see `prefect config view`); start that server, or unset it to run on "
            "Prefect's embedded server"
        ) from None
    check_authorized(api_url)


def check_authorized(api_url: str) -> None:
    """Raise BackendRefused, in one line, if the API at ``api_url`` refuses this client.

    /health answers anyone; a server with an auth string (PREFECT_SERVER_API_AUTH_STRING)
    refuses every other call without the same PREFECT_API_AUTH_STRING, and the first flow
    run then failed with a 59-line traceback. Any other failure is left to the run.
    """
    import httpx
    from prefect import get_client
    from prefect.settings import get_current_settings

    try:
        with get_client(sync_client=True) as client:
            client.hello()
    except httpx.HTTPStatusError as exc:
        answer = exc.response
        if answer.status_code not in (401, 403):
            return
        api = get_current_settings().api
        server = "the server's PREFECT_SERVER_API_AUTH_STRING"
        if api.key and not api.auth_string:  # Prefect Cloud
            fix = "check PREFECT_API_KEY (`prefect cloud login`)"
        elif api.auth_string:
            fix = f"PREFECT_API_AUTH_STRING does not match {server}"
        else:
            fix = f"PREFECT_API_AUTH_STRING is not set: set it to {server}"
        raise BackendRefused(
            f"the Prefect API at {api_url} refused this client ({answer.status_code} "
            f"{answer.reason_phrase}): {fix}"
        ) from None
    except Exception:
        return


def _database_configured(settings: Any) -> bool:
    """True if the user chose the server's database, in the environment or the profile."""
    if any(os.environ.get(v) for v in DATABASE_VARIABLES):
        return True
    return "connection_url" in settings.server.database.model_fields_set
