"""Training: a seeded validation split, then mini-batch (or full-batch) SGD with momentum.

``fit`` returns the weights and the learning curve (per epoch: loss and accuracy on the
training split and on the validation split). All arithmetic is float32 and seeded, so the
same data, config and BLAS thread count give bit-identical weights.

Speed comes from allocating nothing per step: the parameters, their gradients and the
momentum live in three flat float32 vectors (``Params`` are views into them), so an
update is one to three vector ops whatever the depth, and every intermediate, the
gathered batch included, goes into a buffer made once per fit. benchmarks/README.md has
the measurements behind each choice.

``X`` may also be uint8 pixels (0-255), as labeled data is kept (``core.labeled``): each
gathered batch (and each chunk of the validation rows) is then scaled to float32
pixel / 255 in its buffer, the same values the float32 Parquet split holds, so X is never
copied whole as float32 (4 bytes a pixel where it keeps 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.config import ModelConfig
from model.network import (
    Params,
    _backward_into,
    _forward_into,
    _with_columns,
    block_rows,
    init_params,
)
from model.predict import _predict_proba_t_unchecked
from model.validation import InputError, check_feature_values, check_features, check_labels

PIXEL_MAX = np.float32(255)
VALIDATION_CHUNK = 8192  # rows per validation pass; float32 input is scored in such chunks


@dataclass(frozen=True)
class EpochStats:
    """One point of the learning curve.

    ``train_*`` average the epoch's mini-batches as each was seen, before its update (as
    Keras and scikit-learn report them; free to compute). ``val_*`` use the weights at the
    epoch's end. A row counts as correct when its true class has the top probability.
    """

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float  # wall time of this epoch, validation included


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns: the weights of ``best_epoch`` and the whole curve."""

    params: Params
    curve: list[dict[str, Any]]  # EpochStats as dicts, one per epoch run
    best_epoch: int  # lowest validation loss with early stopping; else the last epoch
    validation_accuracy: float  # at best_epoch
    train_seconds: float  # wall time of the whole fit, checks and split included
    config: ModelConfig
    n_train: int
    n_validation: int
    stopped_early: bool


class TrainingDiverged(FloatingPointError):
    """The loss or the weights stopped being finite: the learning rate is too high."""


def fit(
    X: np.ndarray,
    y: np.ndarray,
    config: ModelConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitResult:
    """Train a network described by ``config`` on ``X`` and ``y``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, config.n_inputs), float32 in [0, 1], or uint8
        pixels 0-255 (the network then sees pixel / 255, scaled a batch at a time)
    y : ndarray of shape (n_samples,), integer labels in [0, config.n_classes)
    config : ModelConfig
    on_epoch : called with each epoch's EpochStats (progress logging)

    Raises InputError for bad inputs, TrainingDiverged if training diverges.
    """
    t_start = time.perf_counter()
    pixels = isinstance(X, np.ndarray) and X.dtype == np.uint8
    if pixels:  # every uint8 is a valid pixel: only the shape needs checking
        _check_pixel_shape(X, config.n_inputs)
    else:
        check_features(X, config.n_inputs, require_float32=True)
        check_feature_values(X)
    check_labels(y, X.shape[0], config.n_classes)
    init_seq, split_seq, shuffle_seq = seed_streams(config.seed)
    train_idx, val_idx = split_indices(X.shape[0], config.validation_fraction, split_seq)
    X_val, y_val = X[val_idx], y[val_idx]

    trainer = _Trainer(init_params(config, np.random.default_rng(init_seq)), config)
    shuffle_rng = np.random.default_rng(shuffle_seq)
    full_batch = config.batch_size is None or config.batch_size >= train_idx.size
    if full_batch:  # one gather up front (uint8 stays uint8); the gradient ignores order
        X_train, y_train = X[train_idx], y[train_idx]

    curve: list[dict[str, Any]] = []
    best_loss, best_epoch, best_theta = math.inf, 0, trainer.theta.copy()
    stopped_early = False
    patience = config.early_stopping_patience
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = learning_rate_at(config, epoch - 1)
            if full_batch:
                train_loss, train_acc = trainer.epoch(X_train, y_train, lr)
            else:
                # Each batch gathers its rows as it goes: in cache for both of its
                # matrix products. (A background thread preparing shuffled copies an
                # epoch ahead measured slower here: it competes for memory bandwidth.)
                order = shuffle_rng.permutation(train_idx)
                train_loss, train_acc = trainer.epoch(X, y[order], lr, order)
            if not (math.isfinite(train_loss) and np.isfinite(trainer.theta).all()):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch} (train loss {train_loss}); "
                    f"lower learning_rate (now {config.learning_rate})"
                )
            val_proba_t = _validation_proba_t(trainer.params, X_val)
            val_loss, val_acc = _loss_and_accuracy_t(y_val, val_proba_t)
            stats = EpochStats(
                epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - t0
            )
            curve.append(asdict(stats))
            if on_epoch is not None:
                on_epoch(stats)
            if patience is None:
                best_epoch = epoch
            elif val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_theta[...] = trainer.theta
            elif epoch - best_epoch >= patience:
                stopped_early = epoch < config.epochs
                break
    if patience is not None:
        trainer.theta[...] = best_theta
    return FitResult(
        params=[(W.copy(), b.copy()) for W, b in trainer.params],
        curve=curve,
        best_epoch=best_epoch,
        validation_accuracy=curve[best_epoch - 1]["val_accuracy"],
        train_seconds=time.perf_counter() - t_start,
        config=config,
        n_train=int(train_idx.size),
        n_validation=int(val_idx.size),
        stopped_early=stopped_early,
    )


