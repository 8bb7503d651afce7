"""Which Prefect backend the CLI's flows talk to, and how the embedded one is run.

Like any Prefect project, the CLI honors the active Prefect profile and the ``PREFECT_*``
variables: with an API URL configured anywhere (``prefect config set PREFECT_API_URL=…``,
``prefect cloud login``, the environment), runs go there. Only when none is configured
do flows run on Prefect's embedded server, which lives and dies with the command; its
database is then kept under the artifacts root.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import PipelineError
from core.storage import is_remote

# Either name sets the server's database (the second is Prefect's legacy alias).
DATABASE_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)
# How long the CLI waits at most for the embedded server to record its task runs.
RECORDING_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.02
_PAGE = 200  # the API's default page size


def embedded_database_url(artifacts: Path) -> str:
    """The embedded server's SQLite database: ``<artifacts>/.prefect/prefect.db``."""
    return f"sqlite+aiosqlite:///{Path(artifacts) / '.prefect' / 'prefect.db'}"


@contextmanager
def in_process_backend(artifacts: Path | None = None) -> Iterator[None]:
    """Run the enclosed flows against the configured Prefect API, or else on Prefect's
    embedded server, with its database under ``artifacts`` (when given), stopped only once
    it has recorded every task run.

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
        yield
        return
    updates = {}
    # SQLite cannot live on an object store: with a store root, Prefect's own default
    # database (under PREFECT_HOME) serves instead.
    if artifacts is not None and not is_remote(artifacts) and not _database_configured(settings):
        (Path(artifacts) / ".prefect").mkdir(parents=True, exist_ok=True)
        updates[PREFECT_SERVER_DATABASE_CONNECTION_URL] = embedded_database_url(artifacts)
    seen = _TaskRunsSeen()
    task_run_logger = logging.getLogger("prefect.task_runs")
    task_run_logger.addHandler(seen)
    try:
        with temporary_settings(updates=updates):
            try:
                yield
            except Exception:
                wait_until_recorded(seen.ids)  # a failed run ends with a burst of states
                raise
            wait_until_recorded(seen.ids)
    finally:
        task_run_logger.removeHandler(seen)


class BackendUnreachable(PipelineError):
    """The configured Prefect API does not answer."""


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


def _database_configured(settings: Any) -> bool:
    """True if the user chose the server's database, in the environment or the profile."""
    if any(os.environ.get(v) for v in DATABASE_VARIABLES):
        return True
    return "connection_url" in settings.server.database.model_fields_set


class _TaskRunsSeen(logging.Handler):
    """Collects the ids of the task runs of this process: each logs how it finished.

    Prefect has no process-wide hook on task-run states; their log records carry the
    run's id. Runs that log nothing here are not waited for: completed ones when Prefect's
    log level is above INFO, and those that ran on Dask workers (other processes).
    """

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.ids: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        task_run_id = getattr(record, "task_run_id", None)
        if task_run_id:
            self.ids.add(str(task_run_id))


def wait_until_recorded(ids: set[str], timeout: float = RECORDING_TIMEOUT_SECONDS) -> None:
    """Wait until the server has recorded the last state of each of these task runs.

    Task runs reach the server as events, which it records asynchronously, one at a time.
    The embedded server is stopped when this process exits, and stopping it mid-write
    cancels the recording, which Prefect reports with pages of tracebacks after a run
    that succeeded (6 of 10 warm ``train`` runs) or failed. A task run's last state is
    final, or NotReady when a step before it failed. After warm ``train`` runs on a busy
    2-core machine this took 0.1-1 s.
    """
    if not ids:
        return
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    pending = sorted(ids)
    deadline = time.monotonic() + timeout
    try:
        with get_client(sync_client=True) as client:
            while pending and time.monotonic() < deadline:
                done = set()
                for start in range(0, len(pending), _PAGE):
                    page = TaskRunFilterId(any_=pending[start : start + _PAGE])
                    runs = client.read_task_runs(task_run_filter=TaskRunFilter(id=page))
                    done.update(str(r.id) for r in runs if _settled(r.state))
                pending = [i for i in pending if i not in done]
                if pending:
                    time.sleep(_POLL_SECONDS)
    except Exception:  # best effort: the run's own outcome is what the user must see
        return


def _settled(state: Any) -> bool:
    return state is not None and (state.is_final() or state.name == "NotReady")
