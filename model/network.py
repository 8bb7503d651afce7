"""The network: parameters, initialization, forward and backward passes, and parameter checks.

Weights keep the notebook's shapes, ``W : (n_out, n_in)`` and ``b : (n_out,)``, and so do
the kernels: they compute in the notebook's layout, one column per sample,
``Z = W·Aᵀ + b`` with ``Aᵀ : (n_units, m)``. Callers hold samples as rows, ``X : (n, 784)``
(each image contiguous, which makes mini-batch gathers cheap); ``X.T`` is a free view.
In this layout the softmax max/sum run down columns, which NumPy vectorizes well, while
a per-row reduction over 10 classes would not: that alone was ~15% of a training step.

The public ``forward``/``backward`` allocate their outputs and work with row-major
arrays. They run the same in-place kernels (``_forward_into``/``_backward_into``) that
the trainer calls with preallocated buffers, so the gradient check in the tests covers
the code that trains. Everything works in the parameters' dtype: float32 for training,
float64 for the gradient check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.config import ModelConfig

# One (W, b) pair per layer, input to output: W (n_out, n_in), b (n_out,).
Params = list[tuple[np.ndarray, np.ndarray]]
Grads = list[tuple[np.ndarray, np.ndarray]]


def init_params(config: ModelConfig, rng: np.random.Generator | None = None) -> Params:
    """Draw float32 parameters for ``config`` from ``rng`` (default: ``default_rng(config.seed)``).

    "he": W ~ N(0, 2 / n_in), which keeps the variance of ReLU activations steady from
    layer to layer; b = 0. "uniform": W and b ~ U(-0.5, 0.5), the notebook's init.
    """
    if rng is None:
        rng = np.random.default_rng(config.seed)
    sizes = config.layer_sizes
    params: Params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        if config.init == "he":
            W = rng.standard_normal((n_out, n_in), dtype=np.float32)
            W *= np.float32(np.sqrt(2.0 / n_in))
            b = np.zeros(n_out, dtype=np.float32)
        else:
            W = rng.random((n_out, n_in), dtype=np.float32) - np.float32(0.5)
            b = rng.random(n_out, dtype=np.float32) - np.float32(0.5)
        params.append((W, b))
    return params


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``Z : (n_samples, n_classes)``, stable for any finite logits."""
    PT = np.array(Z.T, copy=True, order="C")
    _softmax_inplace(PT, np.empty(PT.shape[1], dtype=PT.dtype))
    return PT.T


def forward(params: Params, X: np.ndarray) -> list[np.ndarray]:
    """Activations ``[X, A_1, ..., A_L]``: ReLU for hidden layers, ``A_L`` = softmax probabilities.

    ``X : ndarray of shape (n_samples, n_inputs)``; ``A_i`` has shape (n_samples, n_i).
    ReLU'(Z) is 1 where Z > 0, which is exactly where A > 0, so backward needs no Z.
    """
    dtype = params[0][0].dtype
    m = X.shape[0]
    acts = [np.empty((W.shape[0], m), dtype=dtype) for W, _ in params]
    _forward_into(_with_columns(params), X.T, acts, np.empty(m, dtype=dtype))
    return [X, *(A.T for A in acts)]


def backward(params: Params, activations: Sequence[np.ndarray], y: np.ndarray) -> Grads:
    """Mean cross-entropy gradients ``[(dW_1, db_1), ...]`` for ``forward``'s activations.

    ``y : ndarray of shape (n_samples,)`` holds integer labels. The bias gradient has one
    entry per unit (the notebook summed it to a scalar).
    """
    X, *acts = activations
    dtype = params[0][0].dtype
    m = X.shape[0]
    probs_t = acts[-1].T
    # Softmax followed by cross-entropy has dLoss/dZ_L = probs - onehot(y): the softmax
    # Jacobian times -onehot/probs collapses to this, so no division by tiny probs.
    delta = probs_t - one_hot(y, probs_t.shape[0], dtype).T
    delta /= dtype.type(m)
    grads = [(np.empty_like(W), np.empty_like(b)) for W, b in params]
    hidden = [A.T for A in acts[:-1]]
    bufs = [np.empty_like(A) for A in hidden]
    masks = [np.empty_like(A) for A in hidden]
    _backward_into(params, X.T, hidden, delta, grads, bufs, masks)
    return grads


def update(params: Params, grads: Grads, learning_rate: float) -> Params:
    """One gradient-descent step, ``W := W - alpha * dW`` (new arrays; inputs untouched)."""
    lr = params[0][0].dtype.type(learning_rate)
    return [(W - lr * dW, b - lr * db) for (W, b), (dW, db) in zip(params, grads, strict=True)]


def check_params(params: Params, config: ModelConfig) -> None:
    """Raise ValueError unless ``params`` has the layers, shapes and dtype ``config`` implies.

    Used when loading a saved model, so a model never scores with weights that do not
    belong to its config (wrong input size, class count, widths, dtype or NaN weights).
    """
    sizes = config.layer_sizes
    n_layers = len(sizes) - 1
    if not isinstance(params, (list, tuple)) or len(params) != n_layers:
        got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
        raise ValueError(f"params has {got} layers, expected {n_layers} for layer sizes {sizes}")
    for i, layer in enumerate(params):
        if not isinstance(layer, (list, tuple)) or len(layer) != 2:
            raise ValueError(f"layer {i}: expected a (W, b) pair, got {type(layer).__name__}")
        n_in, n_out = sizes[i], sizes[i + 1]
        for name, arr, shape in (("W", layer[0], (n_out, n_in)), ("b", layer[1], (n_out,))):
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"layer {i}: {name} is {type(arr).__name__}, not a numpy array")
            if arr.shape != shape:
                raise ValueError(
                    f"layer {i}: {name} has shape {arr.shape}, expected {shape} "
                    f"for layer sizes {sizes}"
                )
            if arr.dtype != np.float32:
                raise ValueError(f"layer {i}: {name} has dtype {arr.dtype}, expected float32")
            if not np.isfinite(arr).all():
                raise ValueError(f"layer {i}: {name} contains NaN or infinite values")


