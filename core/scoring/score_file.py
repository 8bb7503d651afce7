"""Batch-score one pixel CSV: stream its rows, predict, write predictions and rejects.

``score_file`` knows nothing of Prefect or of how the model is loaded: it takes a
``predict_proba`` callable that maps uint8 pixels to probabilities
(``model.predict.predict_proba_pixels`` bound to the weights). Reading is
``core.scoring.reader``'s job, writing ``core.scoring.writers``'s.

In the predictions, rows keep input order, ``ImageId`` is the 1-based data-row index
(Kaggle's submission convention) and ``Confidence`` is rounded to CONFIDENCE_DECIMALS.
Both outputs are committed only after the whole input was read, the rejects file (or the
removal of a stale one) first, so a fresh predictions file always comes with its own
rejects. An output that cannot be written is a ``ScoringOutputError``, which names it and
counts the rows read until then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from core.files import OutputWriteError
from core.scoring.careful import ParsedChunk
from core.scoring.layout import OUTPUT_COLUMNS, InputFileError, Layout
from core.scoring.reader import PixelCsvReader
from core.scoring.writers import (
    PredictionWriter,
    RejectsWriter,
    arrow_array,
    arrow_strings,
    output_schema,
)
from core.storage import Location, identity

N_CLASSES = 10
# Rows per chunk: per parse, predict call and write (~15 MB of Kaggle CSV). Big enough that
# BLAS's per-call thread wake-ups stop costing much CPU.
DEFAULT_CHUNK_ROWS = 8192
# Confidence is written rounded to this many decimals (README, "Scoring"). The model's
# probability is already a function of the row alone; rounding keeps the written text short
# and says how much of it to trust. It is >= 0.1 (the largest of ten), so 6 decimals are
# all significant, and float32 (the column's type) holds every such value distinctly.
CONFIDENCE_DECIMALS = 6

Predictor = Callable[[np.ndarray], np.ndarray]


class ScoringOutputError(OutputWriteError):
    """An output of a scored file could not be written; ``rows_read`` data rows had been
    read by then (none of them scored: nothing was written)."""

    def __init__(self, dest: str, reason: str, code: int | None, rows_read: int) -> None:
        super().__init__(dest, reason, code)
        self.rows_read = rows_read

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest, self.reason, self.errno, self.rows_read))


@dataclass
class ScoreSummary:
    """What one scoring run did; ``to_dict()`` is JSON-ready."""

    file: str
    rows: int  # data rows in the input (scored + rejected)
    scored: int
    rejected: int
    label_counts: dict[int, int]  # predicted digit -> count, all ten digits present
    has_labels: bool
    accuracy: float | None  # None without labels or with nothing scored
    confusion_matrix: list[list[int]] | None  # [true][predicted], None without labels
    output: str
    rejects: str | None  # the rejects path, only if some row was rejected
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (label_counts keys stay ints)."""
        return asdict(self)


class _Tally:
    """Running counts for the summary."""

    def __init__(self, has_labels: bool) -> None:
        self.rows = 0
        self.scored = 0
        self.label_counts = np.zeros(N_CLASSES, np.int64)
        self.confusion = np.zeros((N_CLASSES, N_CLASSES), np.int64) if has_labels else None

    def add(self, n_rows: int, pred: np.ndarray, true: np.ndarray | None) -> None:
        self.rows += n_rows
        self.scored += len(pred)
        self.label_counts += np.bincount(pred, minlength=N_CLASSES)
        if self.confusion is not None and true is not None:
            flat = true.astype(np.int64) * N_CLASSES + pred
            self.confusion += np.bincount(flat, minlength=N_CLASSES**2).reshape(
                N_CLASSES, N_CLASSES
            )

    def summary(self, paths: tuple[Location, ...], rejected: int, seconds: float):
        """The ScoreSummary of (input, output, rejects) ``paths``."""
        confusion = self.confusion
        accuracy = None
        if confusion is not None and self.scored:
            accuracy = float(np.trace(confusion) / self.scored)
        return ScoreSummary(
            file=str(paths[0]),
            rows=self.rows,
            scored=self.scored,
            rejected=rejected,
            label_counts={d: int(c) for d, c in enumerate(self.label_counts)},
            has_labels=confusion is not None,
            accuracy=accuracy,
            confusion_matrix=None if confusion is None else confusion.tolist(),
            output=str(paths[1]),
            rejects=str(paths[2]) if rejected else None,
            seconds=seconds,
        )


