"""Which Prefect backend the CLI's flows talk to, and how the embedded one is run.

Like any Prefect project, the CLI honors the active Prefect profile and the ``PREFECT_*``
variables: with an API URL configured anywhere (``prefect config set PREFECT_API_URL=…``,
``prefect cloud login``, the environment), runs go there; an API that does not answer,
refuses this client, or stops answering mid-run ends the command with one line. With
none configured, a ``mnist-pipeline stack`` running on the same artifacts root serves
the command (it records itself in ``<artifacts>/.prefect/stack.json``): its runs then
show in the stack's UI, and the command saves the ~5 s of starting a server. Only when
there is none either do flows run on Prefect's embedded server, which lives and dies with
the command; its database is then the artifacts root's ``.prefect/prefect.db``, which a
stack on SQLite serves too, so one root keeps one run history.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from core.errors import PipelineError
from core.files import atomic_write_text, pid_alive
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
# A stack recorded in stack.json whose /health does not answer within this is stale: a
# live server answers in milliseconds, even busy (the probe reads no database).
STACK_PROBE_SECONDS = 3.0


def embedded_database_url(artifacts: Path) -> str:
    """The root's SQLite database, ``<artifacts>/.prefect/prefect.db``: the embedded
    server's, and a stack's unless it is given another."""
    return f"sqlite+aiosqlite:///{Path(artifacts) / '.prefect' / 'prefect.db'}"


def stack_record(artifacts: Path) -> Path:
    """Where a running stack records itself: ``<artifacts>/.prefect/stack.json``."""
    return Path(artifacts) / ".prefect" / "stack.json"


def record_stack(artifacts: Path, api_url: str, auth: bool) -> Path:
    """Record this process as the stack serving ``api_url`` on ``artifacts`` (atomically:
    a reader sees the whole record or none); return the record's path."""
    path = stack_record(artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"api": api_url, "pid": os.getpid(), "auth": auth}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def forget_stack(artifacts: Path) -> None:
    """Remove the stack record of ``artifacts`` if this process wrote it."""
    path = stack_record(artifacts)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def running_stack(artifacts: Path) -> dict[str, Any] | None:
    """The record (``api``, ``pid``, ``auth``) of the stack running on ``artifacts``, if
    one is. A stale record (unreadable, its pid gone, or no answer at its address within
    STACK_PROBE_SECONDS) is removed, and None returned."""
    path = stack_record(artifacts)
    if not path.parent.is_dir():
        return None
    # A stack on SQLite writes its record while it holds the database's lock, before its
    # server's first answer: waiting for that lock here means a command that starts
    # beside a starting stack uses it rather than a second server on the same file.
    with _sqlite_lock(embedded_database_url(artifacts), shared=True):
        try:
            text = path.read_text()
        except OSError:
            return None
    try:
        record = json.loads(text)
        api, pid = str(record["api"]), int(record["pid"])
    except (ValueError, KeyError, TypeError):
        record = None
    if record is not None and pid_alive(pid) and _answers(api, STACK_PROBE_SECONDS):
        return record
    try:  # unless a new stack has replaced it meanwhile
        if path.read_text() == text:
            path.unlink()
    except OSError:
        pass
    return None


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
    local = artifacts is not None and not is_remote(artifacts)
    stack = running_stack(Path(artifacts)) if local else None
    if stack is not None:
        with _on_stack(stack, stack_record(Path(artifacts))):
            yield
        return
    # The embedded server takes this user's PREFECT_SERVER_API_AUTH_STRING too (exported
    # for a stack, say): its client, this command, must then send the same string.
    updates = _server_auth_for_client(settings)
    # SQLite cannot live on an object store: with a store root, Prefect's own default
    # database (under PREFECT_HOME) serves instead.
    if local and not _database_configured(settings):
        (Path(artifacts) / ".prefect").mkdir(parents=True, exist_ok=True)
        updates[PREFECT_SERVER_DATABASE_CONNECTION_URL] = embedded_database_url(artifacts)
    # The server is stopped when this process exits; each flow run first waits until it
    # has recorded its task runs (flows.run_recorded).
    with temporary_settings(updates=updates):
        database = get_current_settings().server.database.connection_url.get_secret_value()
        with _said_before_the_first_run(
            f"Prefect server: embedded, for this command only (no PREFECT_API_URL, and no "
            f"stack running on this artifacts root); run history in {describe_database(database)}"
        ):
            _start_embedded_server()
            yield


