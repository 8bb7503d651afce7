"""Shared flow plumbing: submit a cached task, and report each step's final state."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import Task
from prefect.futures import PrefectFuture, wait

from core.settings import Settings
from tasks import cache_options

# Seconds each task run took, recorded by a state hook in this process. Hooks also fire
# for Cached runs, so a cache hit reports the few milliseconds it really took.
_RUN_SECONDS: dict[UUID, float] = {}


def _record_seconds(task: Task, task_run: Any, state: Any) -> None:
    if task_run.total_run_time is not None:
        _RUN_SECONDS[task_run.id] = task_run.total_run_time.total_seconds()


def submit_cached(
    task: Task, settings: Settings, outputs: list, force: bool, step: str, **kwargs: Any
) -> PrefectFuture:
    """Submit ``task`` with content caching under the artifacts root, as run step ``step``."""
    options = cache_options(settings.results_dir, outputs, force)
    return task.with_options(
        task_run_name=step,
        on_completion=[_record_seconds],
        on_failure=[_record_seconds],
        **options,
    ).submit(**kwargs)


def report(futures: dict[str, PrefectFuture]) -> list[dict[str, Any]]:
    """One record per step: its name, final state (Completed, Cached, Failed) and seconds."""
    wait(list(futures.values()))
    return [
        {
            "step": step,
            "state": future.state.name,
            "seconds": round(_RUN_SECONDS.get(future.task_run_id, 0.0), 3),
        }
        for step, future in futures.items()
    ]


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
