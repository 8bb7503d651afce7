"""The report's PNG plots: valid images that show what they claim, edge cases included."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from core import plots


def pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def darkness(rgb):
    return 765 - rgb.sum(axis=-1)


def test_heatmap_shades_the_largest_count_darkest(tmp_path):
    confusion = np.full((4, 4), 3)
    confusion[2, 1] = 900
    plots.confusion_heatmap(confusion, tmp_path / "c.png")
    rgb = pixels(tmp_path / "c.png")
    # Cells are 40 px from (70, 70); sample each cell's corner, away from its number.
    corners = np.array(
        [[rgb[70 + 40 * i + 4, 70 + 40 * j + 4] for j in range(4)] for i in range(4)]
    )
    shade = darkness(corners)
    assert np.unravel_index(shade.argmax(), shade.shape) == (2, 1)
    assert shade[2, 1] > shade[0, 0] + 300, "the big count is much darker than the small ones"


def test_heatmap_of_all_zeros_is_drawn(tmp_path):
    plots.confusion_heatmap(np.zeros((10, 10), dtype=int), tmp_path / "c.png")
    assert pixels(tmp_path / "c.png").shape[:2] == (490, 490)


def count_color(rgb, color):
    return int(np.count_nonzero(np.abs(rgb - np.array(color)).sum(axis=-1) < 40))


def test_learning_curve_draws_both_splits_in_both_panels(tmp_path):
    curve = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e,
         "train_accuracy": 1 - 0.1 / e, "val_accuracy": 1 - 0.12 / e}
        for e in range(1, 11)
    ]  # fmt: skip
    plots.learning_curve(curve, tmp_path / "l.png")
    rgb = pixels(tmp_path / "l.png")
    assert rgb.shape[:2] == (300, 840)
    for panel in (rgb[60:, :420], rgb[60:, 420:]):  # below the legends
        assert count_color(panel, plots._SERIES["train"]) > 200
        assert count_color(panel, plots._SERIES["val"]) > 200


def test_learning_curve_of_one_epoch_or_with_gaps_is_drawn(tmp_path):
    one = [{"epoch": 1, "train_loss": 0.3, "val_loss": 0.3, "train_accuracy": 1.0,
            "val_accuracy": 1.0}]  # fmt: skip
    plots.learning_curve(one, tmp_path / "one.png")
    gaps = [{**one[0], "epoch": e, "train_loss": math.nan if e == 2 else 0.3} for e in (1, 2, 3)]
    plots.learning_curve(gaps, tmp_path / "gaps.png")
    assert pixels(tmp_path / "gaps.png").shape[:2] == (300, 840)


def test_ticks_are_round_and_inside_the_range():
    assert plots._ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    assert plots._ticks(0.5, 10.5, integers=True) == [2, 4, 6, 8, 10]
    ticks = plots._ticks(0.851, 0.949)
    assert [plots._label(t, ticks) for t in ticks] == ["0.86", "0.88", "0.90", "0.92", "0.94"]


def test_misclassified_grid_shows_each_digit(tmp_path):
    images = np.zeros((10, 784), dtype=np.float32)
    images[:, 14 * 28 : 15 * 28] = 1.0  # a black horizontal bar across each digit
    plots.misclassified_grid(
        images, list(range(10)), [9 - k for k in range(10)], tmp_path / "m.png"
    )
    rgb = pixels(tmp_path / "m.png")
    assert rgb.shape[:2] == (30 + 2 * 78, 8 * 64)
    dark_rows = np.flatnonzero((darkness(rgb) > 600).sum(axis=1) > 100)
    assert len(dark_rows) >= 4, "two rows of digits, each with a bar 2 px thick"


def test_misclassified_grid_with_no_mistakes_is_drawn(tmp_path):
    plots.misclassified_grid(np.empty((0, 784), np.float32), [], [], tmp_path / "m.png")
    assert pixels(tmp_path / "m.png").shape[:2] == (30 + 78, 8 * 64)
