"""Network: gradient check, a hand-worked example, softmax stability, init, param checks."""

import numpy as np
import pytest

from model.config import ModelConfig
from model.metrics import log_loss
from model.network import (
    backward,
    check_params,
    forward,
    init_params,
    layer_sizes_of,
    softmax,
    update,
)

TINY = ModelConfig(n_inputs=5, hidden=(4, 3), n_classes=3, seed=3)


def _as64(params):
    return [(W.astype(np.float64), b.astype(np.float64)) for W, b in params]


def test_gradients_match_central_differences():
    # A tiny seeded network in float64, two hidden layers so the chain rule is exercised
    # twice; non-zero biases so every bias gradient is tested too.
    rng = np.random.default_rng(0)
    params = _as64(init_params(TINY, np.random.default_rng(1)))
    params = [(W, rng.normal(0, 0.1, size=b.shape)) for W, b in params]
    X = rng.random((7, TINY.n_inputs))
    y = np.array([0, 1, 2, 0, 1, 2, 1])

    def loss():
        return log_loss(y, forward(params, X)[-1])

    grads = backward(params, forward(params, X), y)
    eps = 1e-5
    for (W, b), (dW, db) in zip(params, grads, strict=True):
        for arr, grad in ((W, dW), (b, db)):
            numeric = np.empty_like(arr)
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + eps
                up = loss()
                arr[idx] = old - eps
                down = loss()
                arr[idx] = old
                numeric[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_hand_worked_example():
    # 2 inputs -> 2 ReLU units -> 2 classes, one sample x = (1, 0.5) of class 1.
    W1 = np.array([[1.0, -1.0], [0.5, 0.5]])
    b1 = np.array([0.0, -1.0])
    W2 = np.array([[1.0, 2.0], [-1.0, 1.0]])
    b2 = np.array([0.0, 0.5])
    params = [(W1, b1), (W2, b2)]
    X = np.array([[1.0, 0.5]])
    y = np.array([1])

    X_, A1, A2 = forward(params, X)
    # Z1 = W1·x + b1 = (1 - 0.5 + 0, 0.5 + 0.25 - 1) = (0.5, -0.25); ReLU -> (0.5, 0)
    np.testing.assert_allclose(A1, [[0.5, 0.0]])
    # Z2 = W2·A1 + b2 = (0.5 + 0 + 0, -0.5 + 0 + 0.5) = (0.5, 0)
    # softmax: e^0.5 / (e^0.5 + 1) = sigmoid(0.5) = 0.6224593, the rest 0.3775407
    p0 = 1 / (1 + np.exp(-0.5))
    np.testing.assert_allclose(A2, [[p0, 1 - p0]])
    # loss = -log(0.3775407) = 0.9740770
    assert log_loss(y, A2) == pytest.approx(-np.log(1 - p0))

    (dW1, db1), (dW2, db2) = backward(params, [X_, A1, A2], y)
    # dZ2 = A2 - Y = (p0, 1 - p0 - 1) = (0.6224593, -0.6224593)
    # dW2 = dZ2·A1ᵀ = [[0.6224593 * 0.5, 0.6224593 * 0], [-0.6224593 * 0.5, 0]]
    np.testing.assert_allclose(dW2, [[p0 * 0.5, 0.0], [-p0 * 0.5, 0.0]])
    # db2 = dZ2, one entry per unit
    np.testing.assert_allclose(db2, [p0, -p0])
    # W2ᵀ·dZ2 = (1 * p0 + -1 * -p0, 2 * p0 + 1 * -p0) = (2 p0, p0) = (1.2449186, 0.6224593)
    # ReLU'(Z1) = (1, 0) since Z1 = (0.5, -0.25), so dZ1 = (2 p0, 0)
    # dW1 = dZ1·xᵀ = [[2 p0 * 1, 2 p0 * 0.5], [0, 0]]
    np.testing.assert_allclose(dW1, [[2 * p0, p0], [0.0, 0.0]])
    np.testing.assert_allclose(db1, [2 * p0, 0.0])

    # The same sample twice: gradients are means over samples, so they do not change.
    X2, y2 = np.vstack([X, X]), np.array([1, 1])
    grads2 = backward(params, forward(params, X2), y2)
    np.testing.assert_allclose(grads2[0][0], dW1)
    np.testing.assert_allclose(grads2[1][1], db2)

    # W := W - alpha * dW
    (nW1, nb1), _ = update(params, [(dW1, db1), (dW2, db2)], 0.1)
    np.testing.assert_allclose(nW1, [[1 - 0.2 * p0, -1 - 0.1 * p0], [0.5, 0.5]])
    np.testing.assert_allclose(nb1, [-0.2 * p0, -1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_on_huge_logits(dtype):
    Z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, -1e4 + 1]], dtype=dtype)
    P = softmax(Z)
    assert P.dtype == dtype
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(P[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(P[1], [1 / 3] * 3, rtol=1e-6)
    e = np.exp(1.0)
    np.testing.assert_allclose(P[2], [1 / (2 + e), 1 / (2 + e), e / (2 + e)], rtol=1e-6)
    # A zero probability still gives a finite loss: clipped at float eps.
    y = np.array([2, 0, 0])
    assert log_loss(y, P) == pytest.approx(
        -np.log(np.finfo(dtype).eps) / 3 + np.log(3) / 3 + (-np.log(1 / (2 + e)) / 3), rel=1e-5
    )


def test_forward_with_huge_weights_stays_finite():
    params = init_params(ModelConfig(n_inputs=4, hidden=(3,), n_classes=2))
    params = [(W * np.float32(1e4), b) for W, b in params]
    P = forward(params, np.ones((2, 4), dtype=np.float32))[-1]
    assert P.dtype == np.float32
    assert np.isfinite(P).all()


def test_forward_shapes_and_dtype():
    params = init_params(TINY)
    X = np.random.default_rng(0).random((6, 5), dtype=np.float32)
    acts = forward(params, X)
    assert [a.shape for a in acts] == [(6, 5), (6, 4), (6, 3), (6, 3)]
    assert all(a.dtype == np.float32 for a in acts)
    assert (acts[1] >= 0).all() and (acts[2] >= 0).all()
    np.testing.assert_allclose(acts[-1].sum(axis=1), 1.0, rtol=1e-6)


def test_he_init_is_seeded_float32_and_scaled():
    cfg = ModelConfig(hidden=(256,))
    a = init_params(cfg, np.random.default_rng(5))
    b = init_params(cfg, np.random.default_rng(5))
    for (Wa, ba), (Wb, bb) in zip(a, b, strict=True):
        assert Wa.dtype == ba.dtype == np.float32
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)
        assert not ba.any()
    # std of N(0, 2/784) is 0.0505; 200k draws pin it within a percent or two
    assert a[0][0].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert not np.array_equal(a[0][0], init_params(cfg, np.random.default_rng(6))[0][0])


def test_uniform_init_is_the_notebooks():
    params = init_params(ModelConfig(init="uniform"))
    for W, b in params:
        for arr in (W, b):
            assert arr.dtype == np.float32
            assert arr.min() >= -0.5 and arr.max() < 0.5
    assert params[0][0].std() == pytest.approx(1 / np.sqrt(12), rel=0.05)


def test_init_does_not_touch_global_random_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    init_params(ModelConfig())
    assert np.array_equal(np.random.get_state()[1], before)


def test_check_params_accepts_matching_params():
    check_params(init_params(TINY), TINY)
    assert layer_sizes_of(init_params(TINY)) == (5, 4, 3, 3)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p[:-1], r"params has 2 layers, expected 3 for layer sizes \(5, 4, 3, 3\)"),
        (
            lambda p: [p[0], (p[1][0][:2], p[1][1]), p[2]],
            r"layer 1: W has shape \(2, 4\), expected \(3, 4\)",
        ),
        (
            lambda p: [p[0], p[1], (p[2][0], p[2][1][:2])],
            r"layer 2: b has shape \(2,\), expected \(3,\)",
        ),
        (
            lambda p: [(p[0][0].astype(np.float64), p[0][1]), *p[1:]],
            r"layer 0: W has dtype float64, expected float32",
        ),
        (
            lambda p: [p[0], (p[1][0], p[1][1] * np.float32("nan")), p[2]],
            r"layer 1: b contains NaN",
        ),
        (lambda p: [p[0], p[1][0], p[2]], r"layer 1: expected a \(W, b\) pair"),
        (
            lambda p: [p[0], (p[1][0].tolist(), p[1][1]), p[2]],
            r"layer 1: W is list, not a numpy array",
        ),
        (lambda p: {"W": 1}, r"params has dict layers"),
    ],
)
def test_check_params_names_the_mismatch(mutate, match):
    with pytest.raises(ValueError, match=match):
        check_params(mutate(init_params(TINY)), TINY)


def test_check_params_rejects_params_of_another_config():
    with pytest.raises(
        ValueError, match=r"layer 0: W has shape \(10, 784\), expected \(256, 784\)"
    ):
        check_params(init_params(ModelConfig()), ModelConfig(hidden=(256,)))
    with pytest.raises(ValueError, match=r"layer 1: W has shape \(10, 10\), expected \(5, 10\)"):
        check_params(init_params(ModelConfig()), ModelConfig(n_classes=5))
