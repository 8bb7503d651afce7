"""Where a flow run's tasks execute: threads in this process, or a Dask cluster.

The flows do not change; only their task runner does, chosen when the run starts:

* neither option: Prefect's ThreadPoolTaskRunner, one thread per core;
* ``dask_address="tcp://host:8786"`` (or env ``MNIST_DASK_ADDRESS``): prefect-dask's
  DaskTaskRunner on an existing cluster;
* ``dask_local=N``: a DaskTaskRunner that starts a LocalCluster of N single-threaded worker
  processes on 127.0.0.1 for the run, and stops it afterwards.

The CLI applies the choice with ``flow.with_options(task_runner=...)`` before the run
starts (``run_on_runner``). A deployment run can only pass parameters, so a flow that is
handed Dask options while its tasks would run on threads calls itself once as a subflow,
with the same parameters, on the chosen runner (``wants_dask_subflow``, ``rerun_on_dask``).

Dask workers in other processes report task runs to the same Prefect API as the flow, so
that API must be reachable by URL: with no PREFECT_API_URL set, ``run_on_runner`` starts
Prefect's temporary local server and hands its URL to the workers (fine for
``dask_local``; a cluster on other machines needs a real ``prefect server``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.settings import default_dask_address

if TYPE_CHECKING:  # Prefect is imported when used: the CLI sets its environment first
    from prefect import Flow
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner


def resolve_dask(
    dask_address: str | None = None, dask_local: int | None = None
) -> tuple[str | None, int | None]:
    """The Dask options in force: those given, else ``MNIST_DASK_ADDRESS``; ValueError if
    both are given or N < 1."""
    if dask_address and dask_local:
        raise ValueError("give a Dask scheduler address or a local cluster size, not both")
    if dask_local is not None and dask_local < 1:
        raise ValueError(f"a local Dask cluster needs at least 1 worker, got {dask_local}")
    if not dask_address and not dask_local:
        dask_address = default_dask_address()
    return dask_address or None, dask_local or None


def local_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    """A LocalCluster of single-threaded worker processes, reachable only from this host.

    One thread per process: the scorer and the trainer already use NumPy's threads, and
    processes sidestep the GIL for the Python parts of a task.
    """
    return {
        "n_workers": n_workers,
        "processes": True,
        "threads_per_worker": 1,
        "host": "127.0.0.1",
        # The scheduler's HTTP server (health, metrics; no dashboard without bokeh) on a
        # free port: on the default 8787, a second cluster at once (two `score
        # --dask-local` runs) printed a "Port 8787 is already in use" UserWarning.
        "dashboard_address": ":0",
    }


def task_runner(dask_address: str | None = None, dask_local: int | None = None) -> TaskRunner:
    """The task runner for these options (see the module docstring)."""
    address, n_workers = resolve_dask(dask_address, dask_local)
    if address is None and n_workers is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2)
    from prefect_dask import DaskTaskRunner

    if address is not None:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(n_workers or 1))


def _on_dask(runner: TaskRunner | None) -> bool:
    if runner is None:
        return False
    from prefect_dask import DaskTaskRunner

    return isinstance(runner, DaskTaskRunner)


@contextlib.contextmanager
def api_for_workers() -> Iterator[None]:
    """Make sure the Prefect API has a URL other processes can use, for the block's length.

    Kept although ``SubprocessASGIServer`` is private Prefect API: it is the very server
    Prefect's ephemeral mode starts for this process (a per-port singleton), so the workers
    share it at no extra cost. Measured with ``score --dask-local 2`` on the embedded
    server (benchmarks/bench_cli.py, 2 files x 2,000 rows, one round on a loaded 2-core
    machine): 29.7 s; a public ``prefect server start`` started for the command instead:
    132.6 s (4.5x); no URL, so that each worker starts an ephemeral server of its own on
    the same database: 113.5 s (3.8x).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same one Prefect's ephemeral mode would start
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def run_on_runner(
    flow: Flow, dask_address: str | None = None, dask_local: int | None = None, **parameters: Any
) -> Any:
    """Run ``flow`` with the task runner these options choose; return its result."""
    address, n_workers = resolve_dask(dask_address, dask_local)
    runner = task_runner(address, n_workers)
    guard = contextlib.nullcontext()
    if _on_dask(runner):
        quiet_dask_logs()
        guard = api_for_workers()
    from flows import run_recorded

    with guard:
        return run_recorded(
            flow.with_options(task_runner=runner),
            dask_address=address, dask_local=n_workers, **parameters,
        )  # fmt: skip


def wants_dask_subflow(dask_address: str | None, dask_local: int | None) -> bool:
    """True inside a flow run asked to use Dask whose own task runner is not Dask."""
    from prefect.context import FlowRunContext

    address, n_workers = resolve_dask(dask_address, dask_local)
    if address is None and n_workers is None:
        return False
    context = FlowRunContext.get()
    return context is not None and not _on_dask(context.task_runner)


def rerun_on_dask() -> Any:
    """Run the current flow again, as a subflow with the run's own parameters, on the Dask
    runner they name; return its result. Call it when ``wants_dask_subflow`` is True."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    parameters = dict(context.parameters)
    address, n_workers = parameters.pop("dask_address", None), parameters.pop("dask_local", None)
    return run_on_runner(context.flow, address, n_workers, **parameters)


def quiet_dask_logs() -> None:
    """Keep Dask's warnings but not its INFO lines (cluster start-up and shut-down chatter)."""
    import logging

    import distributed  # noqa: F401 (its import sets the level this overrides)

    logging.getLogger("distributed").setLevel(logging.WARNING)


def outcome(future: PrefectFuture) -> Any:
    """The task's result, or the exception it failed with (also a worker lost for good).

    On Dask a finished task whose worker dies while the flow still holds its future may
    run again (a scoring task: the same file scored again, into the same atomic writes).
    Releasing each future once read earned only 1.07x (benchmarks/README.md, "Scoring").
    """
    try:
        return future.result()
    except Exception as exc:  # reported per file or per config by the flows
        return exc
