"""Evaluation: a fit file + the held-out test split ─► metrics.json and PNG plots.

Each test image is scored as ``score`` scores it (``predict_proba_pixels``, from its uint8
pixels), so the test accuracy reported is the accuracy of scoring the test set. With
labeled files, each one's holdout slice is scored the same way, beside the test set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from core import plots
from core.dataset import pixels_of, read_split
from core.errors import PipelineError
from core.files import atomic_write_text, seal, sha256_file
from core.labeled import holdout_data
from core.registry import load
from core.safe_joblib import safe_load
from core.storage import Location, location
from model import metrics
from model.predict import predict_proba_pixels

METRICS_FILE = "metrics.json"
PLOTS = ("confusion_matrix.png", "learning_curve.png", "misclassified.png")
N_MISCLASSIFIED_SHOWN = 32


def evaluation_outputs(work_dir: str | Location) -> list[Location]:
    """Files the evaluation writes; a cache hit is only trusted while all are intact."""
    return [location(work_dir) / name for name in (METRICS_FILE, *PLOTS)]


def compute_metrics(
    y: np.ndarray, proba: np.ndarray, n_classes: int, fit_record: dict[str, Any]
) -> dict[str, Any]:
    """Every reported number, as JSON-ready values.

    y : ndarray of shape (n_samples,), the true labels
    proba : ndarray of shape (n_samples, n_classes), the predicted probabilities
    """
    predicted = proba.argmax(axis=1)
    confusion = metrics.confusion_matrix(y, predicted, n_classes)
    per_class = metrics.per_class_metrics(y, predicted, n_classes)
    wrong = np.flatnonzero(predicted != y)
    return {
        "test_accuracy": metrics.accuracy(y, predicted),
        "test_log_loss": metrics.log_loss(y, proba),
        "validation_accuracy": fit_record["validation_accuracy"],
        "train_seconds": fit_record["train_seconds"],
        "best_epoch": fit_record["best_epoch"],
        "n_test": int(len(y)),
        "per_class": {
            str(k): {name: values[k].item() for name, values in per_class.items()}
            for k in range(n_classes)
        },
        "confusion_matrix": confusion.tolist(),
        "most_confused": [
            {"true": t, "predicted": p, "count": c}
            for t, p, c in metrics.most_confused_pairs(confusion)
        ],
        "misclassified_sample": [
            {"index": int(i), "true": int(y[i]), "predicted": int(predicted[i])}
            for i in wrong[:N_MISCLASSIFIED_SHOWN]
        ],
    }


def labeled_metrics(
    params: Any, labeled: Sequence[dict[str, Any]], holdout: float, labeled_rows: int
) -> tuple[dict[str, Any], dict[str, int]]:
    """The labeled data's metrics (``labeled_rows``, ``labeled_holdout_accuracy``: over
    every file's held-out rows, None when there are none; ``labeled``: {source: accuracy
    on its holdout, None when it has no held-out row}) and {SHA-256: rows held out}."""
    per_file: dict[str, float | None] = {}
    held_out: dict[str, int] = {}
    right = total = 0
    for record in labeled:
        X, y = holdout_data(record, holdout)
        correct = int((predict_proba_pixels(params, X).argmax(axis=1) == y).sum()) if len(y) else 0
        per_file[record["source"]] = correct / len(y) if len(y) else None
        held_out[record["sha256"]] = int(len(y))
        right, total = right + correct, total + len(y)
    metrics = {
        "labeled_rows": int(labeled_rows),
        "labeled_holdout_accuracy": right / total if total else None,
        "labeled": per_file,
    }
    return metrics, held_out


def champion_holdout_accuracy(
    models_dir: str | Location,
    labeled: Sequence[dict[str, Any]],
    holdout: float,
    champion: dict[str, Any],
) -> float | None:
    """The accuracy of the version that ``champion`` (a champion.json record) names on a
    run's labeled holdout: ``holdout`` of each of the ``labeled`` files' rows, scored as
    evaluate scores the run's own model. None when nothing is held out. The labeled gate's
    measure (``registry.promote_if_not_worse``): bind the first three with a partial.
    ModelError when the version does not load (core.registry.load, the safe loader)."""
    params = load(location(models_dir), champion["version"]).params
    return labeled_metrics(params, labeled, holdout, 0)[0]["labeled_holdout_accuracy"]


def evaluate_fit(
    fit: dict[str, Any],
    test_path: str | Location,
    work_dir: str | Location,
    labeled: Sequence[dict[str, Any]] = (),
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Score the split at ``test_path`` with the fit file ``fit`` names (and each labeled
    file's holdout slice), and write the metrics and plots into ``work_dir``. Returns the
    metrics, and ``labeled_held_out``: {SHA-256: rows held out}. PipelineError if the fit
    file changed since."""
    if sha256_file(location(fit["path"])) != fit["sha256"]:
        raise PipelineError(f"{fit['path']}: changed since training; rerun with --force")
    record = safe_load(fit["path"])
    X, y = read_split(test_path)
    proba = predict_proba_pixels(record["params"], pixels_of(X))
    result = compute_metrics(y, proba, record["config"]["n_classes"], record)
    extra, held_out = labeled_metrics(
        record["params"], labeled, holdout, fit.get("labeled_rows", 0)
    )
    result.update(extra)

    work_dir = location(work_dir)
    sample = result["misclassified_sample"]
    idx = [s["index"] for s in sample]
    plots.confusion_heatmap(np.array(result["confusion_matrix"]), work_dir / PLOTS[0])
    plots.learning_curve(record["curve"], work_dir / PLOTS[1])
    plots.misclassified_grid(
        X[idx], [s["true"] for s in sample], [s["predicted"] for s in sample], work_dir / PLOTS[2]
    )
    atomic_write_text(work_dir / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    for path in evaluation_outputs(work_dir):
        seal(path)
    return {**result, "labeled_held_out": held_out}
