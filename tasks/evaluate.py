"""The evaluation task: weights + held-out test Parquet ─► metrics.json and PNG plots."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from core.evaluation import METRICS_FILE, PLOTS, evaluate_fit
from core.storage import location
from tasks import CONTENT


@task(cache_policy=CONTENT)
def evaluate_model(
    fit: dict[str, Any],
    test: dict[str, Any],
    work_dir: str,
    labeled: list[dict[str, Any]] | None = None,
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Score the held-out test split (and each labeled file's holdout slice) and write
    metrics and plots beside the weights.

    ``test`` is the convert step's record of the split, as for ``train_model``; each of
    ``labeled`` a labeled file's record.
    """
    labeled = labeled or []
    result = evaluate_fit(fit, test["path"], work_dir, labeled, holdout)
    work_dir = location(work_dir)
    logger = get_run_logger()
    logger.info(
        "test accuracy %.4f, log-loss %.4f on %d held-out images",
        result["test_accuracy"], result["test_log_loss"], result["n_test"],
    )  # fmt: skip
    if result["labeled_holdout_accuracy"] is not None:
        logger.info(
            "labeled holdout accuracy %.4f on %d rows held out of %d file(s)",
            result["labeled_holdout_accuracy"], sum(result["labeled_held_out"].values()),
            len(labeled),
        )  # fmt: skip
    return {
        "metrics_path": str(work_dir / METRICS_FILE),
        "test_accuracy": result["test_accuracy"],
        "test_log_loss": result["test_log_loss"],
        "labeled_holdout_accuracy": result["labeled_holdout_accuracy"],
        "labeled_held_out": result["labeled_held_out"],
        "plots": [str(work_dir / name) for name in PLOTS],
    }