def _predict(predict_proba: Predictor, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, written confidences float32) for uint8 ``pixels`` of shape (n, 784)."""
    if not len(pixels):  # every row rejected: don't hand the model an empty batch
        return np.empty(0, np.int64), np.empty(0, np.float32)
    proba = np.asarray(predict_proba(pixels))
    if proba.shape != (len(pixels), N_CLASSES):
        raise ValueError(
            f"predict_proba returned shape {proba.shape}, expected ({len(pixels)}, {N_CLASSES})"
        )
    labels = proba.argmax(axis=1)
    conf = proba[np.arange(len(pixels)), labels].astype(np.float64)
    return labels, np.round(conf, CONFIDENCE_DECIMALS).astype(np.float32)


def _score_chunk(
    chunk: ParsedChunk, layout: Layout, schema: pa.Schema, predict_proba: Predictor
) -> tuple[pa.Table, list[tuple[int, int, str]], np.ndarray]:
    """Predict one chunk: (predictions table, reject rows, predicted labels)."""
    labels, conf = _predict(predict_proba, chunk.pixels)
    columns = [
        arrow_array(chunk.first_row + 1 + chunk.ok_rows, np.int64, pa.int64()),
        arrow_array(labels, np.int8, pa.int8()),
        arrow_array(conf, np.float32, pa.float32()),
    ]
    if chunk.labels is not None:
        columns.append(arrow_array(chunk.labels, np.int8, pa.int8()))
    columns += [arrow_strings(col) for col in chunk.extras]
    table = pa.Table.from_arrays(columns, schema=schema)
    image_id0 = chunk.first_row + 1
    rejects = [
        (image_id0 + r, image_id0 + r + layout.header_lines, reason) for r, reason in chunk.rejects
    ]
    return table, rejects, labels


def _check_args(
    input_path: Location, output_path: Location, rejects_path: Location, fmt: str
) -> None:
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    resolved = [identity(p) for p in (input_path, output_path, rejects_path)]
    if len(set(resolved)) != 3:
        raise ValueError(
            "input, output and rejects paths must be three different files, got "
            f"{input_path}, {output_path}, {rejects_path}"
        )


def score_file(
    input_path: Location,
    output_path: Location,
    rejects_path: Location,
    predict_proba: Predictor,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int = 2,
) -> ScoreSummary:
    """Score every row of ``input_path``; write predictions and rejects; return a summary.

    ``predict_proba`` maps uint8 pixels of shape (n, 784) to probabilities of shape
    (n, 10). Memory is bounded by ``chunk_rows`` x ``workers``, not by the file's size.
    Raises InputFileError (writing nothing) for file-level problems; rows with problems go
    to ``rejects_path`` and every other row is scored.
    """
    start = time.perf_counter()
    paths = (input_path, output_path, rejects_path)
    _check_args(*paths, fmt)
    with PixelCsvReader(paths[0], chunk_rows=chunk_rows, workers=workers) as reader:
        # A carried-through column may not shadow one the predictions add (a labeled
        # file for training may have them: it has no such output).
        for name in reader.layout.extra_names:
            if name in OUTPUT_COLUMNS:
                raise InputFileError(paths[0], f"column {name!r} clashes with an output column")
        tally = _Tally(has_labels=reader.layout.label_col is not None)
        try:
            rejected = _write_outputs(reader, paths[1:], fmt, predict_proba, tally)
        except OutputWriteError as exc:
            raise ScoringOutputError(exc.dest, exc.reason, exc.errno, tally.rows) from exc
    return tally.summary(paths, rejected, time.perf_counter() - start)


def _write_outputs(
    reader: PixelCsvReader,
    outputs: tuple[Location, Location],
    fmt: Literal["csv", "parquet"],
    predict_proba: Predictor,
    tally: _Tally,
) -> int:
    """Score every chunk into the (predictions, rejects) ``outputs``, then commit them,
    rejects first; return the rows rejected. ``tally`` counts each chunk as soon as it is
    read, so that a write failing after it still tells how many rows were read."""
    schema = output_schema(reader.layout)
    predictions = PredictionWriter(outputs[0], fmt, schema)
    rejects = RejectsWriter(outputs[1])
    try:
        with contextlib.closing(reader.chunks()) as chunks:
            for chunk in chunks:
                table, bad, labels = _score_chunk(chunk, reader.layout, schema, predict_proba)
                tally.add(chunk.n_rows, labels, chunk.labels)
                predictions.write(table)
                rejects.write(bad)
        rejects.commit()
        predictions.commit()
    except BaseException:
        predictions.discard()
        rejects.discard()
        raise
    return rejects.count
