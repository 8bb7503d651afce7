"""The model on real MNIST: a 10k-row training subset must score well on 2k test rows."""

from pathlib import Path

import numpy as np
import pytest

from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz
from model.config import preset
from model.metrics import accuracy, confusion_matrix
from model.network import forward
from model.train import fit

MNIST = Path(__file__).resolve().parents[2] / "shared" / "mnist"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason=f"no MNIST at {MNIST}"
    ),
]


def load(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx_gz(MNIST / f"{kind}-images-idx3-ubyte.gz", IMAGES_MAGIC)[:n]
    labels = read_idx_gz(MNIST / f"{kind}-labels-idx1-ubyte.gz", LABELS_MAGIC)[:n]
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255), labels


@pytest.fixture(scope="module")
def data():
    return load("train", 10_000), load("t10k", 2_000)


@pytest.mark.parametrize(
    ("name", "overrides", "threshold"),
    [
        # 10 epochs of SGD on 9.2k rows: 87-89% over seeds 0-3 on these 2k test rows
        # (the full 55k training rows reach ~94%, see benchmarks/README.md).
        ("default", {}, 0.86),
        # The notebook's recipe, 500 full-batch gradient steps: 81.9% here.
        ("seed", {}, 0.78),
    ],
)
def test_preset_accuracy_on_a_real_subset(data, name, overrides, threshold):
    (X, y), (X_test, y_test) = data
    result = fit(X, y, preset(name, **overrides))
    y_pred = forward(result.params, X_test)[-1].argmax(axis=1)
    acc = accuracy(y_test, y_pred)
    assert acc > threshold, f"{name}: test accuracy {acc:.4f} <= {threshold}"
    assert result.validation_accuracy > threshold - 0.03
    cm = confusion_matrix(y_test, y_pred, 10)
    assert cm.sum() == 2_000 and np.trace(cm) == round(acc * 2_000)
