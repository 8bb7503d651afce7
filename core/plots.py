"""PNG plots for the evaluation report: confusion matrix, learning curve, misclassified digits.

Drawn with Pillow, not matplotlib: matplotlib's import and first figure took 1.0-1.5 s of
every cold training run here (more than the default model's whole fit) for three small
charts; Pillow draws all three in a few hundredths of a second. Each plot is drawn at
``_SUPERSAMPLE`` times its size and scaled down, which smooths its lines and edges.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.files import atomic_path

_SUPERSAMPLE = 2
_WHITE, _INK, _AXIS, _GRID = (255, 255, 255), (25, 25, 25), (90, 90, 90), (228, 228, 228)
_SERIES = {"train": (31, 119, 180), "val": (255, 127, 14)}  # blue, orange
_LIGHT_BLUE, _DARK_BLUE = np.array([247, 251, 255]), np.array([8, 48, 107])
_RED = (200, 30, 30)


class _Canvas:
    """A white RGB image addressed in output pixels, drawn at ``_SUPERSAMPLE`` scale."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.image = Image.new("RGB", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), _WHITE)
        self.draw = ImageDraw.Draw(self.image)

    def text(self, x: float, y: float, s: str, size: int = 12, fill=_INK, anchor="mm") -> None:
        self.draw.text(_scaled((x, y)), s, fill=fill, font=_font(size), anchor=anchor)

    def line(self, points: Sequence[tuple[float, float]], fill, width: float = 1) -> None:
        self.draw.line(
            [_scaled(p) for p in points],
            fill=fill,
            width=round(width * _SUPERSAMPLE),
            joint="curve",
        )

    def rectangle(self, box: tuple[float, float, float, float], fill=None, outline=None) -> None:
        self.draw.rectangle(_scaled(box), fill=fill, outline=outline, width=_SUPERSAMPLE)

    def dot(self, x: float, y: float, radius: float, fill) -> None:
        self.draw.ellipse(_scaled((x - radius, y - radius, x + radius, y + radius)), fill=fill)

    def save(self, dest: Path) -> None:
        image = self.image.resize(self.size, Image.Resampling.LANCZOS)
        with atomic_path(Path(dest)) as tmp:
            image.save(tmp, format="PNG")


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled scalable font (needs FreeType, which Pillow's wheels include).
    return ImageFont.load_default(size=size * _SUPERSAMPLE)


def _scaled(values: Sequence[float]) -> tuple[int, ...]:
    return tuple(round(v * _SUPERSAMPLE) for v in values)


def confusion_heatmap(confusion: np.ndarray, dest: Path) -> None:
    """Heatmap of counts, true class down, predicted class across; shade is log(1 + count)."""
    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    cell, left, top = 40, 70, 70
    canvas = _Canvas(left + n * cell + 20, top + n * cell + 20)
    canvas.text(left + n * cell / 2, 16, "Confusion matrix (test set)", size=15)
    canvas.text(left + n * cell / 2, 38, "predicted", size=12)
    canvas.text(22, top + n * cell / 2, "true", size=12)
    shade = np.log1p(confusion.astype(np.float64))
    shade /= max(shade.max(), 1e-12)  # 0 (white) .. 1 (dark blue)
    for i in range(n):
        canvas.text(left + i * cell + cell / 2, top - 12, str(i), size=12)
        canvas.text(left - 12, top + i * cell + cell / 2, str(i), size=12)
        for j in range(n):
            t = shade[i, j]
            x, y = left + j * cell, top + i * cell
            color = tuple(int(c) for c in np.round(_LIGHT_BLUE + t * (_DARK_BLUE - _LIGHT_BLUE)))
            canvas.rectangle((x, y, x + cell, y + cell), fill=color)
            ink = _WHITE if t > 0.55 else _INK
            canvas.text(x + cell / 2, y + cell / 2, str(int(confusion[i, j])), size=10, fill=ink)
    canvas.rectangle((left, top, left + n * cell, top + n * cell), outline=_AXIS)
    canvas.save(dest)


def learning_curve(curve: list[dict[str, Any]], dest: Path) -> None:
    """Loss and accuracy per epoch, on the training and validation splits, side by side."""
    epochs = [c["epoch"] for c in curve]
    width, height = 420, 300
    canvas = _Canvas(2 * width, height)
    for k, (metric, title, label) in enumerate(
        [("loss", "Loss", "log-loss"), ("accuracy", "Accuracy", "accuracy")]
    ):
        series = {split: [c[f"{split}_{metric}"] for c in curve] for split in _SERIES}
        _line_chart(canvas, k * width, width, height, epochs, series, title, label)
    canvas.save(dest)


def _line_chart(
    canvas: _Canvas,
    x0: float,
    width: float,
    height: float,
    xs: list[int],
    series: dict[str, list[float]],
    title: str,
    ylabel: str,
) -> None:
    """One panel of ``width`` x ``height`` at horizontal offset ``x0``."""
    left, right, top, bottom = x0 + 62, x0 + width - 18, 40, height - 42
    values = [v for ys in series.values() for v in ys if math.isfinite(v)] or [0.0]
    ylo, yhi = _padded(min(values), max(values))
    xlo, xhi = _padded(min(xs, default=1), max(xs, default=1), fraction=0.03)

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - xlo) / (xhi - xlo) * (right - left),
            bottom - (y - ylo) / (yhi - ylo) * (bottom - top),
        )

    canvas.text((left + right) / 2, 16, title, size=15)
    canvas.text(left - 4, top - 12, ylabel, size=11, anchor="ls")
    canvas.text((left + right) / 2, height - 12, "epoch", size=12)
    yticks = _ticks(ylo, yhi)
    for tick in yticks:
        _, y = at(xlo, tick)
        canvas.line([(left, y), (right, y)], _GRID)
        canvas.text(left - 6, y, _label(tick, yticks), size=10, anchor="rm")
    for tick in _ticks(xlo, xhi, integers=True):
        x, _ = at(tick, ylo)
        canvas.line([(x, bottom), (x, bottom + 4)], _AXIS)
        canvas.text(x, bottom + 8, str(int(tick)), size=10, anchor="mt")
    canvas.rectangle((left, top, right, bottom), outline=_AXIS)
    for name, ys in series.items():
        points = [at(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if len(points) > 1:
            canvas.line(points, _SERIES[name], width=2)
        for x, y in points:
            canvas.dot(x, y, 3, _SERIES[name])
    for k, name in enumerate(reversed(series)):  # legend: above the axes, right-aligned
        x = right - 60 * (k + 1)
        canvas.line([(x, top - 12), (x + 18, top - 12)], _SERIES[name], width=2)
        canvas.text(x + 23, top - 12, name, size=11, anchor="lm")


def _padded(lo: float, hi: float, fraction: float = 0.06) -> tuple[float, float]:
    """[lo, hi] widened by ``fraction`` on each side (and made non-empty)."""
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.1 or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    return lo - fraction * span, hi + fraction * span


def _ticks(lo: float, hi: float, integers: bool = False) -> list[float]:
    """About five round values (steps of 1, 2, 2.5 or 5 times a power of ten) in [lo, hi]."""
    raw = (hi - lo) / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    if integers:
        step = max(1, math.ceil(step))
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float, ticks: list[float]) -> str:
    """``value`` with as many decimals as the tick step needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9) + (1 if f"{step:g}"[-1] == "5" else 0))
    return f"{value:.{decimals}f}"


def misclassified_grid(
    images: np.ndarray, true: list[int], predicted: list[int], dest: Path
) -> None:
    """A grid of misclassified digits (images of shape (k, 784)) labelled "true -> predicted"."""
    cols, zoom, label_h, top = 8, 2, 18, 30
    cell_w, cell_h = 28 * zoom + 8, 28 * zoom + label_h + 4
    rows = max(1, math.ceil(len(images) / cols))
    canvas = _Canvas(cols * cell_w, top + rows * cell_h)
    canvas.text(cols * cell_w / 2, 15, "Misclassified test digits (true -> predicted)", size=14)
    if len(images) == 0:
        canvas.text(cols * cell_w / 2, top + cell_h / 2, "none: every test digit was right")
    scale = zoom * _SUPERSAMPLE
    for k, image in enumerate(np.asarray(images, dtype=np.float32)):
        r, c = divmod(k, cols)
        x, y = c * cell_w + 4, top + r * cell_h
        canvas.text(x + 14 * zoom, y + label_h / 2, f"{true[k]} -> {predicted[k]}", 12, _RED)
        ink = np.round(255 * (1 - np.clip(image.reshape(28, 28), 0, 1))).astype(np.uint8)
        digit = Image.fromarray(np.kron(ink, np.ones((scale, scale), np.uint8)), mode="L")
        canvas.image.paste(digit, _scaled((x, y + label_h)))
    canvas.save(dest)
