"""The training task: Parquet ─► model.fit ─► a sealed fit file with weights and curve."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from core.lineage import REJECTS_DIR, keep_rejects
from core.storage import location
from core.training import train_on_split
from model.train import EpochStats
from tasks import CONTENT
from tasks.labeled import publish_rejects


@task(cache_policy=CONTENT)
def train_model(
    train: dict[str, Any],
    config: dict[str, Any],
    work_dir: str,
    labeled: list[dict[str, Any]] | None = None,
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Fit the network on the training split (and the labeled files' rows outside their
    holdout) and save its weights and learning curve; copy the labeled files' rejects
    beside them.

    ``train`` is the convert step's record of the split (path, rows, SHA-256 of the
    Parquet file), and each of ``labeled`` a labeled file's record (its Parquet file and
    SHA-256), so the cache keys on the files' content.
    """
    logger = get_run_logger()
    labeled = labeled or []
    work_dir_path = location(work_dir)
    kept = keep_rejects(labeled, work_dir_path / REJECTS_DIR)
    publish_rejects(kept, f"labeled rows rejected by training run {work_dir_path.name}")
    epochs = config["epochs"]
    progress = create_progress_artifact(
        progress=0.0, key="mnist-training-progress", description="mnist-training: epochs done"
    )
    last_update = [time.monotonic()]

    def on_epoch(stats: EpochStats) -> None:
        logger.info(
            "epoch %d/%d  loss %.4f  accuracy %.4f  val_loss %.4f  val_accuracy %.4f  (%.1f s)",
            stats.epoch, epochs, stats.train_loss, stats.train_accuracy,
            stats.val_loss, stats.val_accuracy, stats.seconds,
        )  # fmt: skip
        # Each update is an API call; at most one a second keeps fast epochs fast.
        if stats.epoch == epochs or time.monotonic() - last_update[0] >= 1.0:
            update_progress_artifact(progress, progress=100.0 * stats.epoch / epochs)
            last_update[0] = time.monotonic()

    result = train_on_split(
        location(train["path"]), config, work_dir_path, on_epoch, labeled=labeled, holdout=holdout
    )
    if labeled:
        logger.info(
            "trained on %d MNIST rows and %d labeled rows from %d file(s)",
            train["rows"], result["labeled_rows"], len(labeled),
        )  # fmt: skip
    return result
