"""Training's validation pass (float32): chunking changes nothing, memory stays bounded;
fit's input checks name what is bad. predict_proba_pixels (score and evaluate): one row,
one result, bit for bit."""

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from model.config import ModelConfig
from model.network import forward, init_params
from model.predict import _exact_slices, _predict_proba_t_unchecked, predict_proba_pixels
from model.validation import InputError, check_feature_values, check_features

CFG = ModelConfig(n_inputs=12, hidden=(9, 7), n_classes=4, seed=2)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).random((1000, 12), dtype=np.float32)


def proba(params, X, chunk_size=8192):
    """The validation pass's probabilities, one row per sample."""
    return _predict_proba_t_unchecked(params, X, chunk_size).T


def test_proba_is_the_forward_pass(params, X):
    got = proba(params, X)
    assert got.shape == (1000, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, forward(params, X)[-1], rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 7, 999, 1000, 8192])
def test_chunked_equals_unchunked(params, X, chunk_size):
    whole = proba(params, X, chunk_size=len(X))
    chunked = proba(params, X, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert np.array_equal(chunked.argmax(axis=1), whole.argmax(axis=1))


def test_empty_input_gives_empty_output(params):
    assert proba(params, np.zeros((0, 12), dtype=np.float32)).shape == (0, 4)


def test_memory_is_bounded_by_the_chunk_not_the_input(params):
    # 400k rows (19 MB): the peak beyond the 6.4 MB output is a few chunk-sized buffers,
    # not a copy of X or of a layer's activations for every row.
    X = np.full((400_000, 12), 0.5, dtype=np.float32)
    tracemalloc.start()
    try:
        out = _predict_proba_t_unchecked(params, X, chunk_size=4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (4, 400_000)
    assert peak - out.nbytes < 2_000_000


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros((5, 13), np.float32), r"X has 13 features per row, expected 12"),
        (np.zeros(12, np.float32), r"X must be 2-D \(n_samples, 12\), got 1-D shape \(12,\)"),
        (np.zeros((5, 12), np.uint8), r"X has dtype uint8, expected float32 scaled to \[0, 1\]"),
        (np.full((5, 12), 255.0, np.float32), r"X has values outside \[0, 1\] \(min 255, max 255"),
        (np.full((5, 12), -0.5, np.float32), r"first at row 0, column 0: -0.5"),
    ],
)
def test_bad_input_raises_input_error(X, match):
    with pytest.raises(InputError, match=match) as info:
        check_features(X, 12)
        check_feature_values(X)
    assert "\n" not in str(info.value)


def test_bad_values_are_found_with_their_row_and_column(X):
    bad = X.copy()
    bad[901, 5] = np.nan
    with pytest.raises(InputError, match=r"NaN or infinite values \(first at row 901, column 5"):
        check_feature_values(bad)
    bad[901, 5] = 1.5
    with pytest.raises(InputError, match=r"outside \[0, 1\].*row 901, column 5: 1.5"):
        check_feature_values(bad)


# ----------------------------------------------------------------------------- pixels, exactly


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(1)
    P = rng.integers(0, 256, (300, 12)).astype(np.uint8)
    P[rng.random(P.shape) < 0.5] = 0
    return P


def test_pixels_proba_is_the_forward_pass_of_pixels_over_255(params, pixels):
    proba = predict_proba_pixels(params, pixels)
    assert proba.shape == (300, 4) and proba.dtype == np.float64
    # float32 forward vs float64 scorer: close, never compared bit for bit.
    X = pixels.astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(proba, forward(params, X)[-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("block_rows", [1, 7, 114, 300, 1024])
def test_a_row_scores_the_same_bits_in_any_block_and_position(params, pixels, block_rows):
    # The scorer's contract (README, "Scoring"): one row, one result, wherever it sits.
    alone = np.concatenate([predict_proba_pixels(params, pixels[i : i + 1]) for i in range(300)])
    assert np.array_equal(predict_proba_pixels(params, pixels, block_rows), alone)
    shuffled = np.random.default_rng(block_rows).permutation(300)
    got = predict_proba_pixels(params, pixels[shuffled], block_rows)
    assert np.array_equal(got, alone[shuffled])


def test_exact_slices_sum_to_the_weights_and_their_products_are_exact():
    # Weights over 60 binary orders of magnitude, and a row of zeros: 3+ slices.
    rng = np.random.default_rng(4)
    W = (rng.standard_normal((6, 50)) * 2.0 ** rng.integers(-60, 0, (6, 50))).astype(np.float32)
    W[2] = 0
    slices = _exact_slices(W, 255)
    assert len(slices) >= 3
    assert np.array_equal(sum(slices), W.astype(np.float64))
    x = rng.integers(0, 256, (40, 50)).astype(np.float64)
    for S in slices:
        got = S @ x.T  # BLAS, in whatever order it likes
        for j in range(6):
            for m in range(40):
                exact = sum(Fraction(w) * int(v) for w, v in zip(S[j], x[m], strict=True))
                assert Fraction(got[j, m]) == exact


def test_pixels_need_uint8_rows_of_the_right_width(params, pixels):
    with pytest.raises(InputError, match=r"pixels must be uint8 of shape \(n_samples, 12\)"):
        predict_proba_pixels(params, pixels.astype(np.float32))
    with pytest.raises(InputError, match="pixels has 11 values per row, expected 12"):
        predict_proba_pixels(params, pixels[:, :11])
    assert predict_proba_pixels(params, pixels[:0]).shape == (0, 4)


def test_weights_with_nan_are_refused_not_looped_over(params, pixels):
    bad = [(W.copy(), b) for W, b in params]
    bad[0][0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict_proba_pixels(bad, pixels)
