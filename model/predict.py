"""Scoring: class probabilities and labels, computed in chunks of rows.

Memory stays bounded whatever the number of rows: besides the output, one chunk's
activations (chunk_size x the layer widths) and, for non-float32 input, one chunk's
float32 copy. Each chunk's values are validated (finite, in [0, 1]) just before it is scored.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from model.network import Params, _forward_into, _with_columns, block_rows, layer_sizes_of
from model.validation import check_feature_values, check_features

DEFAULT_CHUNK_SIZE = 8192


def predict_proba(
    params: Params, X: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Class probabilities, ndarray of shape (n_samples, n_classes) in the params' dtype.

    ``X : ndarray of shape (n_samples, n_inputs)``, floating, values in [0, 1].
    Raises InputError on wrong shape, dtype, NaN/inf or out-of-range values.
    """
    sizes = layer_sizes_of(params)
    check_features(X, sizes[0])
    return _predict_proba(params, X, chunk_size, validate=True)


def predict(params: Params, X: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Most probable class per row, ndarray of shape (n_samples,) and dtype int64."""
    sizes = layer_sizes_of(params)
    check_features(X, sizes[0])
    labels = np.empty(X.shape[0], dtype=np.int64)
    for start, stop, proba_t in _iter_blocks(params, X, chunk_size, validate=True):
        np.argmax(proba_t, axis=0, out=labels[start:stop])
    return labels


def _predict_proba_t_unchecked(params: Params, X: np.ndarray, chunk_size: int) -> np.ndarray:
    """Probabilities laid out (n_classes, n_samples), for inputs already validated."""
    out = np.empty((params[-1][0].shape[0], X.shape[0]), dtype=params[0][0].dtype)
    for start, stop, proba_t in _iter_blocks(params, X, chunk_size, validate=False):
        out[:, start:stop] = proba_t
    return out


def _predict_proba(params: Params, X: np.ndarray, chunk_size: int, validate: bool) -> np.ndarray:
    out = np.empty((X.shape[0], params[-1][0].shape[0]), dtype=params[0][0].dtype)
    for start, stop, proba_t in _iter_blocks(params, X, chunk_size, validate):
        out[start:stop] = proba_t.T
    return out


def _iter_blocks(
    params: Params, X: np.ndarray, chunk_size: int, validate: bool
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (start, stop, probabilities of rows start:stop laid out (n_classes, rows)).

    Rows are validated and cast ``chunk_size`` at a time, and pushed through the network
    in blocks of at most that many rows (fewer for narrow layers, see
    ``model.network.block_rows``). One set of buffers serves every block; the yielded
    array is overwritten by the next.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    dtype = params[0][0].dtype
    layers = _with_columns(params)
    n = X.shape[0]
    m = min(chunk_size, max(n, 1))
    block = block_rows(params, m)
    acts = [np.empty((W.shape[0], block), dtype=dtype) for W, _ in params]
    col = np.empty(block, dtype=dtype)
    for start in range(0, n, m):
        stop = min(start + m, n)
        chunk = X[start:stop]
        if validate:
            check_feature_values(chunk, row_offset=start)
        if chunk.dtype != dtype:
            chunk = chunk.astype(dtype)
        for b in range(0, stop - start, block):
            e = min(b + block, stop - start)
            # A short last block gets its own (small) buffers: np.dot writes only
            # C-contiguous arrays.
            block_acts = acts if e - b == block else [np.empty_like(A[:, : e - b]) for A in acts]
            _forward_into(layers, chunk[b:e].T, block_acts, col[: e - b])
            yield start + b, start + e, block_acts[-1]
