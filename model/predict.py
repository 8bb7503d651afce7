"""Prediction: class probabilities, two ways.

``predict_proba_pixels`` is the model of every reported result, ``score``'s and
``evaluate``'s: it takes the integer pixels as read and gives each row a result that
depends only on that row and the weights - not on the row's position in a block, the
block size, the thread count or the CPU's BLAS kernel. BLAS rounds a row's float32 sums
differently by position (its kernels treat a block's edge rows apart), which once made
one image score 0.6601424 in one place and 0.66014254 in another. Here the first layer is
summed exactly (see ``_exact_slices``), the later layers and the softmax run in float64
with a fixed order of operations per row, and no step reduces across rows.

``_predict_proba_t_unchecked`` is the float32 forward pass in chunks of rows, with no
such promise: training's per-epoch validation (``model.train``) runs it, being fast and
in training's own arithmetic."""

from __future__ import annotations

import numpy as np

from model.network import (
    _SMALL_GEMM_MNK,
    Params,
    _forward_into,
    _with_columns,
    block_rows,
    layer_sizes_of,
)
from model.validation import InputError

PIXEL_MAX = 255  # the network's input is pixels / PIXEL_MAX
# Rows per pass of predict_proba_pixels' elementwise layers (results do not depend on it):
# enough to spread NumPy's per-call cost, few enough to stay in cache.
PIXEL_BLOCK_ROWS = 1024


def _predict_proba_t_unchecked(params: Params, X: np.ndarray, chunk_size: int) -> np.ndarray:
    """Probabilities laid out (n_classes, n_samples), for ``X : (n_samples, n_inputs)``
    already validated and in the params' dtype (``model.train.fit`` checks both).

    Rows are pushed through the network ``chunk_size`` at a time, in blocks of at most
    that many rows (fewer for narrow layers, see ``model.network.block_rows``). Memory
    stays bounded whatever the number of rows: besides the output, one set of block-sized
    buffers serves every block.
    """
    dtype = params[0][0].dtype
    layers = _with_columns(params)
    n = X.shape[0]
    m = min(chunk_size, max(n, 1))
    block = block_rows(params, m)
    acts = [np.empty((W.shape[0], block), dtype=dtype) for W, _ in params]
    col = np.empty(block, dtype=dtype)
    out = np.empty((params[-1][0].shape[0], n), dtype=dtype)
    for start in range(0, n, m):
        stop = min(start + m, n)
        for b in range(start, stop, block):
            e = min(b + block, stop)
            # A short last block gets its own (small) buffers: np.dot writes only
            # C-contiguous arrays.
            block_acts = acts if e - b == block else [np.empty_like(A[:, : e - b]) for A in acts]
            _forward_into(layers, X[b:e].T, block_acts, col[: e - b])
            out[:, b:e] = block_acts[-1]
    return out


def predict_proba_pixels(
    params: Params, pixels: np.ndarray, block_rows: int = PIXEL_BLOCK_ROWS
) -> np.ndarray:
    """Class probabilities, ndarray of shape (n_samples, n_classes), float64.

    ``pixels : ndarray of shape (n_samples, n_inputs)``, uint8; the network sees
    pixels / 255. Each row's probabilities are a function of that row and ``params``
    alone, bit for bit (see the module docstring). Raises InputError on wrong shape or dtype.
    """
    sizes = layer_sizes_of(params)
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2:
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else pixels
        raise InputError(f"pixels must be uint8 of shape (n_samples, {sizes[0]}), got {got}")
    if pixels.shape[1] != sizes[0]:
        raise InputError(f"pixels has {pixels.shape[1]} values per row, expected {sizes[0]}")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    n = pixels.shape[0]
    out = np.empty((n, sizes[-1]))
    # The first slice is dense; later ones hold only the bits of a unit's smallest weights,
    # so their all-zero input columns are left out of the product (zeros add nothing).
    first, *finer = _exact_slices(params[0][0], PIXEL_MAX)
    finer_cols = [np.flatnonzero(S.any(axis=0)) for S in finer]
    slices_t = [first.T] + [S[:, cols].T for S, cols in zip(finer, finer_cols, strict=True)]
    layers = [(W.astype(np.float64), b.astype(np.float64)[:, None]) for W, b in params]
    m = min(block_rows, max(n, 1))
    # Rows per BLAS call: as for float32 (network.block_rows), blocks under OpenBLAS's
    # small-matrix limit run single-threaded on its small kernel, 2-10x cheaper in CPU
    # for a narrow first layer than its threaded GEMM on a busy machine.
    gemm = _SMALL_GEMM_MNK // first.size
    gemm = min(gemm, m) if gemm >= 32 else m
    sums = [np.empty((m, first.shape[0])) for _ in slices_t]
    x = np.empty((gemm, sizes[0]))
    for start in range(0, n, m):
        rows = min(m, n - start)
        for a in range(0, rows, gemm):
            b = min(a + gemm, rows)
            x[: b - a] = pixels[start + a : start + b]  # exact: every uint8 is a float64
            np.dot(x[: b - a], slices_t[0], out=sums[0][a:b])
            for cols, S_t, out_i in zip(finer_cols, slices_t[1:], sums[1:], strict=True):
                np.dot(x[: b - a, cols], S_t, out=out_i[a:b])
        out[start : start + rows] = _layers_after_sums([s[:rows] for s in sums], layers).T
    return out


