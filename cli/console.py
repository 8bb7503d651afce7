"""Console output for the CLI: quiet tracebacks for user errors, and the closing summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from core.errors import PipelineError
from core.scoring.csv_input import InputFileError
from model.train import TrainingDiverged
from model.validation import InputError

# Errors caused by the user's input or environment: one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    PipelineError,
    InputFileError,
    InputError,
    TrainingDiverged,
)


class _HideUserErrorTracebacks(logging.Filter):
    """Drop the traceback from Prefect's log records when the error is the user's input,
    and the lines about the step-timing hook."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "hook '_record_seconds'" in str(record.msg).lower():
            return False  # the step-timing hook is plumbing, not news
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            record.msg = record.getMessage().splitlines()[0]
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
    """Install the filter on every handler of Prefect's loggers."""
    from prefect.logging.configuration import setup_logging

    # Prefect configures logging lazily; do it now so that its handlers exist to filter.
    # Its later calls are incremental and keep these handlers.
    setup_logging()
    flt = _HideUserErrorTracebacks()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(flt)


def print_steps(steps: Iterable[dict[str, Any]]) -> None:
    """Print the closing summary: one line per step with its final state and seconds."""
    steps = list(steps)
    width = max((len(s["step"]) for s in steps), default=4)
    out("")
    out(f"{'step':<{width}}  {'state':<9}  seconds")
    for s in steps:
        out(f"{s['step']:<{width}}  {s['state']:<9}  {s['seconds']:7.2f}")


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
