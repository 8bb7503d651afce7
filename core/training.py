"""A training run: its config from a preset, its identity, and the fit file it leaves.

Parquet split (+ the user's labeled files, ``core.labeled``) ─► ``model.fit`` ─►
``fit.joblib`` (weights, config, learning curve), sealed, beside the run's other outputs
under ``training/<fingerprint>/``, with a copy of each labeled file's rejected rows in
``rejects/`` (``core.lineage``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import joblib
import pyarrow.parquet as pq

from core.dataset import read_split
from core.files import atomic_path, seal
from core.labeled import training_data
from core.registry import GATES
from core.settings import SettingsError, check_fraction
from core.storage import Location, location, store_errors
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


def check_labeled_options(max_reject_fraction: float, holdout: float, promote_on: str) -> None:
    """SettingsError (one line) unless the labeled-data options can be used: the two
    fractions from 0 to 1, and a champion gate that exists."""
    check_fraction("--max-reject-fraction", max_reject_fraction)
    check_fraction("--labeled-holdout", holdout)
    if promote_on not in GATES:
        raise SettingsError(f"--promote-on {promote_on!r}: expected one of {', '.join(GATES)}")


def fingerprint(
    source_sha256: dict[str, str],
    config: dict[str, Any],
    labeled: Sequence[str] = (),
    holdout: float | None = None,
) -> str:
    """Identity of a training run's inputs: the MNIST source files' content (the verified
    IDX checksums), the full model config and, only when there are labeled files, the set
    of their SHA-256 and the holdout fraction (so a run on MNIST alone keeps the identity,
    folder and caches it always had).

    Known before any data is converted, so a flow can lay out the run's steps at once.
    """
    inputs: dict[str, Any] = {"source": source_sha256, "config": config}
    if labeled:
        inputs["labeled"] = sorted(set(labeled))
        inputs["labeled_holdout"] = holdout
    payload = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_on_split(
    split_path: Location,
    config: dict[str, Any],
    work_dir: Location,
    on_epoch: Callable[[EpochStats], None] | None = None,
    labeled: Sequence[dict[str, Any]] = (),
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Fit the network on the split at ``split_path`` and save ``work_dir/fit.joblib``.

    With ``labeled`` (``core.labeled.convert_labeled``'s records, in a fixed order), the
    network learns from each file's rows outside its ``holdout`` slice too, as uint8
    pixels. Returns the fit file's path and SHA-256, and the run's headline numbers, with
    ``labeled_rows``, the labeled rows in the training data.
    """
    cfg = ModelConfig.from_dict(config)
    if labeled:
        X, y = training_data(split_path, labeled, holdout)
        labeled_rows = len(y) - _rows(split_path)
    else:  # MNIST alone: read as it always was (float32), at the same speed
        X, y = read_split(split_path)
        labeled_rows = 0
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
        "labeled_rows": labeled_rows,
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
        "labeled_rows": labeled_rows,
    }


def _rows(path: Location) -> int:
    """The number of rows of a Parquet file, from its footer."""
    with store_errors(path, "read"), location(path).open("rb") as f:
        return pq.ParquetFile(f).metadata.num_rows
