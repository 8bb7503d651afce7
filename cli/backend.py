"""Which Prefect backend the CLI's flows talk to, and how the embedded one is run.

Like any Prefect project, the CLI honors the active Prefect profile and the ``PREFECT_*``
variables: with an API URL configured anywhere (``prefect config set PREFECT_API_URL=…``,
``prefect cloud login``, the environment), runs go there; an API that does not answer,
refuses this client, or stops answering mid-run ends the command with one line. With
none configured, a ``mnist-pipeline stack`` running on the same artifacts root serves
the command (it records itself in ``<artifacts>/.prefect/stack.json``, cli.stack_record):
its runs then show in the stack's UI, and the command saves the ~5 s of starting a
server. Only when there is none either do flows run on Prefect's embedded server, which
lives and dies with the command, on the artifacts root's database (cli.root_database).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from cli.database import configured_database, describe_database
from cli.root_database import embedded_database_url, start_embedded_server
from cli.stack_record import running_stack, stack_record
from core.errors import PipelineError
from core.storage import is_remote

# A configured API that has not answered for this long mid-run ends the command (exit 1,
# one line). Left to Prefect, the running step retried its call for ~75 s, failed with a
# traceback, and the process then hung for minutes flushing logs and events at exit.
# Long enough that a busy server that is slow to answer does not end a healthy run.
API_SILENCE_SECONDS = 15.0
_PROBE_SECONDS = 2.0  # between /health probes
_PROBE_TIMEOUT_SECONDS = 5.0


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
    if local and configured_database(settings) is None:
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
            start_embedded_server()
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
