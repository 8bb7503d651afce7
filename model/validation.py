"""Input checks of fit: each failure is an InputError with a one-line message."""

from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """Features or labels the model cannot use; the message names what is wrong."""


def check_features(
    X: np.ndarray, n_inputs: int, *, name: str = "X", require_float32: bool = False
) -> None:
    """Check the shape and dtype of ``X : ndarray of shape (n_samples, n_inputs)``; its
    values are ``check_feature_values``' job."""
    if not isinstance(X, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(X).__name__}")
    if X.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (n_samples, {n_inputs}), got {X.ndim}-D shape {X.shape}"
        )
    if X.shape[1] != n_inputs:
        raise InputError(f"{name} has {X.shape[1]} features per row, expected {n_inputs}")
    if not np.issubdtype(X.dtype, np.floating):
        raise InputError(
            f"{name} has dtype {X.dtype}, expected float32 scaled to [0, 1] "
            "(divide uint8 pixels by 255)"
        )
    if require_float32 and X.dtype != np.float32:
        raise InputError(f"{name} has dtype {X.dtype}, expected float32")


def check_feature_values(X: np.ndarray, *, name: str = "X") -> None:
    """Raise InputError unless every value of ``X`` is finite and within [0, 1]."""
    if X.size == 0:
        return
    # min/max propagate NaN, so two reductions find NaN, inf and out-of-range values.
    # Blocks of ~1 MB let the second reduction read from cache instead of memory.
    step = max(1, (1 << 20) // max(1, X[0].nbytes))
    lo, hi = np.inf, -np.inf
    for start in range(0, X.shape[0], step):
        block = X[start : start + step]
        lo, hi = np.minimum(lo, block.min()), np.maximum(hi, block.max())
    if lo >= 0.0 and hi <= 1.0:
        return
    bad_nonfinite = ~np.isfinite(X)
    if bad_nonfinite.any():
        row, col = np.argwhere(bad_nonfinite)[0]
        raise InputError(
            f"{name} contains NaN or infinite values "
            f"(first at row {row}, column {col}: {X[row, col]})"
        )
    row, col = np.argwhere((X < 0.0) | (X > 1.0))[0]
    raise InputError(
        f"{name} has values outside [0, 1] (min {lo:g}, max {hi:g}; first at row "
        f"{row}, column {col}: {X[row, col]:g}); scale pixels by 1/255"
    )


def check_labels(y: np.ndarray, n_samples: int, n_classes: int, *, name: str = "y") -> None:
    """Check ``y : ndarray of shape (n_samples,)`` holds integer labels in [0, n_classes)."""
    if not isinstance(y, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(y).__name__}")
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-D (n_samples,), got {y.ndim}-D shape {y.shape}")
    if y.shape[0] != n_samples:
        raise InputError(f"{name} has {y.shape[0]} labels but X has {n_samples} rows")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{name} has dtype {y.dtype}, expected integer class labels")
    if y.size == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        row = int(np.flatnonzero(y == bad)[0])
        raise InputError(
            f"{name} has label {bad} at row {row}, outside [0, {n_classes - 1}] "
            f"for n_classes={n_classes}"
        )
