"""The training task: Parquet ─► model.fit ─► a sealed fit file with weights and curve."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import joblib
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from core.dataset import load_split
from core.files import atomic_path, seal
from model.config import ModelConfig
from model.train import EpochStats, fit
from tasks import CONTENT

FIT_FILE = "fit.joblib"


def fingerprint(source_sha256: dict[str, str], config: dict[str, Any]) -> str:
    """Identity of a training run's inputs: the MNIST source files' content (the verified
    IDX checksums) and the full model config.

    Known before any data is converted, so a flow can lay out the run's steps at once.
    """
    payload = json.dumps({"source": source_sha256, "config": config}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@task(cache_policy=CONTENT)
def train_model(train: dict[str, Any], config: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Fit the network on the training split and save its weights and learning curve.

    ``train`` is ``flows.ingest.split_source``'s record (path and source checksums), so
    the cache keys on the data's source, and training can start from the decoded arrays
    while the Parquet file is still being written.
    """
    logger = get_run_logger()
    cfg = ModelConfig.from_dict(config)
    X, y = load_split(Path(train["path"]), train.get("source_sha256"))
    progress = create_progress_artifact(progress=0.0, description="mnist-training: epochs done")
    last_update = [time.monotonic()]

    def on_epoch(stats: EpochStats) -> None:
        logger.info(
            "epoch %d/%d  loss %.4f  accuracy %.4f  val_loss %.4f  val_accuracy %.4f  (%.1f s)",
            stats.epoch, cfg.epochs, stats.train_loss, stats.train_accuracy,
            stats.val_loss, stats.val_accuracy, stats.seconds,
        )  # fmt: skip
        # Each update is an API call; at most one a second keeps fast epochs fast.
        if stats.epoch == cfg.epochs or time.monotonic() - last_update[0] >= 1.0:
            update_progress_artifact(progress, progress=100.0 * stats.epoch / cfg.epochs)
            last_update[0] = time.monotonic()

    result = fit(X, y, cfg, on_epoch=on_epoch)
    dest = Path(work_dir) / FIT_FILE
    record = {
        "params": [(W, b) for W, b in result.params],
        "config": cfg.to_dict(),
        "curve": result.curve,
        "best_epoch": result.best_epoch,
        "validation_accuracy": result.validation_accuracy,
        "train_seconds": result.train_seconds,
        "n_train": result.n_train,
        "n_validation": result.n_validation,
        "stopped_early": result.stopped_early,
    }
    with atomic_path(dest) as tmp:
        joblib.dump(record, tmp)
    return {
        "path": str(dest),
        "sha256": seal(dest),
        "validation_accuracy": result.validation_accuracy,
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curve),
    }


def resolve_config(preset_name: str, **overrides: Any) -> dict[str, Any]:
    """A preset with the given overrides (None = keep the preset's); ValueError if invalid.

    ``batch_size=0`` asks for full-batch gradient descent (the notebook's algorithm).
    """
    from model.config import preset

    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "hidden" in chosen:
        chosen["hidden"] = tuple(chosen["hidden"])
    if chosen.get("batch_size") == 0:
        chosen["batch_size"] = None
    return preset(preset_name, **chosen).to_dict()
