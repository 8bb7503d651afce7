"""The scorer's two outputs, each written atomically: predictions (CSV or Parquet), rejects.

* predictions: ``ImageId,Label,Confidence`` (+ ``TrueLabel`` when the input had labels, +
  carried-through columns), one Arrow table per chunk of rows, in input order;
* rejects (CSV, only when some row was rejected): ``ImageId,Line,Reason``.

Each is an ``AtomicFile``: ``core.files``' temporary, renamed (or uploaded) into place on
commit with the guarantees of every output, so an interrupted run leaves either the
previous file or the new one, never a partial file under the real name. A write that
fails (a full disk, say) is an ``OutputWriteError`` naming the output, not its temp file.
"""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.files import move_into_place, new_temporary, writing
from core.scoring.layout import Layout
from core.storage import Location, store_errors

REJECT_COLUMNS = ("ImageId", "Line", "Reason")
REJECT_COLUMNS_LINE = (",".join(REJECT_COLUMNS) + "\n").encode()  # how our rejects begin
PARQUET_ROW_GROUP = 65_536  # chunks are small; batch them so row groups are not tiny


class AtomicFile:
    """An open temporary file (core.files) that becomes ``path`` only on commit(). A
    failed write of it, inside ``with self.writing()``, is an OutputWriteError naming
    ``path``."""

    def __init__(self, path: Location) -> None:
        self.path = path
        self.tmp = new_temporary(path)
        try:
            with self.writing():
                self.file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/discard
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def writing(self) -> contextlib.AbstractContextManager[None]:
        return writing(self.path)

    def commit(self) -> None:
        with self.writing():
            self.file.close()
        move_into_place(self.tmp, self.path)  # fsyncs it first, as for every output

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


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


def _csv_line(values: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode("utf-8")


class PredictionWriter:
    """Streams prediction tables to a CSV or Parquet temp file."""

    def __init__(self, path: Location, fmt: Literal["csv", "parquet"], schema: pa.Schema) -> None:
        self.out = AtomicFile(path)
        self.fmt = fmt
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        try:
            with self.out.writing():
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
            with self.out.writing():
                self.writer.write_table(table)
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            with self.out.writing():
                self.writer.write_table(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0

    def commit(self) -> None:
        if self.fmt == "parquet":
            self._flush()
        with self.out.writing():
            self.writer.close()  # neither writer closes the Python file it was handed
        self.out.commit()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.out.discard()


class RejectsWriter:
    """Writes rejects to a temp file created on the first reject; commit() settles the path:
    the new file, or no file (an earlier run's rejects removed)."""

    def __init__(self, path: Location) -> None:
        self.path = path
        self.out: AtomicFile | None = None
        self.count = 0

    def write(self, rows: list[tuple[int, int, str]]) -> None:
        if not rows:
            return
        if self.out is None:
            self.out = AtomicFile(self.path)
            with self.out.writing():
                self.out.file.write(REJECT_COLUMNS_LINE)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        with self.out.writing():
            self.out.file.write(buf.getvalue().encode("utf-8"))
        self.count += len(rows)

    def commit(self) -> None:
        if self.out is not None:
            self.out.commit()
        else:
            remove_stale_rejects(self.path)

    def discard(self) -> None:
        if self.out is not None:
            self.out.discard()


def remove_stale_rejects(path: Location) -> bool:
    """Remove an earlier run's rejects file at ``path``, which would blame rows that are fine
    now - but only if it is recognizably ours (header ``ImageId,Line,Reason``). Anything
    else there is left alone: it may be someone's data (another job's input, say)."""
    try:
        with store_errors(path, "read"), path.open("rb") as f:
            first = f.readline(len(REJECT_COLUMNS_LINE) + 4)  # + a BOM, a CR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False
    if first.replace(b"\r\n", b"\n").lstrip(b"\xef\xbb\xbf") != REJECT_COLUMNS_LINE:
        return False
    with store_errors(path, "delete"):
        path.unlink(missing_ok=True)
    return True


def arrow_array(values: np.ndarray, dtype: type, arrow_type: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array of ``values`` cast to ``dtype``.

    pa.array(ndarray) would do, but its first call imports pandas (~0.5 s and ~50 MB).
    """
    arr = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(arr), [None, pa.py_buffer(arr)])


def arrow_strings(values: list[str]) -> pa.Array:
    """An Arrow string array built from buffers (pa.array(list) also imports pandas)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:  # pa.string() has int32 offsets; lines are <= 1 MiB each
        raise ValueError("carried-through text over 2 GiB in one chunk; lower chunk_rows")
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)
