"""fit: determinism, the learning curve, early stopping, the split, the update rule, bad input,
uint8 pixels."""

import math
import tracemalloc

import numpy as np
import pytest

from model.config import ModelConfig
from model.network import backward, block_rows, forward, init_params, update
from model.train import (
    PIXEL_MAX,
    VALIDATION_CHUNK,
    EpochStats,
    TrainingDiverged,
    fit,
    learning_rate_at,
    seed_streams,
    split_indices,
)
from model.validation import InputError

SMALL = ModelConfig(
    n_inputs=20,
    hidden=(8,),
    n_classes=3,
    epochs=5,
    batch_size=16,
    learning_rate=0.1,
    lr_schedule="constant",
)


def blobs(n=300, n_inputs=20, n_classes=3, seed=0, noise=0.15):
    """Separable clusters in [0, 1]: each class lights up its own block of inputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    centers = np.zeros((n_classes, n_inputs), dtype=np.float32)
    block = n_inputs // n_classes
    for c in range(n_classes):
        centers[c, c * block : (c + 1) * block] = 0.8
    X = centers[y] + rng.normal(0, noise, size=(n, n_inputs)).astype(np.float32)
    return np.clip(X, 0, 1).astype(np.float32), y


def test_same_seed_and_data_give_bit_identical_weights():
    X, y = blobs()
    a = fit(X, y, SMALL)
    b = fit(X, y, SMALL)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params, strict=True):
        assert Wa.dtype == ba.dtype == np.float32
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a.curve]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b.curve]
    c = fit(X, y, ModelConfig(**{**SMALL.to_dict(), "seed": 1}))
    assert not np.array_equal(a.params[0][0], c.params[0][0])


def test_learns_separable_data_and_reports_a_curve():
    X, y = blobs()
    seen = []
    result = fit(X, y, SMALL, on_epoch=seen.append)
    assert result.validation_accuracy > 0.95
    assert len(result.curve) == SMALL.epochs == len(seen)
    assert all(isinstance(s, EpochStats) for s in seen)
    assert [row["epoch"] for row in result.curve] == [1, 2, 3, 4, 5]
    assert set(result.curve[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seconds",
    }
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    assert result.best_epoch == SMALL.epochs and not result.stopped_early
    assert (result.n_train, result.n_validation) == (275, 25)
    assert result.train_seconds > 0 and result.config == SMALL
    # The reported validation accuracy is that of the returned weights.
    train_idx, val_idx = split_indices(len(y), SMALL.validation_fraction, seed_streams(0)[1])
    val_acc = np.mean(forward(result.params, X[val_idx])[-1].argmax(1) == y[val_idx])
    assert result.validation_accuracy == pytest.approx(val_acc)


def test_full_batch_epoch_is_one_notebook_gradient_step():
    X, y = blobs(n=100)
    cfg = ModelConfig(**{**SMALL.to_dict(), "batch_size": None, "epochs": 1, "momentum": 0.0})
    init_seq, split_seq, _ = seed_streams(cfg.seed)
    train_idx, _ = split_indices(len(y), cfg.validation_fraction, split_seq)
    params = init_params(cfg, np.random.default_rng(init_seq))
    Xt, yt = X[train_idx], y[train_idx]
    expected = update(params, backward(params, forward(params, Xt), yt), cfg.learning_rate)
    result = fit(X, y, cfg)
    for (W, b), (eW, eb) in zip(result.params, expected, strict=True):
        np.testing.assert_allclose(W, eW, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b, eb, rtol=1e-5, atol=1e-7)
    # The full-batch train loss is the loss before the step.
    assert result.curve[0]["train_loss"] == pytest.approx(
        -np.mean(np.log(forward(params, Xt)[-1][np.arange(len(yt)), yt])), rel=1e-5
    )


def test_momentum_is_heavy_ball():
    # Two full-batch steps: v1 = -a g0, w1 = w0 + v1; v2 = mu v1 - a g1, w2 = w1 + v2.
    X, y = blobs(n=60)
    cfg = ModelConfig(**{**SMALL.to_dict(), "batch_size": None, "epochs": 2, "momentum": 0.5})
    init_seq, split_seq, _ = seed_streams(cfg.seed)
    train_idx, _ = split_indices(len(y), cfg.validation_fraction, split_seq)
    Xt, yt = X[train_idx], y[train_idx]
    w0 = init_params(cfg, np.random.default_rng(init_seq))
    g0 = backward(w0, forward(w0, Xt), yt)
    w1 = update(w0, g0, cfg.learning_rate)
    g1 = backward(w1, forward(w1, Xt), yt)
    w2 = [
        (W - 0.1 * dW1 - 0.5 * 0.1 * dW0, b - 0.1 * db1 - 0.5 * 0.1 * db0)
        for (W, b), (dW0, db0), (dW1, db1) in zip(w1, g0, g1, strict=True)
    ]
    for (W, b), (eW, eb) in zip(fit(X, y, cfg).params, w2, strict=True):
        np.testing.assert_allclose(W, eW, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, eb, rtol=1e-5, atol=1e-6)


def test_early_stopping_returns_the_best_epochs_weights():
    # Random labels: nothing to learn, so validation loss soon rises and training stops.
    rng = np.random.default_rng(0)
    X = rng.random((200, 20), dtype=np.float32)
    y = rng.integers(0, 3, size=200)
    cfg = ModelConfig(
        **{**SMALL.to_dict(), "epochs": 200, "learning_rate": 0.5, "early_stopping_patience": 3}
    )
    result = fit(X, y, cfg)
    assert result.stopped_early
    assert len(result.curve) == result.best_epoch + 3 < 200
    best = result.curve[result.best_epoch - 1]
    assert best["val_loss"] == min(row["val_loss"] for row in result.curve)
    assert result.validation_accuracy == best["val_accuracy"]
    _, val_idx = split_indices(200, cfg.validation_fraction, seed_streams(0)[1])
    proba = forward(result.params, X[val_idx])[-1]
    val_loss = -np.mean(np.log(proba[np.arange(len(val_idx)), y[val_idx]]))
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_split_is_deterministic_disjoint_and_complete():
    a_train, a_val = split_indices(1000, 0.1, 42)
    b_train, b_val = split_indices(1000, 0.1, 42)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert len(a_val) == 100 and len(a_train) == 900
    assert np.array_equal(np.sort(np.concatenate([a_train, a_val])), np.arange(1000))
    assert not np.array_equal(split_indices(1000, 0.1, 43)[1], a_val)
    # Never empty on either side.
    assert [len(part) for part in split_indices(3, 0.01, 0)] == [2, 1]
    assert [len(part) for part in split_indices(3, 0.99, 0)] == [1, 2]


def test_learning_rate_schedules():
    cfg = ModelConfig(epochs=4, learning_rate=0.2, lr_schedule="cosine")
    assert [learning_rate_at(cfg, e) for e in range(4)] == pytest.approx(
        [0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 - math.cos(math.pi / 4))]
    )
    cfg = ModelConfig(epochs=4, learning_rate=0.2, lr_schedule="exponential", lr_decay=0.5)
    assert [learning_rate_at(cfg, e) for e in range(3)] == pytest.approx([0.2, 0.1, 0.05])
    cfg = ModelConfig(learning_rate=0.2, lr_schedule="constant")
    assert learning_rate_at(cfg, 7) == 0.2


def test_curve_reports_the_schedule():
    X, y = blobs()
    cfg = ModelConfig(**{**SMALL.to_dict(), "lr_schedule": "exponential", "lr_decay": 0.5})
    rates = [row["learning_rate"] for row in fit(X, y, cfg).curve]
    assert rates == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.00625])


def test_divergence_raises_instead_of_returning_nan_weights():
    X, y = blobs()
    cfg = ModelConfig(**{**SMALL.to_dict(), "learning_rate": 1e30, "momentum": 0.9})
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch 1"):
        fit(X, y, cfg)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (
            np.zeros((10, 21), np.float32),
            np.zeros(10, int),
            r"X has 21 features per row, expected 20",
        ),
        (
            np.zeros((10, 4, 5), np.float32),
            np.zeros(10, int),
            r"X must be 2-D \(n_samples, 20\), got 3-D",
        ),
        (
            np.zeros((10, 20), np.float64),
            np.zeros(10, int),
            r"X has dtype float64, expected float32",
        ),
        (
            np.zeros((10, 20), np.uint16),
            np.zeros(10, int),
            r"X has dtype uint16, expected float32 .*255",
        ),
        (
            np.zeros((10, 21), np.uint8),
            np.zeros(10, int),
            r"X has 21 features per row, expected 20",
        ),
        (
            np.zeros((10, 4, 5), np.uint8),
            np.zeros(10, int),
            r"X must be 2-D \(n_samples, 20\), got 3-D shape \(10, 4, 5\)",
        ),
        ([[0.0] * 20] * 10, np.zeros(10, int), r"X must be a numpy array, got list"),
        (np.full((10, 20), 2.0, np.float32), np.zeros(10, int), r"X has values outside \[0, 1\]"),
        (np.zeros((10, 20), np.float32), np.zeros(9, int), r"y has 9 labels but X has 10 rows"),
        (
            np.zeros((10, 20), np.float32),
            np.full(10, 3),
            r"y has label 3 at row 0, outside \[0, 2\]",
        ),
        (np.zeros((10, 20), np.float32), np.full(10, -1), r"y has label -1 at row 0"),
        (
            np.zeros((10, 20), np.float32),
            np.zeros(10, float),
            r"y has dtype float64, expected integer",
        ),
        (np.zeros((10, 20), np.float32), np.zeros((10, 1), int), r"y must be 1-D"),
        (np.zeros((1, 20), np.float32), np.zeros(1, int), r"need at least 2 rows"),
    ],
)
def test_bad_inputs_raise_input_error(X, y, match):
    with pytest.raises(InputError, match=match) as info:
        fit(X, y, SMALL)
    assert "\n" not in str(info.value)


def test_nan_is_reported_with_its_position():
    X, y = blobs(n=30)
    X[7, 3] = np.nan
    with pytest.raises(
        InputError, match=r"X contains NaN or infinite values \(first at row 7, column 3"
    ):
        fit(X, y, SMALL)
    X[7, 3] = np.inf
    with pytest.raises(InputError, match=r"NaN or infinite"):
        fit(X, y, SMALL)


def test_batches_spanning_several_blas_blocks_accumulate_the_gradient():
    # 784 inputs x 10 units are computed 114 rows at a time (model.network.block_rows),
    # so a 306-row full batch takes three blocks whose gradients must add up.
    rng = np.random.default_rng(0)
    X = rng.random((334, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=334)
    cfg = ModelConfig(batch_size=None, epochs=1, momentum=0.0, learning_rate=0.5)
    init_seq, split_seq, _ = seed_streams(cfg.seed)
    train_idx, _ = split_indices(len(y), cfg.validation_fraction, split_seq)
    assert len(train_idx) == 306
    assert block_rows(init_params(cfg), 306) == 114
    params = init_params(cfg, np.random.default_rng(init_seq))
    Xt, yt = X[train_idx], y[train_idx]
    expected = update(params, backward(params, forward(params, Xt), yt), cfg.learning_rate)
    for (W, b), (eW, eb) in zip(fit(X, y, cfg).params, expected, strict=True):
        np.testing.assert_allclose(W, eW, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, eb, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- uint8 pixels


def pixel_blobs(n=300, n_inputs=20, n_classes=3, seed=0):
    """blobs() as uint8 pixels, and the same pixels as the float32 split holds them."""
    X, y = blobs(n, n_inputs, n_classes, seed)
    pixels = np.rint(X * 255).astype(np.uint8)
    return pixels, (np.arange(256, dtype=np.float32) / np.float32(255))[pixels], y


def test_pixel_scaling_is_the_splits_table():
    # core.dataset.write_split stores pixel k as table[k]; fit divides each gathered uint8.
    table = np.arange(256, dtype=np.float32) / np.float32(255)
    out = np.empty(256, np.float32)
    assert np.array_equal(np.divide(np.arange(256, dtype=np.uint8), PIXEL_MAX, out=out), table)


def _rounded(curve):
    return [{k: round(v, 4) for k, v in row.items() if k != "seconds"} for row in curve]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # mini-batches
        {"batch_size": None, "epochs": 3},  # full batch: one gather up front
        {"early_stopping_patience": 1, "epochs": 8, "learning_rate": 0.5},
        # More validation rows than one chunk: the uint8 rows are scaled chunk by chunk.
        {"validation_fraction": 0.5, "epochs": 2},
    ],
)
def test_uint8_pixels_train_like_the_float32_split(overrides):
    n = 2 * VALIDATION_CHUNK + 500 if "validation_fraction" in overrides else 300
    pixels, X, y = pixel_blobs(n=n)
    cfg = ModelConfig(**{**SMALL.to_dict(), **overrides})
    a, b = fit(X, y, cfg), fit(pixels, y, cfg)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params, strict=True):
        assert Wb.dtype == np.float32
        np.testing.assert_allclose(Wb, Wa, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bb, ba, rtol=1e-5, atol=1e-6)
    assert _rounded(b.curve) == _rounded(a.curve)
    assert (b.best_epoch, b.n_train, b.n_validation) == (a.best_epoch, a.n_train, a.n_validation)
    assert b.validation_accuracy == pytest.approx(a.validation_accuracy, abs=1e-4)


def test_uint8_pixels_are_never_copied_whole_as_float32():
    # 20,000 rows of 784 pixels: 15.7 MB as uint8, 62.7 MB as float32. Besides X, fit
    # holds the validation rows (uint8, 1/12 of X), a few (10, n) float32 arrays and
    # one chunk of scaled validation rows: well under X's own size. Converting X (or
    # just its training rows) to float32 anywhere would be 4x that.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20_000, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 20_000)
    cfg = ModelConfig(epochs=1)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fit(pixels, y, cfg)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fit(pixels[:2000].astype(np.float32) / np.float32(255), y[:2000], cfg)
        _, float_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # NumPy reports its buffers to tracemalloc: the float32 fit's input shows (6.3 MB).
    assert float_peak > 2000 * 784 * 4
    assert peak < pixels.nbytes, f"fit's peak {peak / 1e6:.1f} MB >= X's {pixels.nbytes / 1e6} MB"
