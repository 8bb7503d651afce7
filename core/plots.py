"""PNG plots for the evaluation report: confusion matrix, learning curve, misclassified digits.

Drawn with matplotlib on its Agg canvas, through ``Figure`` objects rather than pyplot: no
global figure registry, so plots from steps running on several threads do not meet.
matplotlib is imported inside each function, so only the step that draws pays for it, not
every CLI command. It costs a cold evaluate about 2 s more than the Pillow drawing it
replaced (import and three plots in a fresh process: 3.0 s against 1.1 s, medians of 5
alternating rounds on the shared 2-core machine at load 6-7), which a nightly job affords.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from core.files import atomic_path
from core.storage import Location

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
SERIES_COLORS = {"train": "tab:blue", "val": "tab:orange"}
LABEL_COLOR = "tab:red"  # the "true -> predicted" labels of the misclassified digits


def _figure(width: float, height: float, **margins: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas (PNG, no display).

    ``margins`` are fixed ``subplots_adjust`` fractions: matplotlib's constrained layout
    would find them itself, but it doubled the drawing time (1.5-1.9 s of a cold evaluate
    on the shared 2-core machine).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(**margins)
    return figure


def _save(figure: Figure, dest: Location) -> None:
    with atomic_path(dest) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def confusion_heatmap(confusion: np.ndarray, dest: Location) -> None:
    """Heatmap of counts (n_classes, n_classes), true class down, predicted across.

    The shade is log(1 + count), so the few off-diagonal mistakes still show beside the
    diagonal's thousands; each cell is labelled with its count.
    """
    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    shade = np.log1p(confusion.astype(np.float64))
    top = max(float(shade.max()), 1.0)
    figure = _figure(6, 6, left=0.1, right=0.97, bottom=0.03, top=0.86)
    ax = figure.add_subplot()
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=top)
    for (i, j), count in np.ndenumerate(confusion):
        ink = "white" if shade[i, j] > 0.55 * top else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=8, color=ink)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.set_title("Confusion matrix (test set)")
    _save(figure, dest)


def learning_curve(curve: list[dict[str, Any]], dest: Location) -> None:
    """Loss and accuracy per epoch, on the training and validation splits, side by side.

    ``curve`` holds one dict per epoch: ``epoch``, ``{train,val}_{loss,accuracy}``; a NaN
    leaves a gap in its line.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = [c["epoch"] for c in curve]
    figure = _figure(10, 4, left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.22)
    panels = [("loss", "Loss", "log-loss"), ("accuracy", "Accuracy", "accuracy")]
    for ax, (metric, title, label) in zip(figure.subplots(1, 2), panels, strict=True):
        for split, color in SERIES_COLORS.items():
            values = [c[f"{split}_{metric}"] for c in curve]
            ax.plot(epochs, values, marker="o", markersize=4, color=color, label=split)
        ax.set(title=title, xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    _save(figure, dest)


def misclassified_grid(
    images: np.ndarray, true: list[int], predicted: list[int], dest: Location
) -> None:
    """Misclassified digits, ``images`` of shape (k, 784) in [0, 1], 8 to a row.

    Each is labelled "true -> predicted". The digits are tiled into one NumPy mosaic and
    drawn as a single image: one axes, not one per digit.
    """
    cols, cell, band = 8, 28 + 4, 12  # a 28 px digit, a 2 px margin each side, a label band
    k = len(images)
    rows = max(1, math.ceil(k / cols))
    mosaic = np.zeros((rows * (band + cell), cols * cell), dtype=np.float32)
    for n, image in enumerate(np.asarray(images, dtype=np.float32)):
        r, c = divmod(n, cols)
        y, x = r * (band + cell) + band + 2, c * cell + 2
        mosaic[y : y + 28, x : x + 28] = np.clip(image.reshape(28, 28), 0, 1)
    height = 0.6 + 1.1 * rows
    figure = _figure(8, height, left=0.01, right=0.99, bottom=0.01, top=1 - 0.45 / height)
    ax = figure.add_subplot()
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("Misclassified test digits (true -> predicted)")
    for n in range(k):
        r, c = divmod(n, cols)
        x, y = c * cell + cell / 2, r * (band + cell) + band / 2
        label = f"{true[n]} -> {predicted[n]}"
        ax.text(x, y, label, ha="center", va="center", fontsize=9, color=LABEL_COLOR)
    if k == 0:
        ax.text(cols * cell / 2, (band + cell) / 2, "none: every test digit was right",
                ha="center", va="center")  # fmt: skip
    _save(figure, dest)