def _exact_slices(W: np.ndarray, max_value: int) -> list[np.ndarray]:
    """``W`` as float64 slices of its shape whose sum is ``W``, exactly.

    Each slice's product with integer inputs in [0, max_value] is exact in float64 in any
    order of summation, so BLAS returns the same bits for a row wherever it sits. Why:
    a slice's entries for unit j are multiples of a power of two g_j, and every partial
    sum of slice * x lies below max_value * |W_j|_1 <= 2**53 * g_j, so it is an integer
    times g_j that float64 holds exactly (products included, FMA or not). What one slice
    cannot hold goes to the next, on a grid 2**35 finer; float32 weights need 2 slices
    unless a unit's weights span more than 2**-47 of its largest (then 3, ...).
    """
    if not np.isfinite(W).all():
        raise ValueError("weights contain NaN or infinite values")
    rest = W.astype(np.float64)
    slices = []
    while rest.any() or not slices:
        l1 = np.abs(rest).sum(axis=1)  # rounded: one extra bit of headroom covers that
        _, exp = np.frexp(max_value * l1)  # max_value * l1 <= 2**exp
        grid = np.ldexp(1.0, exp + 1 - 53)[:, None]
        piece = np.trunc(rest / grid) * grid  # |piece| <= |rest|: the bound above holds
        slices.append(piece)
        rest = rest - piece  # exact: the bits of rest below the grid
    return slices


def _layers_after_sums(
    sums: list[np.ndarray], layers: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Probabilities (n_classes, m) from the exact first-layer ``sums``, (m, units) per slice.

    Everything here is elementwise NumPy on whole arrays laid out (units, m), so each row
    goes through the same operations in the same order wherever it sits, and no step
    reduces across rows. ``layers`` holds float64 (W, b column) pairs.
    """
    Z = sums[0].T.copy()
    for finer in sums[1:]:
        Z += finer.T
    Z /= PIXEL_MAX
    Z += layers[0][1]
    for W, b in layers[1:]:
        np.maximum(Z, 0, out=Z)
        Z = _dot_in_order(W, Z)
        Z += b
    # Softmax down each column. exp runs on one contiguous array (NumPy then uses one
    # kernel for every element), and the sum adds the classes one by one in class order.
    Z -= Z.max(axis=0)
    np.exp(Z, out=Z)
    total = Z[0].copy()
    for row in Z[1:]:
        total += row
    Z /= total
    return Z


def _dot_in_order(W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``W @ A`` for ``W : (n_out, k)``, ``A : (k, m)``, summed in order k = 0, 1, ... per entry.

    BLAS would pick the order (and FMA use) by an entry's position; these layers are
    narrow, so k elementwise passes over contiguous rows of ``A`` cost little.
    """
    Z = W[:, :1] * A[0]
    term = np.empty_like(Z)
    for k in range(1, W.shape[1]):
        np.multiply(W[:, k : k + 1], A[k], out=term)
        Z += term
    return Z
