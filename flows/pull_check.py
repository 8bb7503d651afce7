"""The pull step of ``prefect.yaml``: run each flow run from the checkout in MNIST_PIPELINE_HOME.

A process worker starts every flow run in a fresh temporary folder, and only this step
brings it to the code. Prefect's own ``set_working_directory`` takes an unset variable as
"" and stays in that temporary folder, so a worker started without MNIST_PIPELINE_HOME
crashed seconds later on ``FileNotFoundError: .../flows/scoring.py``, its pull step
"completed successfully". This step checks the variable first and, if it is wrong, ends
the run Failed with one line that names the variable and says what to set it to.

The worker imports this module before any working directory is set, so it must come from
the worker's own Python: the project's ``.venv``, where ``make setup`` installs the
checkout in editable mode. It imports only the standard library and Prefect.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.events import Event

ENV_HOME = "MNIST_PIPELINE_HOME"
PROJECT = "mnist-pipeline"
# The deployments' entrypoints, relative to a checkout (as in prefect.yaml).
ENTRYPOINTS = ("flows/training.py", "flows/scoring.py")


class CheckoutError(Exception):
    """MNIST_PIPELINE_HOME is unset or names no checkout of this project; one line."""


def is_checkout(folder: Path) -> bool:
    """True when ``folder`` holds this project: its pyproject.toml and the entrypoints."""
    try:
        with (folder / "pyproject.toml").open("rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return name == PROJECT and all((folder / entry).is_file() for entry in ENTRYPOINTS)


def checkout_problem(value: str) -> str | None:
    """The one-line complaint about ``value`` as MNIST_PIPELINE_HOME, or None if it is fine."""
    if not value.strip():
        problem = f"{ENV_HOME} is not set on this worker"
    elif not Path(value).expanduser().is_absolute():
        # Relative to what? Each run starts in a new temporary folder.
        problem = f"{ENV_HOME}={value} is not an absolute path"
    elif not is_checkout(Path(value).expanduser()):
        problem = f"{ENV_HOME}={value} is not a checkout of {PROJECT}"
    else:
        return None
    return f"{problem}: start the worker with {_suggestion()}"


def _suggestion() -> str:
    """What to set: the checkout this worker's Python imports the project from, if any."""
    here = Path(__file__).resolve().parents[1]
    if is_checkout(here):  # an editable install (`make setup`): the usual case
        return f"{ENV_HOME}={here} (the {PROJECT} checkout its Python runs from)"
    return f"{ENV_HOME} set to the absolute path of a {PROJECT} checkout (holding prefect.yaml)"


def enter_checkout(directory: str) -> dict[str, str]:
    """Pull step: check ``directory`` (MNIST_PIPELINE_HOME) and make it the working directory.

    On a bad value inside a flow run, the run is set Failed with the one line as its
    message (also logged to the run) and its process exits 1 without a traceback;
    elsewhere CheckoutError carries the line.
    """
    from prefect.deployments.steps import set_working_directory

    problem = checkout_problem(directory)
    if problem is None:
        return set_working_directory(str(Path(directory).expanduser()))
    if _fail_flow_run(problem):
        # Prefect would print its own traceback around an exception; the run already
        # says why it failed, so leave quietly (SystemExit passes Prefect's handlers).
        raise SystemExit(1)
    raise CheckoutError(problem)


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
        resource={"prefect.resource.id": f"mnist-pipeline.env.{ENV_HOME}",
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