def _validation_proba_t(params: Params, X_val: np.ndarray) -> np.ndarray:
    """Probabilities (n_classes, n) of the validation rows: float32 rows as they are,
    uint8 pixels scaled a chunk at a time. The chunks are those predict's own loop makes
    of float32 rows, so both inputs go through the same BLAS calls."""
    if X_val.dtype != np.uint8:
        return _predict_proba_t_unchecked(params, X_val, chunk_size=VALIDATION_CHUNK)
    n = X_val.shape[0]
    out = np.empty((params[-1][0].shape[0], n), dtype=np.float32)
    scaled = np.empty((min(VALIDATION_CHUNK, n), X_val.shape[1]), dtype=np.float32)
    for start in range(0, n, VALIDATION_CHUNK):
        chunk = X_val[start : start + VALIDATION_CHUNK]
        rows = _scale_pixels(chunk, scaled[: chunk.shape[0]])
        proba_t = _predict_proba_t_unchecked(params, rows, chunk_size=VALIDATION_CHUNK)
        out[:, start : start + chunk.shape[0]] = proba_t
    return out


def _scale_pixels(pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` = uint8 ``pixels`` / 255 in float32, the Parquet split's values exactly.

    The split's table is ``np.arange(256, dtype=np.float32) / np.float32(255)``; an IEEE
    division is correctly rounded, so dividing each pixel gives the same float32 as
    looking it up (tests check all 256), and is ~2x faster than np.take from the table.
    """
    return np.divide(pixels, PIXEL_MAX, out=out)


def _check_pixel_shape(X: np.ndarray, n_inputs: int) -> None:
    """check_features' shape checks, for uint8 pixels (which it refuses, being for floats)."""
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (n_samples, {n_inputs}), got {X.ndim}-D shape {X.shape}")
    if X.shape[1] != n_inputs:
        raise InputError(f"X has {X.shape[1]} features per row, expected {n_inputs}")


def seed_streams(
    seed: int,
) -> tuple[np.random.SeedSequence, np.random.SeedSequence, np.random.SeedSequence]:
    """Independent (init, split, shuffle) streams from one seed, so that changing e.g.
    validation_fraction leaves the initial weights alone."""
    init_seq, split_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(3)
    return init_seq, split_seq, shuffle_seq


def split_indices(
    n_samples: int, validation_fraction: float, seed: int | np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) row indices; a seeded shuffle puts ~fraction in validation."""
    if n_samples < 2:
        raise InputError(f"need at least 2 rows to carve a validation split, got {n_samples}")
    n_val = min(max(round(n_samples * validation_fraction), 1), n_samples - 1)
    perm = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def learning_rate_at(config: ModelConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch`` under ``config.lr_schedule``."""
    lr = config.learning_rate
    if config.lr_schedule == "exponential":
        return lr * config.lr_decay**epoch
    if config.lr_schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return lr


class _Trainer:
    """Flat parameter/gradient/velocity vectors and per-batch buffers for one fit.

    Buffers are in the kernels' layout, (units, samples); see model.network.
    """

    def __init__(self, params: Params, config: ModelConfig) -> None:
        self.config = config
        n_total = sum(W.size + b.size for W, b in params)
        self.theta = np.empty(n_total, dtype=np.float32)
        self.grad = np.zeros(n_total, dtype=np.float32)
        self.velocity = np.zeros(n_total, dtype=np.float32) if config.momentum > 0 else None
        self.params = _views(self.theta, params, copy_values=True)
        self.grads = _views(self.grad, params, copy_values=False)
        block_grad = np.zeros(n_total, dtype=np.float32)  # for batches of several blocks
        self._block_grads = (_views(block_grad, params, copy_values=False), block_grad)
        self.layers = _with_columns(self.params)
        self.momentum = np.float32(config.momentum)
        self._bufs: dict[int, tuple[list[np.ndarray], ...]] = {}

    def buffers(self, m: int) -> tuple[list[np.ndarray], ...]:
        """(hidden activations, their gradients, ReLU masks, [delta, col]) for m samples."""
        if m not in self._bufs:
            widths = [W.shape[0] for W, _ in self.params]
            hidden = [np.empty((w, m), dtype=np.float32) for w in widths[:-1]]
            bufs = [np.empty((w, m), dtype=np.float32) for w in widths[:-1]]
            masks = [np.empty((w, m), dtype=np.float32) for w in widths[:-1]]
            scratch = [np.empty((widths[-1], m), dtype=np.float32), np.empty(m, np.float32)]
            self._bufs[m] = (hidden, bufs, masks, scratch)
        return self._bufs[m]

    def epoch(
        self, X: np.ndarray, y: np.ndarray, lr: float, order: np.ndarray | None = None
    ) -> tuple[float, float]:
        """One pass of SGD over the rows ``order`` of ``X`` (default: all, in order).

        ``y`` holds the labels in the order trained. Returns the epoch's running (train
        loss, train accuracy): each batch's predictions before its update.
        """
        n = X.shape[0] if order is None else order.size
        B = min(self.config.batch_size or n, n)
        R = block_rows(self.params, B)  # rows per BLAS call; a batch may span blocks
        k = self.params[-1][0].shape[0]
        onehot_t = np.eye(k, dtype=np.float32)[:, y]  # (k, n); 2.2 MB for MNIST
        proba_t = np.empty((k, n), dtype=np.float32)  # each batch's softmax output
        layers, params, step = self.layers, self.params, self._step
        grads, grad = self.grads, self.grad
        block_grads, block_grad = self._block_grads
        pixels = X.dtype == np.uint8
        gather = order is not None
        xbuf = None
        if gather or pixels:  # float32 rows for the kernels
            xbuf = np.empty((min(B, R), X.shape[1]), dtype=np.float32)
        ubuf = np.empty((min(B, R), X.shape[1]), dtype=X.dtype) if gather and pixels else None
        full_scale = np.float32(lr / B)
        for start in range(0, n, B):
            stop = min(start + B, n)
            scale = full_scale if stop - start == B else np.float32(lr / (stop - start))
            for b in range(start, stop, R):
                e = min(b + R, stop)
                hidden, bufs, masks, (delta, col) = self.buffers(e - b)
                if xbuf is None:
                    xb_t = X[b:e].T
                elif not pixels:  # gather the rows now, so both matrix products find
                    # them in cache; mode="clip" (indices are valid) writes straight into
                    # the buffer, where the default "raise" goes through a temporary.
                    xb_t = np.take(X, order[b:e], axis=0, out=xbuf[: e - b], mode="clip").T
                else:  # uint8 pixels: gather them (a quarter of the bytes), scale in cache
                    rows = X[b:e]
                    if order is not None:
                        rows = np.take(X, order[b:e], axis=0, out=ubuf[: e - b], mode="clip")
                    xb_t = _scale_pixels(rows, xbuf[: e - b]).T
                proba = proba_t[:, b:e]
                _forward_into(layers, xb_t, [*hidden, proba], col)
                # Softmax + cross-entropy: dLoss/dZ = probs - Y (network.backward);
                # alpha/m is folded in here, once, on a (k, rows) array.
                np.subtract(proba, onehot_t[:, b:e], delta)
                np.multiply(delta, scale, delta)
                if b == start:  # the batch's first block writes the gradient...
                    _backward_into(params, xb_t, hidden, delta, grads, bufs, masks)
                else:  # ...later blocks add theirs
                    _backward_into(params, xb_t, hidden, delta, block_grads, bufs, masks)
                    np.add(grad, block_grad, grad)
            step()
        return _loss_and_accuracy_t(y, proba_t)

    def _step(self) -> None:
        """theta -= g (plain), or v = mu*v - g; theta += v; g already holds alpha*grad."""
        if self.velocity is None:
            np.subtract(self.theta, self.grad, self.theta)
        else:
            np.multiply(self.velocity, self.momentum, self.velocity)
            np.subtract(self.velocity, self.grad, self.velocity)
            np.add(self.theta, self.velocity, self.theta)


def _loss_and_accuracy_t(y: np.ndarray, proba_t: np.ndarray) -> tuple[float, float]:
    """Mean clipped log-loss and accuracy of ``proba_t : (n_classes, n)`` against ``y``.

    A row counts as correct when its true class has the highest probability (a tie
    counts too): a column-wise max is ~20x cheaper than argmax in this layout.
    """
    p_true = proba_t[y, np.arange(y.size)]
    eps = np.finfo(proba_t.dtype).eps
    loss = -np.mean(np.log(np.clip(p_true, eps, 1.0)), dtype=np.float64)
    return float(loss), float(np.count_nonzero(p_true >= proba_t.max(axis=0)) / y.size)


def _views(flat: np.ndarray, like: Params, *, copy_values: bool) -> Params:
    """(W, b) views into ``flat`` shaped like ``like``, optionally filled from it."""
    out: Params = []
    offset = 0
    for W, b in like:
        Wv = flat[offset : offset + W.size].reshape(W.shape)
        offset += W.size
        bv = flat[offset : offset + b.size]
        offset += b.size
        if copy_values:
            Wv[...] = W
            bv[...] = b
        out.append((Wv, bv))
    return out
