"""Console output for the CLI: quiet tracebacks for user errors, and the closing summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from core.errors import PipelineError
from core.scoring.layout import InputFileError
from core.storage import is_library_store_fault
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
    and the embedded server's line about its stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Stopping temporary server"):
            return False  # logged at exit, after the summary, which must come last
        if record.exc_info and _is_users_problem(record.exc_info[1]):
            record.msg = record.getMessage().splitlines()[0]
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _is_users_problem(exc: BaseException | None) -> bool:
    """The user's input, or a store the user pointed us at (core.storage)."""
    return isinstance(exc, USER_ERRORS) or (exc is not None and is_library_store_fault(exc))


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


def print_scoring(result: dict[str, Any]) -> None:
    """Print each file's outcome (errors to stderr), then the run's totals."""
    from core.scoring.summary import confusion_lines

    out("")
    for f in result["files"]:
        if "error" in f:
            err(f"mnist-pipeline score: error: {f['error']}")
            continue
        accuracy = f" accuracy {f['accuracy']:.4f}" if f["accuracy"] is not None else ""
        out(f"{f['file']}: {f['scored']}/{f['rows']} rows scored, {f['rejected']} rejected"
            f"{accuracy} -> {f['output']}")  # fmt: skip
        if f["rejects"]:
            out(f"  rejects: {f['rejects']}")
        if f.get("confusion_matrix") is not None:
            for line in confusion_lines(f["confusion_matrix"]):
                out(f"  {line}")
    out(
        f"model {result['model']}: {result['scored']} of {result['rows']} rows scored, "
        f"{result['rejected']} rejected, {result['failed_files']} file(s) failed"
    )


def print_sweep(configs: list[dict[str, Any]]) -> None:
    """Print the sweep's table: one line per config, the chosen one starred."""
    out("")
    width = max(len(row["config"]) for row in configs)
    out(f"  {'config':<{width}}  val_acc  test_acc")
    for row in configs:
        mark = "*" if row["chosen"] else " "
        if row["error"] is not None:
            out(f"{mark} {row['config']:<{width}}  failed: {row['error']}")
            continue
        out(f"{mark} {row['config']:<{width}}  {row['validation_accuracy']:.4f}   "
            f"{row['test_accuracy']:.4f}")  # fmt: skip


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
