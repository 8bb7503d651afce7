"""Evaluate scores the test split the way ``score`` scores a file: same labels, same accuracy."""

from __future__ import annotations

import csv
from functools import partial

import joblib
import numpy as np
import pytest

import core.evaluation
from core.dataset import PIXEL_COLUMNS, pixels_of, read_split, write_split
from core.evaluation import evaluate_fit
from core.files import seal
from core.safe_joblib import safe_load
from core.scoring.score_file import score_file
from core.training import resolve_config, train_on_split
from model.network import forward
from model.predict import predict_proba_pixels
from tests.support import synthetic_digits


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(folder, test images, test labels, trained fit record) on synthetic digits."""
    folder = tmp_path_factory.mktemp("eval")
    write_split(folder / "train.parquet", *synthetic_digits(300, seed=1), metadata={})
    images, labels = synthetic_digits(200, seed=2)
    write_split(folder / "test.parquet", images, labels, metadata={})
    # One epoch: good, not perfect, so that some test images are misclassified.
    fit = train_on_split(folder / "train.parquet", resolve_config("default", epochs=1), folder)
    return folder, images, labels, fit


def near_tie(params: list) -> list:
    """Weights under which classes 0 and 1 differ by one float32 ulp of the bias, 2**-23.

    Every hidden unit is about 5 and classes 0 and 1 share a row of weights summing to 4,
    so both logits are about 21 (the rest 0). Exactly, class 1 wins by 2**-23; in float32,
    where numbers near 21 are 2**-19 apart, the two logits mostly round to one value and
    argmax takes class 0.
    """
    (W1, b1), (W2, b2) = params
    W1 = np.full_like(W1, 1e-4)
    b1 = np.full_like(b1, 5.0)
    W2 = np.zeros_like(W2)
    W2[:2] = 4.0 / W2.shape[1]
    b2 = np.zeros_like(b2)
    b2[0], b2[1] = 1.0, np.nextafter(np.float32(1.0), np.float32(2.0))
    return [(W1, b1), (W2, b2)]


def fit_with(folder, fit: dict, params: list) -> dict:
    """A fit file like ``fit``'s, holding ``params``."""
    record = {**safe_load(fit["path"]), "params": params}
    dest = folder / "tie" / "fit.joblib"
    dest.parent.mkdir(exist_ok=True)
    joblib.dump(record, dest)
    return {"path": str(dest), "sha256": seal(dest)}


def write_labelled_csv(path, images: np.ndarray, labels: np.ndarray) -> None:
    """Kaggle's train.csv layout: ``label,pixel0..pixel783``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["label", *PIXEL_COLUMNS])
        for label, image in zip(labels, images.reshape(len(images), -1), strict=True):
            writer.writerow([int(label), *image.tolist()])


@pytest.mark.parametrize("weights", ["trained", "near tie"])
def test_evaluate_labels_every_test_image_as_scoring_does(data, weights, monkeypatch, tmp_path):
    folder, images, labels, fit = data
    params = safe_load(fit["path"])["params"]
    if weights == "near tie":
        params = near_tie(params)
        fit = fit_with(folder, fit, params)
        # The float32 pass evaluate used before would call most of these 0; exactly, all are 1.
        X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
        assert np.mean(forward(params, X)[-1].argmax(axis=1) == 0) > 0.5
        labels = np.ones_like(labels)
        write_split(folder / "tie" / "test.parquet", images, labels, metadata={})
        test_path = folder / "tie" / "test.parquet"
    else:
        test_path = folder / "test.parquet"
    # List every misclassified image, so that evaluate's label for each row is known.
    monkeypatch.setattr(core.evaluation, "N_MISCLASSIFIED_SHOWN", len(images))
    result = evaluate_fit(fit, test_path, tmp_path)
    evaluated = labels.astype(np.int64)
    for wrong in result["misclassified_sample"]:
        evaluated[wrong["index"]] = wrong["predicted"]

    write_labelled_csv(tmp_path / "test.csv", images, labels)
    out = tmp_path / "scored.csv"
    summary = score_file(
        tmp_path / "test.csv", out, tmp_path / "rejects.csv", partial(predict_proba_pixels, params)
    )
    with open(out, newline="") as f:
        scored = np.array([int(row["Label"]) for row in csv.DictReader(f)])

    assert np.array_equal(evaluated, scored)
    assert result["test_accuracy"] == summary.accuracy
    assert result["confusion_matrix"] == summary.confusion_matrix
    if weights == "trained":
        assert 0.3 < summary.accuracy < 1.0  # learnt something, and made mistakes to compare
    else:
        assert summary.accuracy == 1.0


def test_split_pixels_come_back_exactly(tmp_path):
    # Every uint8 value, stored as float32 pixel / 255, is recovered as itself.
    images = (np.arange(2 * 784) % 256).astype(np.uint8).reshape(2, 28, 28)
    write_split(tmp_path / "s.parquet", images, np.zeros(2, np.uint8), metadata={})
    X, _ = read_split(tmp_path / "s.parquet")
    assert np.array_equal(pixels_of(X), images.reshape(2, 784))
