"""Scoring tasks: locate and verify the model once, then score each CSV file with it.

The flow passes the model's *folder*, never its weights: each task loads the bundle
itself through ``registry.load``, which checks the SHA-256 before unpickling. So on a
cluster every worker reads the model from the shared artifacts path; only a path crosses
the scheduler.
"""

from __future__ import annotations

import errno
import functools
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core import registry
from core.files import OutputWriteError
from core.scoring.jobs import Job
from core.scoring.score_file import score_file
from core.storage import location
from model.predict import predict_proba_pixels


@task(cache_policy=NO_CACHE)
def locate_model(models_dir: str, ref: str | None) -> dict[str, Any]:
    """Resolve the model to score with (the champion by default) and verify it loads."""
    loaded = registry.load(location(models_dir), ref)
    get_run_logger().info(
        "scoring with model %s (test accuracy %.4f)",
        loaded.version, loaded.bundle["metrics"]["test_accuracy"],
    )  # fmt: skip
    return {"version": loaded.version, "path": str(loaded.path.parent)}


# Errors of shared (network) storage that are worth another try, reading an input or
# writing an output; anything else, such as a missing input or a full disk, fails the file
# at once.
_TRANSIENT_ERRNOS = {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.ECONNRESET}


def _transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: the task failed on a transient storage error."""
    try:
        state.result()
    except (OSError, OutputWriteError) as exc:
        return exc.errno in _TRANSIENT_ERRNOS
    except Exception:
        return False
    return False


def _predictor(model: dict[str, Any]) -> functools.partial:
    """predict_proba_pixels bound to the model's weights, loaded and verified from its path."""
    loaded = registry.load(location(model["path"]).parent, model["path"])
    return functools.partial(predict_proba_pixels, loaded.params)


# Scoring writes to the user's paths, which may have changed since any earlier run, so a
# cached no-op would be wrong: every run scores. A worker lost mid-task is not a task
# failure: Dask runs the task again on another worker, and the atomic writes make that safe.
@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=_transient_io_error,
)
def score_csv(job: Job, model: dict[str, Any], fmt: str = "csv") -> dict[str, Any]:
    """Score one CSV file with the verified model; write predictions and rejects."""
    summary = score_file(
        location(job.input),
        location(job.output),
        location(job.rejects),
        _predictor(model),
        fmt=fmt,
    ).to_dict()
    logger = get_run_logger()
    logger.info(
        "%s: %d rows, %d scored, %d rejected",
        job.input, summary["rows"], summary["scored"], summary["rejected"],
    )  # fmt: skip
    # One line per output, so that `prefect deployment run --watch` and the UI say where
    # the results went.
    logger.info("%s: predictions written to %s", job.input, summary["output"])
    if summary["rejects"]:
        logger.info("%s: rejects written to %s", job.input, summary["rejects"])
    if summary["rejected"]:
        logger.warning(
            "%s: %d row(s) rejected, see %s", job.input, summary["rejected"], summary["rejects"]
        )
    return summary
