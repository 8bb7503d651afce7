"""A training run: its config from a preset, its identity, and the fit file it leaves.

Parquet split ─► ``model.fit`` ─► ``fit.joblib`` (weights, config, learning curve),
sealed, beside the run's other outputs under ``training/<fingerprint>/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import joblib

from core.dataset import read_split
from core.files import atomic_path, seal
from core.storage import Location
from model.config import ModelConfig, preset
from model.train import EpochStats, fit

FIT_FILE = "fit.joblib"


def resolve_config(preset_name: str, **overrides: Any) -> dict[str, Any]:
    """A preset with the given overrides (None = keep the preset's); ValueError if invalid.

    ``batch_size=0`` asks for full-batch gradient descent (the notebook's algorithm).
    """
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "hidden" in chosen:
        chosen["hidden"] = tuple(chosen["hidden"])
    if chosen.get("batch_size") == 0:
        chosen["batch_size"] = None
    return preset(preset_name, **chosen).to_dict()


def fingerprint(source_sha256: dict[str, str], config: dict[str, Any]) -> str:
    """Identity of a training run's inputs: the MNIST source files' content (the verified
    IDX checksums) and the full model config.

    Known before any data is converted, so a flow can lay out the run's steps at once.
    """
    payload = json.dumps({"source": source_sha256, "config": config}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_on_split(
    split_path: Location,
    config: dict[str, Any],
    work_dir: Location,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> dict[str, Any]:
    """Fit the network on the split at ``split_path`` and save ``work_dir/fit.joblib``.

    Returns the fit file's path and SHA-256, and the run's headline numbers.
    """
    cfg = ModelConfig.from_dict(config)
    X, y = read_split(split_path)
    result = fit(X, y, cfg, on_epoch=on_epoch)
    dest = work_dir / FIT_FILE
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
