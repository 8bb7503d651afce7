"""The report's PNG plots: valid images that show what they claim, edge cases included.

The checks look at the pixels a reader sees (sizes, where the dark cells and the coloured
lines are), not at how matplotlib lays out ticks and labels."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from core import plots
from tests.support import REPO


def pixels(path):
    """The PNG at ``path`` as an (height, width, 3) int array of RGB on white."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def darkness(rgb):
    return 765 - rgb.sum(axis=-1)


def test_importing_plots_does_not_import_matplotlib():
    # Only the evaluate step pays for matplotlib's import, not every CLI command.
    code = "import sys, core.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def heatmap_cells(rgb, n):
    """Mean darkness of each of the n x n cells, found as the box of bluish pixels."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ys, xs = np.nonzero((b - r > 20) & (b - g > 5))
    box = rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    rows = np.array_split(np.arange(box.shape[0]), n)
    cols = np.array_split(np.arange(box.shape[1]), n)
    return np.array([[darkness(box[np.ix_(i, j)]).mean() for j in cols] for i in rows])


def test_heatmap_shades_the_largest_count_darkest(tmp_path):
    confusion = np.full((4, 4), 3)
    confusion[2, 1] = 900
    plots.confusion_heatmap(confusion, tmp_path / "c.png")
    shade = heatmap_cells(pixels(tmp_path / "c.png"), 4)
    assert np.unravel_index(shade.argmax(), shade.shape) == (2, 1)
    assert shade[2, 1] > np.delete(shade.ravel(), 2 * 4 + 1).max() + 200, "much darker"


def test_heatmap_of_all_zeros_is_drawn(tmp_path):
    plots.confusion_heatmap(np.zeros((10, 10), dtype=int), tmp_path / "c.png")
    height, width, _ = pixels(tmp_path / "c.png").shape
    assert height == width >= 400


def count_color(rgb, color):
    target = np.array(to_rgb(color)) * 255
    return int(np.count_nonzero(np.abs(rgb - target).sum(axis=-1) < 40))


def epochs(n, **overrides):
    return [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e,
         "train_accuracy": 1 - 0.1 / e, "val_accuracy": 1 - 0.12 / e, **overrides}
        for e in range(1, n + 1)
    ]  # fmt: skip


def test_learning_curve_draws_both_splits_in_both_panels(tmp_path):
    plots.learning_curve(epochs(10), tmp_path / "both.png")
    rgb = pixels(tmp_path / "both.png")
    height, width, _ = rgb.shape
    assert width > 2 * height * 0.9, "two panels side by side"
    plots.learning_curve(epochs(10, val_loss=math.nan, val_accuracy=math.nan), tmp_path / "t.png")
    train_only = pixels(tmp_path / "t.png")
    for half in (slice(0, width // 2), slice(width // 2, width)):
        train, val = plots.SERIES_COLORS["train"], plots.SERIES_COLORS["val"]
        assert count_color(rgb[:, half], train) > 500
        # Without values, the validation colour is only in the legend.
        assert count_color(rgb[:, half], val) > 3 * count_color(train_only[:, half], val)


def test_learning_curve_of_one_epoch_or_with_gaps_is_drawn(tmp_path):
    plots.learning_curve(epochs(1), tmp_path / "one.png")
    gaps = [{**e, "train_loss": math.nan} if e["epoch"] == 2 else e for e in epochs(3)]
    plots.learning_curve(gaps, tmp_path / "gaps.png")
    assert pixels(tmp_path / "one.png").shape == pixels(tmp_path / "gaps.png").shape


def longest_run(row):
    """The length of the longest run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def dark_bands(rgb):
    """Groups of consecutive image rows crossed by a long solid dark stroke (text has none)."""
    dark = np.array([longest_run(row) > 40 for row in darkness(rgb) > 600])
    return int(np.count_nonzero(dark[1:] & ~dark[:-1]) + dark[0])


def test_misclassified_grid_shows_each_digit(tmp_path):
    images = np.zeros((10, 784), dtype=np.float32)
    images[:, 14 * 28 : 15 * 28] = 1.0  # a black horizontal bar across each digit
    plots.misclassified_grid(images[:8], list(range(8)), [7 - k for k in range(8)], tmp_path / "a")
    plots.misclassified_grid(images, list(range(10)), [9 - k for k in range(10)], tmp_path / "b")
    one_row, two_rows = pixels(tmp_path / "a"), pixels(tmp_path / "b")
    assert two_rows.shape[0] > one_row.shape[0], "a second row of digits makes it taller"
    assert (dark_bands(one_row), dark_bands(two_rows)) == (1, 2)
    red = plots.LABEL_COLOR
    assert count_color(two_rows, red) > count_color(one_row, red) > 0


def test_misclassified_grid_with_no_mistakes_is_drawn(tmp_path):
    plots.misclassified_grid(np.empty((0, 784), np.float32), [], [], tmp_path / "m.png")
    assert dark_bands(pixels(tmp_path / "m.png")) == 0
