"""Batch-score a pixel CSV: stream rows, validate, predict, write predictions and rejects.

``score_file`` is the engine behind the scoring task; it knows nothing of Prefect or of
how the model is loaded - it takes a ``predict_proba`` callable that maps uint8 pixels to
probabilities (``model.predict.predict_proba_pixels`` bound to the weights). Reading and
validation live in ``core.scoring.csv_input``; this module owns the outputs:

* predictions (CSV or Parquet): ``ImageId,Label,Confidence`` (+ ``TrueLabel`` when the
  input had labels, + carried-through columns), rows in input order, ``ImageId`` the
  1-based data-row index (Kaggle's submission convention), ``Confidence`` rounded to
  CONFIDENCE_DECIMALS;
* rejects (CSV, only when some row was rejected): ``ImageId,Line,Reason``.

Both are written to a temp file in the destination directory and moved into place with
``os.replace`` only after the whole input was read, so an interrupted run leaves either
the previous files or the new ones, never a partial file under the real name. The rejects
file is committed (or a stale one removed) before the predictions, so a fresh predictions
file always comes with its own rejects.

One big file can also be scored by several processes: ``score_part`` scores one byte range
(``core.scoring.chunks`` plans them) into hidden part files, and ``assemble_parts`` joins the parts
in order into the same two outputs. The result is byte for byte what ``score_file`` writes:
the model gives each row the same result wherever it sits, and since each range holds
whole chunks of ``chunk_rows`` rows (``core.scoring.chunks`` aligns them), the tables are the same
too. CSV parts are the rows without the header; Parquet parts are Arrow IPC streams of the
very tables ``score_file`` would have written, replayed through the same writer, so the
row groups match too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.files import temporary_path
from core.scoring.csv_input import (
    OUTPUT_COLUMNS,
    InputFileError,
    Layout,
    ParsedChunk,
    PixelCsvReader,
)

__all__ = [
    "OUTPUT_COLUMNS",
    "InputFileError",
    "PartSummary",
    "ScoreSummary",
    "assemble_parts",
    "score_file",
    "score_part",
]

N_CLASSES = 10
REJECT_COLUMNS = ("ImageId", "Line", "Reason")
REJECT_COLUMNS_LINE = (",".join(REJECT_COLUMNS) + "\n").encode()  # how our rejects begin
# Rows per predict call and per write (~15 MB of Kaggle CSV). Big enough that BLAS's
# per-call thread wake-ups stop costing much CPU; the parser scans it in smaller pieces.
DEFAULT_CHUNK_ROWS = 8192
PARQUET_ROW_GROUP = 65_536  # chunks are small; batch them so row groups are not tiny
# Confidence is written rounded to this many decimals (README, "Scoring"). The model's
# probability is already a function of the row alone; rounding keeps the written text short
# and says how much of it to trust. It is >= 0.1 (the largest of ten), so 6 decimals are
# all significant, and float32 (the column's type) holds every such value distinctly.
CONFIDENCE_DECIMALS = 6


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


@dataclass
class PartSummary:
    """What scoring one byte range did; ``assemble_parts`` adds these up."""

    index: int
    columns: list[str]  # the predictions' column names, for the header
    rows: int
    scored: int
    rejected: int
    label_counts: list[int]  # per predicted digit
    confusion_matrix: list[list[int]] | None  # [true][predicted], None without labels
    output: str  # the predictions part
    rejects: str | None  # the rejects part, only if some row was rejected
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _AtomicFile:
    """A temp file beside ``path`` that becomes ``path`` only on commit()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Not mkstemp: its 0600 mode would survive the rename; "x" honours the umask.
        self.tmp = temporary_path(path)
        self.file: BinaryIO = open(self.tmp, "xb")  # noqa: SIM115 - closed in commit/discard

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the rename must not land before the data does
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _csv_line(values: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode("utf-8")


class _PredictionWriter:
    """Streams prediction tables to a CSV or Parquet temp file."""

    def __init__(self, path: Path, fmt: Literal["csv", "parquet"], schema: pa.Schema) -> None:
        self.out = _AtomicFile(path)
        self.schema = schema
        self.fmt = fmt
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        try:
            if fmt == "csv":
                # Arrow always quotes header names, so the header is written here, plainly.
                self.out.file.write(_csv_line(tuple(schema.names)))
                opts = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
                self.writer: Any = pa_csv.CSVWriter(self.out.file, schema, write_options=opts)
            else:
                self.writer = pq.ParquetWriter(self.out.file, schema)
        except BaseException:
            self.out.discard()
            raise

    def write(self, table: pa.Table) -> None:
        if self.fmt == "csv":
            self.writer.write_table(table)
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0

    def commit(self) -> None:
        if self.fmt == "parquet":
            self._flush()
        self.writer.close()  # neither writer closes the Python file it was handed
        self.out.commit()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.out.discard()


class _PartWriter:
    """The predictions of one byte range: CSV rows without a header, or for Parquet an
    Arrow IPC stream holding each table as written, for ``assemble_parts`` to replay."""

    def __init__(self, path: Path, fmt: Literal["csv", "parquet"], schema: pa.Schema) -> None:
        self.out = _AtomicFile(path)
        try:
            if fmt == "csv":
                opts = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
                self.writer: Any = pa_csv.CSVWriter(self.out.file, schema, write_options=opts)
            else:
                self.writer = pa.ipc.new_stream(self.out.file, schema)
        except BaseException:
            self.out.discard()
            raise

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def commit(self) -> None:
        self.writer.close()
        self.out.commit()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.out.discard()


class _RejectsWriter:
    """Writes rejects to a temp file created on the first reject; commit() settles the path.

    ``header=False`` is for parts, whose rows are appended under one header later.
    """

    def __init__(self, path: Path, header: bool = True) -> None:
        self.path = path
        self.header = header
        self.out: _AtomicFile | None = None
        self.count = 0

    def write(self, rows: list[tuple[int, int, str]]) -> None:
        if not rows:
            return
        if self.out is None:
            self.out = _AtomicFile(self.path)
            if self.header:
                self.out.file.write(REJECT_COLUMNS_LINE)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        self.out.file.write(buf.getvalue().encode("utf-8"))
        self.count += len(rows)

    def commit(self) -> None:
        if self.out is not None:
            self.out.commit()
        elif not self.header:
            self.path.unlink(missing_ok=True)  # a part: hidden, named by its run's token
        else:
            remove_stale_rejects(self.path)

    def discard(self) -> None:
        if self.out is not None:
            self.out.discard()


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

    def add_part(self, part: PartSummary) -> None:
        self.rows += part.rows
        self.scored += part.scored
        self.label_counts += np.asarray(part.label_counts, np.int64)
        if self.confusion is not None and part.confusion_matrix is not None:
            self.confusion += np.asarray(part.confusion_matrix, np.int64)

    def accuracy(self) -> float | None:
        if self.confusion is None or not self.scored:
            return None
        return float(np.trace(self.confusion) / self.scored)


def output_schema(layout: Layout) -> pa.Schema:
    """The predictions' columns for an input of this layout."""
    fields = [
        pa.field("ImageId", pa.int64()),
        pa.field("Label", pa.int8()),
        pa.field("Confidence", pa.float32()),
    ]
    if layout.label_col is not None:
        fields.append(pa.field("TrueLabel", pa.int8()))
    fields += [pa.field(name, pa.string()) for name in layout.extra_names]
    return pa.schema(fields)


def _predict(
    predict_proba: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, written confidences float32) for uint8 ``pixels`` of shape (n, 784)."""
    proba = np.asarray(predict_proba(pixels))
    if proba.shape != (len(pixels), N_CLASSES):
        raise ValueError(
            f"predict_proba returned shape {proba.shape}, expected ({len(pixels)}, {N_CLASSES})"
        )
    labels = proba.argmax(axis=1)
    conf = proba[np.arange(len(pixels)), labels].astype(np.float64)
    return labels, np.round(conf, CONFIDENCE_DECIMALS).astype(np.float32)


def _score_chunk(
    chunk: ParsedChunk,
    layout: Layout,
    schema: pa.Schema,
    predict_proba: Callable[[np.ndarray], np.ndarray],
) -> tuple[pa.Table, list[tuple[int, int, str]], np.ndarray]:
    """Predict one chunk: (predictions table, reject rows, predicted labels)."""
    if len(chunk.pixels):
        labels, conf = _predict(predict_proba, chunk.pixels)
    else:  # every row rejected: don't hand the model an empty batch
        labels, conf = np.empty(0, np.int64), np.empty(0, np.float32)
    columns = [
        _arrow(chunk.first_row + 1 + chunk.ok_rows, np.int64, pa.int64()),
        _arrow(labels, np.int8, pa.int8()),
        _arrow(conf, np.float32, pa.float32()),
    ]
    if chunk.labels is not None:
        columns.append(_arrow(chunk.labels, np.int8, pa.int8()))
    columns += [_arrow_strings(col) for col in chunk.extras]
    table = pa.Table.from_arrays(columns, schema=schema)
    image_id0 = chunk.first_row + 1
    rejects = [
        (image_id0 + r, image_id0 + r + layout.header_lines, reason) for r, reason in chunk.rejects
    ]
    return table, rejects, labels


def _arrow(values: np.ndarray, dtype: type, arrow_type: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array of ``values`` cast to ``dtype``.

    pa.array(ndarray) would do, but its first call imports pandas (~0.5 s and ~50 MB).
    """
    arr = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(arr), [None, pa.py_buffer(arr)])


