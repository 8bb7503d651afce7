"""The pull step of ``prefect.yaml``: run each flow run from the checkout in MNIST_PIPELINE_HOME.

A process worker starts every flow run in a fresh temporary folder, and only this step
brings it to the code. Prefect's own ``set_working_directory`` takes an unset variable as
"" and stays in that temporary folder, so a worker started without MNIST_PIPELINE_HOME
crashed seconds later on ``FileNotFoundError: .../flows/scoring.py``, its pull step
"completed successfully". This step checks the variable first (``core.settings``) and, if
it is wrong, ends the run Failed with one line that names the variable and says what to
set it to.

The worker imports this module before any working directory is set, so it must come from
the worker's own Python: the project's ``.venv``, where ``make setup`` installs the
checkout in editable mode.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from uuid import UUID

from core.settings import ENV_PIPELINE_HOME, SettingsError, pipeline_home

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.events import Event


def enter_checkout(directory: str) -> dict[str, str]:
    """Pull step: check ``directory`` (MNIST_PIPELINE_HOME) and make it the working directory.

    On a bad value inside a flow run, the run is set Failed with the one line as its
    message (also logged to the run) and its process exits 1 without a traceback;
    elsewhere SettingsError carries the line.
    """
    from prefect.deployments.steps import set_working_directory

    try:
        home = pipeline_home(directory)
    except SettingsError as exc:
        if _fail_flow_run(str(exc)):
            # Prefect would print its own traceback around an exception; the run already
            # says why it failed, so leave quietly (SystemExit passes Prefect's handlers).
            raise SystemExit(1) from None
        raise
    return set_working_directory(str(home))


def _fail_flow_run(message: str) -> bool:
    """Tell this process's flow run why it cannot start, and set it Failed with ``message``.

    False when the process runs no flow run.
    """
    flow_run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not flow_run_id:
        return False
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        _tell(flow_run, message)
        client.set_flow_run_state(flow_run.id, Failed(message=message))
    return True


def _tell(flow_run: FlowRun, message: str) -> None:
    """Put ``message`` in the run's logs and in an event, both sent before the final state.

    ``prefect deployment run --watch`` prints the run's events, and its logs only when the
    server streams them out (off by default): the event's resource name is the line.
    """
    from prefect.events import Event
    from prefect.logging.handlers import APILogHandler
    from prefect.logging.loggers import flow_run_logger
    from prefect.utilities.asyncutils import run_coro_as_sync

    flow_run_logger(flow_run).error(message)
    APILogHandler().flush()
    event = Event(
        event="mnist-pipeline.worker.misconfigured",
        resource={"prefect.resource.id": f"mnist-pipeline.env.{ENV_PIPELINE_HOME}",
                  "prefect.resource.name": message},
        related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                  "prefect.resource.role": "flow-run"}],
    )  # fmt: skip
    run_coro_as_sync(_emit(event))


async def _emit(event: Event) -> None:
    """Send ``event`` now (``emit_event`` queues it for a background worker)."""
    from prefect.events.clients import get_events_client

    async with get_events_client(checkpoint_every=1) as events:
        await events.emit(event)