@contextmanager
def _on_stack(record: dict[str, Any], path: Path) -> Iterator[None]:
    """Run the block against the stack of ``record`` (see running_stack)."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    api = record["api"]
    updates: dict[Any, Any] = {PREFECT_API_URL: api}
    # The stack took its auth string from this user's environment or profile, where the
    # server's variable is set; a client of it on this machine sends the same string.
    if record.get("auth"):
        updates.update(_server_auth_for_client(get_current_settings()))
    with temporary_settings(updates=updates):
        check_authorized(api)
        with (
            _said_before_the_first_run(
                f"Prefect server: the stack at {api.removesuffix('/api')} (pid {record['pid']}, "
                f"from {path}); this command's runs show in its UI"
            ),
            _api_watchdog(api),
        ):
            yield


def _server_auth_for_client(settings: Any) -> dict[Any, Any]:
    """{PREFECT_API_AUTH_STRING: the server's string}, for a client of a server on this
    machine that takes this user's PREFECT_SERVER_API_AUTH_STRING, when the client has no
    string of its own; else {}."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    server_secret = settings.server.api.auth_string
    if settings.api.auth_string or server_secret is None:
        return {}
    return {PREFECT_API_AUTH_STRING: server_secret.get_secret_value()}


@contextmanager
def _said_before_the_first_run(line: str) -> Iterator[None]:
    """Log ``line`` once, just before the block's first flow run logs its beginning.

    Not at once: a command that stops on a usage error before any run keeps its one
    line of error. The first record of Prefect's flow-run logger (``Beginning flow run
    ...``) triggers it, through a filter on that logger, removed when the block ends.
    """
    flow_runs = logging.getLogger("prefect.flow_runs")
    said = threading.Event()

    def before_first_record(record: logging.LogRecord) -> bool:
        if not said.is_set():
            said.set()
            logging.getLogger("prefect.mnist-pipeline").info(line)
        return True

    flow_runs.addFilter(before_first_record)
    try:
        yield
    finally:
        flow_runs.removeFilter(before_first_record)


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
    from prefect import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings().server
    if not settings.ephemeral.enabled:
        return
    url = settings.database.connection_url.get_secret_value()
    marker = _migrated_marker()
    with _sqlite_lock(url) as (database, lock):
        if lock is None or (database.exists() and lock.read() == marker):
            return
        with get_client(sync_client=True) as client:
            client.hello()  # starts the server (a process-wide singleton) and waits for it
        lock.seek(0)
        lock.truncate()
        lock.write(marker)


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the lock of the SQLite database ``url`` while a server starts on it (and
    migrates it), then mark it migrated by this Prefect version: ``stack`` does this, as
    ``_start_embedded_server`` does for a command's own server. Nothing for PostgreSQL,
    which Prefect's migrations lock themselves."""
    with _sqlite_lock(url) as (_, lock):
        yield
        if lock is not None:
            lock.seek(0)
            lock.truncate()
            lock.write(_migrated_marker())
            lock.flush()


def _migrated_marker() -> str:
    import prefect

    return f"migrated by prefect {prefect.__version__}\n"


@contextmanager
def _sqlite_lock(url: str, shared: bool = False) -> Iterator[tuple[Path | None, Any]]:
    """(database file, its lock file opened at the start), locked (exclusively, unless
    ``shared``), for a SQLite ``url``; (None, None) for any other database, or without
    fcntl (Windows)."""
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
        # Released when closed, or when this process dies.
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
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


def _answers(api_url: str, timeout: float = _PROBE_TIMEOUT_SECONDS) -> bool:
    from flows.deployments import DeploymentError, check_api

    try:
        check_api(api_url, timeout=timeout)
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
    return configured_database(settings) is not None


def configured_database(settings: Any) -> tuple[str, str] | None:
    """(URL, where it was set) of the server database the user chose in the environment
    or the profile (Prefect's ``settings``), if any."""
    for variable in DATABASE_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable], variable
    if "connection_url" in settings.server.database.model_fields_set:
        url = settings.server.database.connection_url.get_secret_value()
        return url, f"{DATABASE_VARIABLES[0]} (Prefect profile)"
    return None


def describe_database(url: str) -> str:
    """A database URL for a line of output: a SQLite file's path, else the URL without
    its password."""
    from cli.database import SQLITE_SCHEME, masked

    prefix = f"{SQLITE_SCHEME}:///"
    return url.removeprefix(prefix) if url.startswith(prefix) else masked(url)
