"""Classification metrics in plain NumPy: accuracy, log-loss, confusion matrix, per-class scores.

Labels are integer arrays of shape (n_samples,); probabilities have shape
(n_samples, n_classes). Confusion matrices put the true class on rows, the predicted class
on columns (scikit-learn's convention).
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows where ``y_pred`` equals ``y_true``."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if y_true.size == 0:
        raise ValueError("accuracy of zero samples is undefined")
    return float(np.mean(y_true == y_pred))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean cross-entropy -log p[y], with p clipped to [eps, 1] for eps = finfo(dtype).eps.

    Clipping keeps a confident wrong answer (p = 0) at a large finite loss instead of inf.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    if proba.ndim != 2 or y_true.ndim != 1 or proba.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"log_loss needs y_true (n,) and proba (n, n_classes), got {y_true.shape} "
            f"and {proba.shape}"
        )
    if y_true.size == 0:
        raise ValueError("log_loss of zero samples is undefined")
    _check_range(y_true, proba.shape[1], "y_true")
    dtype = proba.dtype if np.issubdtype(proba.dtype, np.floating) else np.float64
    eps = np.finfo(dtype).eps
    p_true = np.take_along_axis(proba, y_true[:, None].astype(np.intp), axis=1)[:, 0]
    return float(-np.mean(np.log(np.clip(p_true, eps, 1.0)), dtype=np.float64))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, ndarray of shape (n_classes, n_classes), int64: [true, predicted]."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    _check_range(y_true, n_classes, "y_true")
    _check_range(y_pred, n_classes, "y_pred")
    flat = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """Per-class "precision", "recall", "f1" (float64) and "support" (int64), each (n_classes,).

    A ratio with a zero denominator (a class never predicted, or absent) is 0.0, as in
    scikit-learn's ``zero_division=0``.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def most_confused_pairs(confusion: np.ndarray, top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` largest off-diagonal cells as (true, predicted, count), largest first.

    Zero cells are left out; ties go to the lower (true, predicted) pair.
    """
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {cm.shape}")
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[: max(top, 0)]
    rows, cols = np.unravel_index(order, off.shape)
    return [(int(r), int(c), int(off[r, c])) for r, c in zip(rows, cols, strict=True) if off[r, c]]


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}"
        )
    return y_true, y_pred


def _check_range(y: np.ndarray, n_classes: int, name: str) -> None:
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} has dtype {y.dtype}, expected integer labels")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name} has labels in [{y.min()}, {y.max()}], outside [0, {n_classes - 1}]"
        )


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out
