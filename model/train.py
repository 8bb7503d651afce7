"""Training: a seeded validation split, then mini-batch (or full-batch) SGD with momentum.

``fit`` returns the weights and the learning curve (per epoch: loss and accuracy on the
training split and on the validation split). All arithmetic is float32 and seeded, so the
same data, config and BLAS thread count give bit-identical weights.

Speed comes from doing no per-step allocation beyond the batch gather: the parameters,
their gradients and the momentum live in three flat float32 vectors (``Params`` are views
into them), so an update is one to three vector ops whatever the depth, and every
intermediate goes into a buffer made once per fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.config import ModelConfig
from model.metrics import log_loss
from model.network import Params, _backward_into, _forward_into, _with_columns, init_params
from model.predict import _predict_proba_unchecked
from model.validation import InputError, check_feature_values, check_features, check_labels


@dataclass(frozen=True)
class EpochStats:
    """One point of the learning curve.

    ``train_*`` average the epoch's mini-batches as each was seen, before its update (as
    Keras and scikit-learn report them; free to compute). ``val_*`` use the weights at the
    epoch's end.
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


def fit(
    X: np.ndarray,
    y: np.ndarray,
    config: ModelConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitResult:
    """Train a network described by ``config`` on ``X`` and ``y``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, config.n_inputs), float32 in [0, 1]
    y : ndarray of shape (n_samples,), integer labels in [0, config.n_classes)
    config : ModelConfig
    on_epoch : called with each epoch's EpochStats (progress logging)

    Raises InputError for bad inputs, FloatingPointError if training diverges.
    """
    t_start = time.perf_counter()
    check_features(X, config.n_inputs, require_float32=True)
    check_feature_values(X)
    check_labels(y, X.shape[0], config.n_classes)
    # Independent streams, so e.g. changing validation_fraction leaves the init alone.
    init_seq, split_seq, shuffle_seq = np.random.SeedSequence(config.seed).spawn(3)
    train_idx, val_idx = split_indices(X.shape[0], config.validation_fraction, split_seq)
    X_val, y_val = X[val_idx], y[val_idx]

    trainer = _Trainer(init_params(config, np.random.default_rng(init_seq)), config)
    shuffle_rng = np.random.default_rng(shuffle_seq)
    full_batch = config.batch_size is None or config.batch_size >= train_idx.size
    if full_batch:  # one gather up front; the full-batch gradient ignores order
        X_train, y_train = X[train_idx], y[train_idx]

    curve: list[dict[str, Any]] = []
    best_loss, best_epoch, best_theta = math.inf, 0, trainer.theta.copy()
    stopped_early = False
    patience = config.early_stopping_patience
    with (
        np.errstate(over="ignore", invalid="ignore"),  # divergence is checked per epoch
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-gather") as pool,
    ):
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = learning_rate_at(config, epoch - 1)
            if full_batch:
                train_loss, train_acc = trainer.epoch(X_train, y_train, None, lr)
            else:
                order = shuffle_rng.permutation(train_idx)
                train_loss, train_acc = trainer.epoch(X, y[order], order, lr, pool)
            if not (math.isfinite(train_loss) and np.isfinite(trainer.theta).all()):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch} (train loss {train_loss}); "
                    f"lower learning_rate (now {config.learning_rate})"
                )
            val_loss, val_acc = _loss_and_accuracy(
                y_val, _predict_proba_unchecked(trainer.params, X_val, chunk_size=8192)
            )
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


def _loss_and_accuracy(y: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """Mean clipped log-loss and accuracy of ``proba : (n, k)`` against labels ``y``."""
    return log_loss(y, proba), float(np.mean(proba.argmax(axis=1) == y))


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
        self,
        X: np.ndarray,
        y: np.ndarray,
        order: np.ndarray | None,
        lr: float,
        pool: ThreadPoolExecutor | None = None,
    ) -> tuple[float, float]:
        """One pass of SGD over X's rows ``order`` (None: all rows as one batch, no gather).

        ``y`` holds the labels of the rows in ``order``'s order. With ``pool``, batches are
        gathered in a background thread (see ``_gathered``). Returns the epoch's running
        (train loss, train accuracy): each batch's predictions before its update.
        """
        n = X.shape[0] if order is None else order.size
        B = n if order is None else min(self.config.batch_size or n, n)
        k = self.params[-1][0].shape[0]
        onehot_t = np.eye(k, dtype=np.float32)[:, y]  # (k, n); 2.2 MB for MNIST
        proba_t = np.empty((k, n), dtype=np.float32)  # each batch's softmax output
        layers, params, grads, step = self.layers, self.params, self.grads, self._step
        if order is None:
            chunks: Iterator[tuple[int, np.ndarray]] = iter([(0, X)])
        else:
            chunks = _gathered(X, order, B * max(1, _GATHER_ROWS // B), pool)
        for offset, xs in chunks:
            for start in range(offset, offset + xs.shape[0], B):
                stop = min(start + B, n)
                m = stop - start
                hidden, bufs, masks, (delta, col) = self.buffers(m)
                xb_t = xs[start - offset : stop - offset].T
                proba = proba_t[:, start:stop]
                _forward_into(layers, xb_t, [*hidden, proba], col)
                # Softmax + cross-entropy: dLoss/dZ = probs - Y (see network.backward);
                # alpha/m is folded in here, once, on a (k, m) array.
                np.subtract(proba, onehot_t[:, start:stop], delta)
                np.multiply(delta, np.float32(lr / m), delta)
                _backward_into(params, xb_t, hidden, delta, grads, bufs, masks)
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


_GATHER_ROWS = 1024  # rows per background gather: 3 MB of MNIST, two buffers in flight


def _gathered(
    X: np.ndarray, order: np.ndarray, rows: int, pool: ThreadPoolExecutor | None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (offset, X[order[offset:offset + rows]]) for offsets 0, rows, 2*rows, ...

    The shuffled gather is a third of an epoch's time for the 784-10-10 network and is
    memory-bound, so with a ``pool`` the next block is gathered on the other core while
    this one trains (np.take releases the GIL). Two buffers alternate; a block is only
    overwritten after the consumer has asked for the one after it.
    """
    n = order.size
    bufs = [np.empty((min(rows, n), X.shape[1]), dtype=X.dtype) for _ in range(2)]

    def gather(j: int) -> np.ndarray:
        idx = order[j * rows : (j + 1) * rows]
        out = bufs[j % 2][: idx.size]
        # mode="clip" (indices are valid by construction) lets take write into `out`
        # directly; the default "raise" goes through a temporary copy.
        return np.take(X, idx, axis=0, out=out, mode="clip")

    n_blocks = -(-n // rows)
    if pool is None:
        for j in range(n_blocks):
            yield j * rows, gather(j)
        return
    future = pool.submit(gather, 0)
    for j in range(n_blocks):
        block = future.result()
        if j + 1 < n_blocks:
            future = pool.submit(gather, j + 1)
        yield j * rows, block


def _loss_and_accuracy_t(y: np.ndarray, proba_t: np.ndarray) -> tuple[float, float]:
    """Like ``_loss_and_accuracy`` for probabilities laid out (n_classes, n_samples)."""
    p_true = proba_t[y, np.arange(y.size)]
    eps = np.finfo(proba_t.dtype).eps
    loss = -np.mean(np.log(np.clip(p_true, eps, 1.0)), dtype=np.float64)
    return float(loss), float(np.mean(np.argmax(proba_t, axis=0) == y))


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
