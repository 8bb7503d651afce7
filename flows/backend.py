"""Settings for flows that run in this process against Prefect's embedded server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_SETTLE_SECONDS = 1.0  # what the heartbeat join used to take

# Either name turns heartbeats on explicitly (the second is Prefect's legacy alias).
HEARTBEAT_VARIABLES = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def in_process_backend() -> Iterator[None]:
    """Run the enclosed flows without heartbeats when no Prefect API is configured.

    Heartbeats let a server mark a run whose process died as crashed. The embedded server
    lives and dies with this process, so nothing could ever read them; yet each flow run
    waits up to a second at its end for the heartbeat thread to wake from its sleep, which
    made up most of Prefect's ~1.1 s per-flow cost. Against a real server (PREFECT_API_URL
    set), or when the user sets a heartbeat frequency, Prefect's behaviour is unchanged.
    """
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    if get_current_settings().api.url or any(os.environ.get(v) for v in HEARTBEAT_VARIABLES):
        yield
        return
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    except BaseException:
        # The embedded server records task-run states from events, asynchronously. A
        # failed run ends with a burst of them (failed and not-ready steps), and stopping
        # the server at once cancels that recording mid-write, which Prefect reports with
        # pages of tracebacks after our one-line error. The heartbeat join used to give it
        # this time by accident; now only a failed run waits for it.
        time.sleep(_SETTLE_SECONDS)
        raise
