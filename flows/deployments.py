"""The deployments: nightly retraining and on-demand scoring, run by a real Prefect server.

* ``mnist-training/nightly``: cron ``0 2 * * *`` in a chosen timezone (UTC by default), the
  default preset, at most one run at a time (later runs wait their turn); with ``labeled``
  entries (an inbox: ``serve --labeled 'inbox/*.csv'``), their default ``labeled``
  parameter, so each night learns from what arrived;
* ``mnist-scoring/batch``: no schedule; parameters ``inputs``, ``output_dir``, ``model``.

Both flows have a timeout (``MNIST_TRAINING_TIMEOUT``, default 1 hour, and
``MNIST_SCORING_TIMEOUT``, default 6 hours; 0 for none), read when a run starts
(``flows.limits``): a deployment run loads its flow from the entrypoint in a process of
its own, so the serve process's or the worker's environment decides. A run over its time
ends TimedOut (a Failed state), which frees the training deployment's single concurrency
slot.

Both carry the absolute artifacts root as a parameter default, so a run from the server
reads and writes the same data, models and task cache as ``mnist-pipeline`` on that root.

Two ways to run them: ``serve`` registers both and runs them from this process
(``prefect.serve``); ``cli.stack.run_stack`` first starts a local ``prefect server`` on
127.0.0.1 and stops it on the way out. The work-pool route (``prefect deploy --all``
plus workers) is ``prefect.yaml`` at the repository root, with the same names, schedule
and limit.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import check_timezone, scoring_timeout, training_timeout
from core.storage import is_remote, is_url, location

if TYPE_CHECKING:  # Prefect is imported when used: the CLI sets its environment first
    from prefect.deployments.runner import RunnerDeployment

TRAINING = "mnist-training/nightly"
SCORING = "mnist-scoring/batch"
NIGHTLY_CRON = "0 2 * * *"
DEFAULT_PORT = 4200
# A first start migrates the server's database; on a busy 2-core machine that takes a while.
SERVER_STARTUP_SECONDS = 180.0


class DeploymentError(Exception):
    """A deployment setup that cannot work: bad schedule, no server, port in use."""


def check_schedule(cron: str, timezone: str) -> None:
    """Raise SettingsError unless ``timezone`` is an IANA name (e.g. Europe/Paris), and
    DeploymentError unless ``cron`` is a cron expression."""
    check_timezone(timezone)
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise DeploymentError(f"invalid cron expression {cron!r}") from None


def build_deployments(
    artifacts: Path,
    timezone: str = "UTC",
    cron: str = NIGHTLY_CRON,
    labeled: list[str] | None = None,
) -> list[RunnerDeployment]:
    """The two deployments, with ``artifacts`` (absolute) as their artifacts root, and
    ``labeled`` (local entries made absolute) as the nightly run's labeled data."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from flows.scoring import scoring_flow
    from flows.training import training_flow

    check_schedule(cron, timezone)
    # Each run reads its time limit when it starts; a bad one is refused before serving.
    training_timeout()
    scoring_timeout()
    root = location(artifacts)
    root = str(root if is_remote(root) else root.expanduser().resolve())
    parameters = {"preset": "default", "artifacts": root}
    if labeled:  # the inbox as seen from here: a run may start in another folder
        parameters["labeled"] = [
            e if is_url(e) else str(Path(e).expanduser().absolute()) for e in labeled
        ]
    inbox = f" and {' '.join(parameters['labeled'])}" if labeled else ""
    # Module entrypoints: a run imports flows.training wherever the serve process runs.
    nightly = training_flow.to_deployment(
        name=TRAINING.split("/")[1],
        schedules=[Cron(cron, timezone=timezone)],
        parameters=parameters,
        # One training run per artifacts root: an overlapping run waits in AwaitingConcurrencySlot.
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        description=f"Retrain on MNIST{inbox} nightly and promote if no worse. Artifacts: {root}",
        tags=["mnist"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    batch = scoring_flow.to_deployment(
        name=SCORING.split("/")[1],
        parameters={"artifacts": root},
        description=f"Score CSV files with the champion (or `model`). Artifacts: {root}",
        tags=["mnist"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [nightly, batch]


def configured_api_url() -> str | None:
    """The Prefect API this process talks to (environment or profile), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def check_api(api_url: str, timeout: float = 5.0) -> None:
    """Raise DeploymentError unless something answers HTTP at ``api_url``/health.

    Any HTTP answer counts: an API behind auth (Prefect Cloud, an auth string) may refuse
    the anonymous probe and still be the right server.
    """
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except OSError as exc:
        raise DeploymentError(
            f"cannot reach the Prefect API at {api_url} ({exc}); start a server with "
            "`mnist-pipeline stack` or `prefect server start`"
        ) from None


def serve(
    artifacts: Path,
    timezone: str = "UTC",
    cron: str = NIGHTLY_CRON,
    poll_seconds: float | None = None,
    labeled: list[str] | None = None,
) -> None:
    """Register both deployments with the configured Prefect API and run their flow runs
    from this process until SIGINT or SIGTERM, at most PREFECT_RUNNER_PROCESS_LIMIT (5
    unless set) at once.

    Schedules stay active when this process stops, so the server keeps creating nightly
    runs, which start when a serve process or worker is back. ``poll_seconds`` is how
    often the server is asked for due runs (Prefect's PREFECT_RUNNER_POLL_FREQUENCY, 10 s,
    by default). ``labeled``: the nightly run's labeled data (``build_deployments``).
    """
    from prefect import serve as prefect_serve
    from prefect.settings import get_current_settings

    deployments = build_deployments(artifacts, timezone, cron, labeled)
    # prefect.serve's own default is no limit: 43 runs triggered at once all started their
    # flow processes at once on 2 cores (benchmarks/bench_load.py). A runner's limit is
    # PREFECT_RUNNER_PROCESS_LIMIT (5 unless set); later runs wait their turn.
    limit = get_current_settings().runner.process_limit
    prefect_serve(*deployments, pause_on_shutdown=False, query_seconds=poll_seconds, limit=limit)