def layer_sizes_of(params: Params) -> tuple[int, ...]:
    """Widths from input to output implied by ``params``, checking that layers chain up."""
    if not params:
        raise ValueError("params is empty")
    sizes = [params[0][0].shape[1]]
    for i, (W, b) in enumerate(params):
        if W.ndim != 2 or W.shape[1] != sizes[-1] or b.shape != (W.shape[0],):
            raise ValueError(
                f"layer {i}: W {W.shape} and b {b.shape} do not follow a layer of width {sizes[-1]}"
            )
        sizes.append(W.shape[0])
    return tuple(sizes)


# NumPy's OpenBLAS multiplies small matrices with a dedicated kernel while M*N*K stays
# under about 1e6 and switches to its packing GEMM above that, which for a 10-unit layer
# over 784 inputs is 2-3x slower per row on the 2-core Xeon we measured (the switch falls
# between 120 and 126 rows). So narrow first layers are computed in blocks of rows below
# the switch, and wide ones, where GEMM is efficient, in whole chunks.
_SMALL_GEMM_MNK = 900_000


def block_rows(params: Params, limit: int) -> int:
    """Rows per BLAS call for ``params``: a small-kernel-sized block, or ``limit``."""
    width, n_in = params[0][0].shape
    rows = _SMALL_GEMM_MNK // max(1, width * n_in)
    return min(rows, limit) if rows >= 32 else limit


def one_hot(y: np.ndarray, n_classes: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """``Y : (n_samples, n_classes)`` with Y[i, y[i]] = 1 and zeros elsewhere."""
    return np.eye(n_classes, dtype=dtype)[y]


def _with_columns(params: Params) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b as an (n_out, 1) column view) per layer, for broadcasting over samples."""
    return [(W, b[:, None]) for W, b in params]


def _softmax_inplace(Z: np.ndarray, col: np.ndarray) -> None:
    """Overwrite ``Z : (k, m)`` with softmax over each column, ``col : (m,)`` scratch.

    Subtracting the column max first means exp never overflows and the largest term is
    exactly 1, so the sum is in [1, k]. ufunc.reduce with positional arguments skips
    np.max/np.sum's Python wrappers, which matters at 64 samples per call.
    """
    np.maximum.reduce(Z, 0, None, col)
    np.subtract(Z, col, Z)
    np.exp(Z, Z)
    np.add.reduce(Z, 0, None, col)
    np.divide(Z, col, Z)


def _forward_into(
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    XT: np.ndarray,
    acts: Sequence[np.ndarray],
    col: np.ndarray,
) -> None:
    """Forward pass of ``XT : (n_in, m)`` into ``acts[i] : (n_{i+1}, m)``.

    ``layers`` holds (W, b column) pairs (see ``_with_columns``); ``acts[-1]`` receives
    the probabilities and may be a strided view; the other ``acts`` must be C-contiguous
    (np.dot, ~1 us cheaper per call than np.matmul, only writes to those).
    ``col : (m,)`` is scratch.
    """
    A = XT
    last = len(layers) - 1
    for i, (W, b) in enumerate(layers):
        Z = acts[i]
        if i < last:
            np.dot(W, A, out=Z)
            np.add(Z, b, Z)
            np.maximum(Z, 0, out=Z)
        else:
            np.matmul(W, A, out=Z)
            np.add(Z, b, Z)
        A = Z
    _softmax_inplace(A, col)


def _backward_into(
    params: Params,
    XT: np.ndarray,
    hidden: Sequence[np.ndarray],
    delta: np.ndarray,
    grads: Grads,
    bufs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
) -> None:
    """Backward pass from ``delta = dLoss/dZ_L : (k, m)`` into ``grads``.

    Notebook notation for layer 2 of 2: dW2 = dZ2·A1ᵀ, db2 = Σ_samples dZ2 (one per
    unit), dZ1 = W2ᵀ·dZ2 ∘ ReLU'(Z1), then dW1 = dZ1·Xᵀ. Any 1/m (and, in training, the
    learning rate) is folded into ``delta`` by the caller. ``hidden[i] : (n_{i+1}, m)``
    are the ReLU outputs; ``bufs``/``masks`` are scratch of the same shapes. ``delta``,
    ``bufs`` and the gradients must be C-contiguous (np.dot writes them).
    """
    for i in range(len(params) - 1, -1, -1):
        A_prev = hidden[i - 1] if i > 0 else XT
        gW, gb = grads[i]
        np.dot(delta, A_prev.T, out=gW)
        np.add.reduce(delta, 1, None, gb)
        if i > 0:
            dA = bufs[i - 1]
            np.dot(params[i][0].T, delta, out=dA)
            # sign(A) is 1 where the ReLU was active (A > 0) and 0 elsewhere.
            np.sign(A_prev, masks[i - 1])
            np.multiply(dA, masks[i - 1], dA)
            delta = dA
