"""The training task: Parquet ─► model.fit ─► a sealed fit file with weights and curve."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from core.storage import location
from core.training import train_on_split
from model.train import EpochStats
from tasks import CONTENT


@task(cache_policy=CONTENT)
def train_model(train: dict[str, Any], config: dict[str, Any], work_dir: str) -> dict[str, Any]:
    """Fit the network on the training split and save its weights and learning curve.

    ``train`` is the convert step's record of the split (path, rows, SHA-256 of the
    Parquet file), so the cache keys on the file's content.
    """
    logger = get_run_logger()
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

    return train_on_split(location(train["path"]), config, location(work_dir), on_epoch)