def _arrow_strings(values: list[str]) -> pa.Array:
    """An Arrow string array built from buffers (pa.array(list) also imports pandas)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:  # pa.string() has int32 offsets; lines are <= 1 MiB each
        raise ValueError("carried-through text over 2 GiB in one chunk; lower chunk_rows")
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)


def remove_stale_rejects(path: Path) -> bool:
    """Remove an earlier run's rejects file at ``path``, which would blame rows that are fine
    now - but only if it is recognizably ours (header ``ImageId,Line,Reason``). Anything
    else there is left alone: it may be someone's data (another job's input, say)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(len(REJECT_COLUMNS_LINE) + 4)  # + a BOM, a CR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False
    if first.replace(b"\r\n", b"\n").lstrip(b"\xef\xbb\xbf") != REJECT_COLUMNS_LINE:
        return False
    path.unlink(missing_ok=True)
    return True


def _check_paths(input_path: Path, output_path: Path, rejects_path: Path) -> None:
    resolved = [p.resolve() for p in (input_path, output_path, rejects_path)]
    if len(set(resolved)) != 3:
        raise ValueError(
            "input, output and rejects paths must be three different files, got "
            f"{input_path}, {output_path}, {rejects_path}"
        )


def score_file(
    input_path: Path,
    output_path: Path,
    rejects_path: Path,
    predict_proba: Callable[[np.ndarray], np.ndarray],
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
    input_path, output_path, rejects_path = Path(input_path), Path(output_path), Path(rejects_path)
    _check_fmt(fmt)
    _check_paths(input_path, output_path, rejects_path)

    with PixelCsvReader(input_path, chunk_rows=chunk_rows, workers=workers) as reader:
        schema = output_schema(reader.layout)
        tally = _Tally(has_labels=reader.layout.label_col is not None)
        rejected = _stream(
            reader,
            schema,
            predict_proba,
            tally,
            lambda: _PredictionWriter(output_path, fmt, schema),
            _RejectsWriter(rejects_path),
            (output_path, rejects_path),
        )
    return _file_summary(
        input_path, output_path, rejects_path, tally, rejected, time.perf_counter() - start
    )


def score_part(
    input_path: Path,
    output_part: Path,
    rejects_part: Path,
    predict_proba: Callable[[np.ndarray], np.ndarray],
    *,
    index: int,
    byte_range: tuple[int, int],
    first_row: int,
    fmt: Literal["csv", "parquet"] = "csv",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int = 2,
) -> PartSummary:
    """Score the rows in ``byte_range`` of a plain file into part files (see module doc).

    ``first_row`` is the number of data rows before the range, so ImageIds and line
    numbers are the file's own. Parts are written atomically: scoring a range again
    replaces its parts, never appends to them.
    """
    start = time.perf_counter()
    input_path, output_part, rejects_part = Path(input_path), Path(output_part), Path(rejects_part)
    _check_fmt(fmt)
    _check_paths(input_path, output_part, rejects_part)
    with PixelCsvReader(
        input_path, chunk_rows, workers, byte_range=byte_range, first_row=first_row
    ) as reader:
        schema = output_schema(reader.layout)
        tally = _Tally(has_labels=reader.layout.label_col is not None)
        rejected = _stream(
            reader,
            schema,
            predict_proba,
            tally,
            lambda: _PartWriter(output_part, fmt, schema),
            _RejectsWriter(rejects_part, header=False),
            (output_part, rejects_part),
        )
    return PartSummary(
        index=index,
        columns=list(schema.names),
        rows=tally.rows,
        scored=tally.scored,
        rejected=rejected,
        label_counts=tally.label_counts.tolist(),
        confusion_matrix=None if tally.confusion is None else tally.confusion.tolist(),
        output=str(output_part),
        rejects=str(rejects_part) if rejected else None,
        seconds=time.perf_counter() - start,
    )


def assemble_parts(
    input_path: Path,
    output_path: Path,
    rejects_path: Path,
    parts: list[PartSummary],
    *,
    fmt: Literal["csv", "parquet"] = "csv",
) -> ScoreSummary:
    """Join the parts of every range of ``input_path``, in order, into the two outputs.

    Both outputs are written atomically, rejects first, as ``score_file`` does. The part
    files are left for the caller to remove.
    """
    start = time.perf_counter()
    input_path, output_path, rejects_path = Path(input_path), Path(output_path), Path(rejects_path)
    _check_fmt(fmt)
    _check_paths(input_path, output_path, rejects_path)
    parts = sorted(parts, key=lambda p: p.index)
    if not parts or [p.index for p in parts] != list(range(len(parts))):
        raise ValueError(f"parts of {input_path} are missing: got {[p.index for p in parts]}")
    for p in (output_path, rejects_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    tally = _Tally(has_labels=parts[0].confusion_matrix is not None)
    rejected = 0
    for part in parts:
        tally.add_part(part)
        rejected += part.rejected

    rejects = _AtomicFile(rejects_path) if rejected else None
    predictions: _AtomicFile | _PredictionWriter | None = None
    try:
        if rejects is not None:
            rejects.file.write(REJECT_COLUMNS_LINE)
            for part in parts:
                if part.rejects is not None:
                    _append_file(Path(part.rejects), rejects.file)
        predictions = _join_predictions(parts, output_path, fmt)
        if rejects is not None:
            rejects.commit()
        else:
            remove_stale_rejects(rejects_path)
        predictions.commit()
    except BaseException:
        if predictions is not None:
            predictions.discard()
        if rejects is not None:
            rejects.discard()
        raise
    seconds = sum(p.seconds for p in parts) + time.perf_counter() - start
    return _file_summary(input_path, output_path, rejects_path, tally, rejected, seconds)


def _append_file(source: Path, dest: BinaryIO) -> None:
    with open(source, "rb") as f:
        shutil.copyfileobj(f, dest, 1 << 20)


def _join_predictions(
    parts: list[PartSummary], output_path: Path, fmt: Literal["csv", "parquet"]
) -> _AtomicFile | _PredictionWriter:
    """The predictions parts joined into a temp file, ready to commit."""
    if fmt == "csv":
        out = _AtomicFile(output_path)
        try:
            out.file.write(_csv_line(tuple(parts[0].columns)))
            for part in parts:
                _append_file(Path(part.output), out.file)
        except BaseException:
            out.discard()
            raise
        return out
    # Parquet: replay the very tables score_file would have written, in the same order,
    # through the same writer, so that the row groups come out the same.
    writer: _PredictionWriter | None = None
    try:
        for part in parts:
            with pa.ipc.open_stream(part.output) as stream:
                if writer is None:
                    writer = _PredictionWriter(output_path, "parquet", stream.schema)
                for batch in stream:
                    writer.write(pa.Table.from_batches([batch]))
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    assert writer is not None  # there is at least one part
    return writer


def _stream(
    reader: PixelCsvReader,
    schema: pa.Schema,
    predict_proba: Callable[[np.ndarray], np.ndarray],
    tally: _Tally,
    new_writer: Callable[[], _PredictionWriter | _PartWriter],
    rejects: _RejectsWriter,
    outputs: tuple[Path, Path],
) -> int:
    """Score every chunk the reader yields into the writers; commit both; rejected count."""
    layout = reader.layout
    for p in outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
    predictions = new_writer()
    try:
        with contextlib.closing(reader.chunks()) as chunks:
            for chunk in chunks:
                table, bad, labels = _score_chunk(chunk, layout, schema, predict_proba)
                predictions.write(table)
                rejects.write(bad)
                tally.add(chunk.n_rows, labels, chunk.labels)
        rejects.commit()
        predictions.commit()
    except BaseException:
        predictions.discard()
        rejects.discard()
        raise
    return rejects.count


def _check_fmt(fmt: str) -> None:
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")


def _file_summary(
    input_path: Path,
    output_path: Path,
    rejects_path: Path,
    tally: _Tally,
    rejected: int,
    seconds: float,
) -> ScoreSummary:
    has_labels = tally.confusion is not None
    return ScoreSummary(
        file=str(input_path),
        rows=tally.rows,
        scored=tally.scored,
        rejected=rejected,
        label_counts={d: int(c) for d, c in enumerate(tally.label_counts)},
        has_labels=has_labels,
        accuracy=tally.accuracy(),
        confusion_matrix=tally.confusion.tolist() if has_labels else None,  # type: ignore[union-attr]
        output=str(output_path),
        rejects=str(rejects_path) if rejected else None,
        seconds=seconds,
    )
