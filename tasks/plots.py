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
    images: np.ndarray, true: np.ndarray, predicted: np.ndarray, dest: Path
) -> None:
    """A grid of misclassified digits (images of shape (k, 784)) titled true → predicted."""
    plt = _pyplot()
    cols = 8
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4))
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{true[k]}→{predicted[k]}", fontsize=9)
    fig.suptitle("Misclassified test digits (true→predicted)")
    _save(fig, dest)
