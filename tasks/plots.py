"""PNG plots for the evaluation report: confusion matrix, learning curve, misclassified digits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.files import atomic_path


def _pyplot():
    # Imported here so that importing the pipeline never configures a plotting backend.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)


def confusion_heatmap(confusion: np.ndarray, dest: Path) -> None:
    """Heatmap of counts, true class down, predicted class across."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(np.log1p(confusion), cmap="Blues")
    n = confusion.shape[0]
    for i in range(n):
        for j in range(n):
            color = "white" if i == j else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    ax.set_title("Confusion matrix (test set)")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    _save(fig, dest)


def learning_curve(curve: list[dict[str, Any]], dest: Path) -> None:
    """Loss and accuracy per epoch, on the training and validation splits."""
    plt = _pyplot()
    epochs = [c["epoch"] for c in curve]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_ax.plot(epochs, [c[f"{split}_loss"] for c in curve], marker=".", label=split)
        acc_ax.plot(epochs, [c[f"{split}_accuracy"] for c in curve], marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="log-loss", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, dest)


def misclassified_grid(
    images: np.ndarray, true: list[int], predicted: list[int], dest: Path
) -> None:
    """A grid of misclassified digits (images of shape (k, 784)) labelled true → predicted."""
    plt = _pyplot()
    cols, cell = 8, 34  # a 28-pixel digit with a 6-pixel margin for its label
    rows = max(1, int(np.ceil(len(images) / cols)))
    # One tiled image and one imshow: a subplot per digit would cost seconds.
    canvas = np.zeros((rows * cell, cols * cell), dtype=np.float32)
    fig, ax = plt.subplots(figsize=(cols * 1.0, rows * 1.1))
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        canvas[r * cell + 6 : r * cell + 34, c * cell + 3 : c * cell + 31] = image.reshape(28, 28)
        ax.text(c * cell + 17, r * cell + 3, f"{true[k]}→{predicted[k]}", ha="center",
                va="center", fontsize=8, color="tab:red")  # fmt: skip
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title("Misclassified test digits (true→predicted)")
    _save(fig, dest)
