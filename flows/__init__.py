"""Shared flow plumbing: submit a cached task, and report each step as Prefect recorded it."""

from __future__ import annotations

import time
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture, wait

from core.settings import Settings
from tasks import cache_options

# How long a flow waits at most for the server to record its task runs' last states.
RECORDING_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.02
_PAGE = 200  # the API's default page size


def submit_cached(
    task: Task, settings: Settings, outputs: list, force: bool, step: str, **kwargs: Any
) -> PrefectFuture:
    """Submit ``task`` with content caching under the artifacts root, as run step ``step``."""
    options = cache_options(settings.results_dir, outputs, force)
    # Braces escaped: Prefect formats a string task_run_name with the task's parameters,
    # and a step may carry a user's file name ("convert labeled scan{1}.csv").
    name = step.replace("{", "{{").replace("}", "}}")
    return task.with_options(task_run_name=name, **options).submit(**kwargs)


def report(futures: dict[str, PrefectFuture]) -> list[dict[str, Any]]:
    """One record per step: its name, final state (Completed, Cached, Failed) and seconds,
    as the Prefect API recorded them, wherever the task ran (threads or Dask workers)."""
    wait(list(futures.values()))
    runs = recorded_task_runs([str(f.task_run_id) for f in futures.values()])
    rows = []
    for step, future in futures.items():
        run = runs.get(str(future.task_run_id))
        seconds = run.total_run_time.total_seconds() if run is not None else 0.0
        state = run.state.name if run is not None and run.state else future.state.name
        rows.append({"step": step, "state": state, "seconds": round(seconds, 3)})
    return rows


def run_recorded(flow: Any, **parameters: Any) -> Any:
    """Run ``flow`` and return its result (or raise its exception), once the server has
    recorded the last state of each of its task runs, whether the run succeeded or not:
    see ``recorded_task_runs``. The CLI runs every flow this way."""
    state = flow(**parameters, return_state=True)
    recorded_task_runs(flow_run_id=state.state_details.flow_run_id)
    return state.result()


def recorded_task_runs(
    ids: list[str] | None = None,
    flow_run_id: Any = None,
    timeout: float = RECORDING_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The task runs ``ids`` (or every task run of ``flow_run_id``) as the server recorded
    them, once it has recorded the last state of each: {task run id: TaskRun}.

    Task-run states reach the server as events, which it records asynchronously: a step
    table read at once could show a step still Running. And the CLI's embedded server is
    stopped when the command exits: stopped mid-write, it printed pages of tracebacks
    after a run that succeeded (6 of 10 warm ``train`` runs) or failed. A task run's last
    state is final, or NotReady when a step before it failed. Typically 0.1-1 s on a busy
    2-core machine; after ``timeout`` the records as they are.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterId,
    )

    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            if flow_run_id is not None:
                of_flow = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                runs, offset = [], 0
                while page := client.read_task_runs(
                    flow_run_filter=of_flow, limit=_PAGE, offset=offset
                ):
                    runs += page
                    offset += len(page)
            else:
                pending = [i for i in ids or [] if not _settled(found.get(i))]
                runs = []
                for start in range(0, len(pending), _PAGE):
                    page = TaskRunFilterId(any_=pending[start : start + _PAGE])
                    runs += client.read_task_runs(task_run_filter=TaskRunFilter(id=page))
            before = len(found)
            found.update({str(r.id): r for r in runs})
            wanted = ids if flow_run_id is None else list(found)
            # By flow run, a task run the server has not recorded yet is not listed at
            # all: the list must also have stopped growing.
            stable = flow_run_id is None or len(found) == before
            if stable and all(_settled(found.get(i)) for i in wanted or []):
                return found
            if time.monotonic() >= deadline:
                return found
            time.sleep(_POLL_SECONDS)


def _settled(run: Any) -> bool:
    state = None if run is None else run.state
    return state is not None and (state.is_final() or state.name == "NotReady")


def results_in_order(futures: dict[str, PrefectFuture]) -> dict[str, Any]:
    """Each step's result by name, taken in submission order.

    The first failure raises its own exception: steps come before the steps that use
    them, so that is the root cause, never a later step's "upstream did not complete".
    """
    return {step: future.result() for step, future in futures.items()}


def name_this_run(name: str) -> None:
    """Rename the current flow run, e.g. ``train-default-1a2b3c4d``, once the flow knows
    what it runs (Prefect's own names, ``solemn-echidna``, say nothing in the UI)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)
