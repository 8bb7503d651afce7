"""Metrics on 3-class examples small enough to check by hand."""

import numpy as np
import pytest

from model.metrics import (
    accuracy,
    confusion_matrix,
    log_loss,
    most_confused_pairs,
    per_class_metrics,
)

Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 2])


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match=r"1-D of equal length, got \(6,\) and \(5,\)"):
        accuracy(Y_TRUE, Y_PRED[:5])
    with pytest.raises(ValueError, match="zero samples"):
        accuracy(np.array([], int), np.array([], int))


def test_log_loss_by_hand_and_clipped():
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    # -(log 0.5 + log 0.8) / 2
    assert log_loss(np.array([0, 1]), proba) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2)
    # p = 0 for the true class is clipped at eps instead of giving inf
    zero = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    assert log_loss(np.array([1]), zero) == pytest.approx(-np.log(np.finfo(np.float32).eps))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\], outside \[0, 2\]"):
        log_loss(np.array([0, 3]), proba)


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 2, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(Y_TRUE, Y_PRED, 4).shape == (4, 4)
    with pytest.raises(ValueError, match=r"y_pred has labels in \[0, 2\], outside \[0, 1\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)


def test_per_class_metrics_by_hand():
    m = per_class_metrics(Y_TRUE, Y_PRED, 3)
    # class 0: tp 1, predicted 1, actual 3; class 1: tp 1, predicted 3, actual 2;
    # class 2: tp 1, predicted 2, actual 1
    np.testing.assert_allclose(m["precision"], [1.0, 1 / 3, 1 / 2])
    np.testing.assert_allclose(m["recall"], [1 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(m["f1"], [0.5, 0.4, 2 / 3])
    assert m["support"].tolist() == [3, 2, 1]


def test_per_class_metrics_zero_division_is_zero():
    m = per_class_metrics(np.array([0, 0]), np.array([0, 0]), 3)
    assert m["precision"].tolist() == [1.0, 0.0, 0.0]
    assert m["recall"].tolist() == [1.0, 0.0, 0.0]
    assert m["f1"].tolist() == [1.0, 0.0, 0.0]


def test_most_confused_pairs():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert most_confused_pairs(cm, top=5) == [(0, 1, 2), (1, 2, 1)]
    assert most_confused_pairs(cm, top=1) == [(0, 1, 2)]
    assert most_confused_pairs(np.eye(3, dtype=int) * 5) == []
    with pytest.raises(ValueError, match="square"):
        most_confused_pairs(np.zeros((2, 3)))
