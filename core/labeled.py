"""The user's labeled digits: find the files, validate and convert each, and read them back.

A labeled file is a CSV (Kaggle's ``train.csv``: a header ``label,pixel0..pixel783`` in any
column order, extra columns allowed; or 785 headerless columns, label first; plain or
gzip) or a Parquet file (``label`` and ``pixel0..pixel783``, integers 0-255 or floats
k/255 in [0, 1]). CSV rows go through scoring's reader (``core.scoring.reader``), so a
bad row gets the same one-line reason as in scoring; Parquet rows are checked here, a
batch at a time, with reasons in the same style.

``convert_labeled`` writes each accepted file as ``<sha256>.parquet`` (named by the
source's bytes, so a file changed in place is a new file): ``label`` (uint8), ``pixels``
(the row's 784 pixels as 784 bytes, pixel k at byte k: one byte a pixel, scaled to
float32 a batch at a time only when training), ``row_key`` (a hash of those bytes) and
``line`` (where the row came from). A row byte-identical to an MNIST test image is
rejected ("identical to MNIST test image N"): training on it would make the test accuracy
measure memory.

``row_key`` also chooses the held-out rows (``holdout_mask``): a function of the pixels
alone, so a row stays on its side of the split when its file grows or is renamed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.dataset import PIXEL_COLUMNS, pixels_of, read_split
from core.errors import PipelineError
from core.files import seal, sha256_file
from core.scoring.careful import ParsedChunk
from core.scoring.layout import InputFileError
from core.scoring.reader import PixelCsvReader
from core.scoring.writers import AtomicFile, RejectsWriter, arrow_array
from core.storage import Location, is_remote, is_url, location, store_errors

N_PIXELS = 784
LABEL = "label"
CSV_CHUNK_ROWS = 8192  # rows per parse (as scoring's DEFAULT_CHUNK_ROWS)
PARQUET_BATCH_ROWS = 4096  # input rows checked at a time: ~60 MB of float64 scratch
# Rows per row group of a converted file: writing or reading one holds ~50 MB of pixels.
ROW_GROUP_ROWS = 65_536
READ_BATCH_ROWS = 16_384  # rows per batch when reading converted files
SPLIT_COLUMNS = 28  # MNIST split columns read at a time: ~7 MB of float32 for 60,000 rows
# A float pixel is accepted as k/255 when it is within this many gray levels of it: float32
# and float64 hold k/255 to ~1e-5 of a level; 0.5 (say) is between two levels.
FLOAT_PIXEL_TOLERANCE = 0.01

# The converted files' columns. The pixels are one FIXED_LEN_BYTE_ARRAY(784) column, not
# 784 uint8 columns: Parquet has no 8-bit type, so those would be INT32s, and writing them
# cost 5.3 us a row against 2.1 here (zstd 1; 221 vs 169 bytes a row on disk), which alone
# would have put conversion behind scoring's reader (benchmarks/README.md, "Labeled data
# (issue 22)"). Reading it back is one zero-copy view of the column's buffer.
PIXELS = "pixels"
CONVERTED_SCHEMA = pa.schema(
    [
        pa.field(LABEL, pa.uint8()),
        pa.field(PIXELS, pa.binary(N_PIXELS)),
        pa.field("row_key", pa.uint64()),
        pa.field("line", pa.int64()),
    ]
)
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    "write_statistics": False,
}


class LabeledDataError(PipelineError, ValueError):
    """A labeled entry or file that cannot be used; one line naming the entry or file."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# ----------------------------------------------------------------------------- finding files


def expand_sources(entries: Sequence[str]) -> list[Location]:
    """The files that ``entries`` name: local paths or globs (made absolute) and store URLs
    or globs (``s3://bucket/labeled/*.parquet``), sorted, duplicates removed, folders
    skipped. LabeledDataError for an entry that matches no file."""
    found: dict[str, Location] = {}
    for entry in entries:
        matches = _remote_matches(entry) if _is_store_url(entry) else _local_matches(entry)
        if not matches:
            raise LabeledDataError(f"{entry}: no file matches")
        for path in matches:
            found.setdefault(str(path), path)
    return [found[key] for key in sorted(found)]


def _is_store_url(entry: str) -> bool:
    return is_url(entry) and is_remote(location(entry))


def _local_matches(entry: str) -> list[Location]:
    path = Path(location(entry)).absolute()  # a file:// URL becomes its path here
    if not glob.has_magic(str(path)):
        return [path] if path.is_file() else []
    return [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]


def _remote_matches(entry: str) -> list[Location]:
    base = location(entry)
    with store_errors(base, "list"):
        if glob.has_magic(base.path):
            info = base.fs.glob(base.path, detail=True)
        else:
            try:
                info = {base.path: base.fs.info(base.path)}
            except FileNotFoundError:
                return []
    return [
        location(base.fs.unstrip_protocol(key))
        for key, detail in info.items()
        if detail.get("type") == "file"
    ]


def file_sha256(source: Location) -> str:
    """The SHA-256 of ``source``'s bytes, read in 1 MiB blocks (local or on a store)."""
    try:
        return sha256_file(source)
    except FileNotFoundError:
        raise LabeledDataError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise LabeledDataError(f"{source}: is a folder, not a file") from None


# ----------------------------------------------------------------------------- row keys


def row_keys(pixels: np.ndarray) -> np.ndarray:
    """uint64 (n,): the first 8 bytes (little-endian) of the BLAKE2b of each row's 784
    pixel bytes. Anyone can recompute it; it depends on the pixels alone."""
    data = np.ascontiguousarray(pixels, dtype=np.uint8)
    digests = [hashlib.blake2b(row, digest_size=8).digest() for row in data]
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64, copy=False)


def holdout_mask(row_key: np.ndarray, fraction: float) -> np.ndarray:
    """bool (n,): True for the rows held out from training, about ``fraction`` of them.

    A row is held out when its key's top 53 bits, read as a number in [0, 1), are below
    ``fraction``: a function of the key alone, so the choice of a row never changes as
    its file grows. 0 holds out nothing; 1 everything.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1], got {fraction}")
    keys = np.asarray(row_key, dtype=np.uint64)
    return (keys >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


# ----------------------------------------------------------------------------- conversion


class _LeakGuard:
    """Finds rows byte-identical to an MNIST test image, by key and then by bytes."""

    def __init__(self, test_split: Location) -> None:
        X_test, _ = read_split(test_split)
        self.images = pixels_of(X_test)
        keys = row_keys(self.images)
        self.order = np.argsort(keys, kind="stable")  # equal keys: lowest index first
        self.keys = keys[self.order]

    def matches(self, pixels: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """int64 (n,): the index of the first test image equal to each row, or -1."""
        found = np.full(len(keys), -1, np.int64)
        if not len(self.keys) or not len(keys):
            return found
        at = np.searchsorted(self.keys, keys)
        hit = self.keys[np.minimum(at, len(self.keys) - 1)] == keys
        for row in np.flatnonzero(hit).tolist():  # rare: compare the bytes
            i = int(at[row])
            while i < len(self.keys) and self.keys[i] == keys[row]:
                candidate = int(self.order[i])
                if np.array_equal(self.images[candidate], pixels[row]):
                    found[row] = candidate
                    break
                i += 1
        return found


def pixel_array(pixels: np.ndarray) -> pa.Array:
    """uint8 ``pixels`` (n, 784) as the ``pixels`` column: one 784-byte value a row."""
    data = np.ascontiguousarray(pixels, dtype=np.uint8)
    return pa.Array.from_buffers(pa.binary(N_PIXELS), len(data), [None, pa.py_buffer(data)])


def pixels_of_column(column: pa.Array) -> np.ndarray:
    """The uint8 (n, 784) pixels of a ``pixels`` column (a read-only view, no copy)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    data = np.frombuffer(column.buffers()[1], np.uint8)
    start = column.offset * N_PIXELS
    return data[start : start + len(column) * N_PIXELS].reshape(len(column), N_PIXELS)


class _ConvertedWriter:
    """Accepted rows into ``<sha256>.parquet``, a row group at a time, atomically."""

    def __init__(self, path: Location) -> None:
        self.out = AtomicFile(path)
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.pending_rows = 0
        try:
            with self.out.writing():
                self.writer = pq.ParquetWriter(self.out.file, CONVERTED_SCHEMA, **_WRITE_OPTIONS)
        except BaseException:
            self.out.discard()
            raise

    def write(
        self, labels: np.ndarray, pixels: np.ndarray, keys: np.ndarray, lines: np.ndarray
    ) -> None:
        if not len(labels):
            return
        self.pending.append((labels, pixels, keys, lines))
        self.pending_rows += len(labels)
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        labels, pixels, keys, lines = (
            np.concatenate(part) for part in zip(*self.pending, strict=True)
        )
        self.pending, self.pending_rows = [], 0
        arrays = [
            arrow_array(labels, np.uint8, pa.uint8()),
            pixel_array(pixels),
            arrow_array(keys, np.uint64, pa.uint64()),
            arrow_array(lines, np.int64, pa.int64()),
        ]
        with self.out.writing():
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=CONVERTED_SCHEMA))

    def commit(self) -> None:
        self._flush()
        with self.out.writing():
            self.writer.close()
        self.out.commit()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.out.discard()


def convert_labeled(
    source: Location,
    sha256: str,
    out_dir: Location,
    test_split: Location,
    max_reject_fraction: float,
) -> dict[str, Any]:
    """Validate every row of ``source`` and write its accepted rows to
    ``out_dir/<sha256>.parquet``, its rejected rows to ``out_dir/<sha256>.rejects.csv``
    (``ImageId,Line,Reason``, only when some row was rejected), both atomically.

    Returns ``{source, name, sha256, path, parquet_sha256, rows, accepted, rejected,
    leaked, rejects}``, with accepted + rejected == rows. LabeledDataError, writing no
    Parquet, for a file that is not one of the accepted formats or has more than
    ``max_reject_fraction`` of its rows rejected (the rejects file is written then too,
    so the user can see why). Memory is bounded by chunks of rows, not the file's size.
    """
    if not 0.0 <= max_reject_fraction <= 1.0:
        raise ValueError(f"max_reject_fraction must be in [0, 1], got {max_reject_fraction}")
    guard = _LeakGuard(test_split)
    parquet = out_dir / f"{sha256}.parquet"
    rejects = RejectsWriter(out_dir / f"{sha256}.rejects.csv")
    counts = {"rows": 0, "accepted": 0, "rejected": 0, "leaked": 0}
    with _chunks(source) as (chunks, header_lines):
        writer = _ConvertedWriter(parquet)
        try:
            for chunk in chunks:
                _convert_chunk(chunk, header_lines, guard, writer, rejects, counts)
            rejects.commit()
            if counts["rejected"] > max_reject_fraction * counts["rows"]:
                raise LabeledDataError(_over_limit(source, counts, max_reject_fraction, rejects))
            writer.commit()
        except BaseException:
            writer.discard()
            rejects.discard()
            raise
    return {
        "source": str(source),
        "name": source.name,
        "sha256": sha256,
        "path": str(parquet),
        "parquet_sha256": seal(parquet),
        **counts,
        "rejects": str(rejects.path) if counts["rejected"] else None,
    }


def _convert_chunk(
    chunk: ParsedChunk,
    header_lines: int,
    guard: _LeakGuard,
    writer: _ConvertedWriter,
    rejects: RejectsWriter,
    counts: dict[str, int],
) -> None:
    """Check one parsed chunk for leaked rows; its accepted rows to ``writer``, its
    rejected ones (in input order) to ``rejects``."""
    keys = row_keys(chunk.pixels)
    leaked_at = guard.matches(chunk.pixels, keys)
    leaked = np.flatnonzero(leaked_at >= 0)
    bad = list(chunk.rejects)
    if len(leaked):
        bad += [
            (int(chunk.ok_rows[i]), f"identical to MNIST test image {int(leaked_at[i])}")
            for i in leaked.tolist()
        ]
        bad.sort()
        keep = leaked_at < 0
        pixels, labels, keys = chunk.pixels[keep], chunk.labels[keep], keys[keep]
        ok_rows = chunk.ok_rows[keep]
    else:
        pixels, labels, ok_rows = chunk.pixels, chunk.labels, chunk.ok_rows
    first_id = chunk.first_row + 1  # ImageId: the 1-based data row, as in scoring
    rejects.write([(first_id + r, first_id + r + header_lines, why) for r, why in bad])
    writer.write(labels, pixels, keys, first_id + header_lines + ok_rows)
    counts["rows"] += chunk.n_rows
    counts["accepted"] += len(ok_rows)
    counts["rejected"] += len(bad)
    counts["leaked"] += len(leaked)


def _over_limit(
    source: Location, counts: dict[str, int], limit: float, rejects: RejectsWriter
) -> str:
    share = counts["rejected"] / counts["rows"]
    return (
        f"{source}: {counts['rejected']} of {counts['rows']} rows rejected "
        f"({100 * share:.3g}%), over the limit of {100 * limit:g}% "
        f"(--max-reject-fraction); see {rejects.path}"
    )


@contextlib.contextmanager
def _chunks(source: Location) -> Iterator[tuple[Iterator[ParsedChunk], int]]:
    """(the file's parsed chunks, its header lines), CSV or Parquet by its first bytes;
    LabeledDataError for a file that is neither, or not a labeled one."""
    try:
        with store_errors(source, "read"), source.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise LabeledDataError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise LabeledDataError(f"{source}: is a folder, not a file") from None
    try:
        if magic == b"PAR1":
            with _ParquetInput(source) as parquet:
                yield parquet.chunks(), 0
            return
        with PixelCsvReader(source, chunk_rows=CSV_CHUNK_ROWS) as reader:
            if reader.layout.label_col is None:
                raise LabeledDataError(
                    f"{source}: has no label column; a labeled CSV has a header with label "
                    "and pixel0..pixel783 (Kaggle's train.csv), or 785 columns, label first"
                )
            chunks = reader.chunks()
            try:
                yield chunks, reader.layout.header_lines
            finally:
                chunks.close()
    except InputFileError as err:  # the file as a whole, in scoring's words
        raise LabeledDataError(str(err)) from None


# ----------------------------------------------------------------------------- Parquet input


class _ParquetInput:
    """A labeled Parquet file, read a batch of rows at a time and checked row by row."""

    def __init__(self, source: Location) -> None:
        self.source = source
        self._f = source.open("rb")
        try:
            self.file = pq.ParquetFile(self._f)
            self.columns = self._columns(self.file.schema_arrow)
        except BaseException as err:
            self._f.close()
            if isinstance(err, pa.ArrowException):
                raise LabeledDataError(f"{source}: not a readable Parquet file ({err})") from None
            raise

    def __enter__(self) -> _ParquetInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def _columns(self, schema: pa.Schema) -> list[str]:
        """The label and pixel columns in file order; LabeledDataError unless all are there
        and numeric."""
        names = set(schema.names)
        if LABEL not in names:
            raise LabeledDataError(f"{self.source}: has no label column")
        missing = [p for p in PIXEL_COLUMNS if p not in names]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise LabeledDataError(
                f"{self.source}: lacks {len(missing)} of the 784 pixel columns ({shown})"
            )
        wanted = {LABEL, *PIXEL_COLUMNS}
        columns = [f.name for f in schema if f.name in wanted]
        if len(columns) != len(wanted):
            raise LabeledDataError(f"{self.source}: has duplicate label or pixel columns")
        for name in columns:
            kind = schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                what = "integers 0-9" if name == LABEL else "integers 0-255 or floats in [0, 1]"
                raise LabeledDataError(f"{self.source}: column {name} is {kind}; expected {what}")
        return columns

    def chunks(self) -> Iterator[ParsedChunk]:
        first_row = 0
        try:
            for batch in self.file.iter_batches(PARQUET_BATCH_ROWS, columns=self.columns):
                yield _check_batch(batch, first_row)
                first_row += batch.num_rows
        except pa.ArrowException as err:
            raise LabeledDataError(f"{self.source}: not a readable Parquet file ({err})") from None


def _check_batch(batch: pa.RecordBatch, first_row: int) -> ParsedChunk:
    """Every row of a Parquet batch checked: the first bad column (in file order) of a bad
    row gives its reason. Integers must be 0-255 (labels 0-9); floats in [0, 1] and
    k/255 (labels integers 0-9); a null is bad."""
    n, names = batch.num_rows, batch.schema.names
    values = np.zeros((n, len(names)), np.float64)  # exact for every int below 2**53
    null = np.zeros((n, len(names)), bool)
    is_float = np.array([pa.types.is_floating(t) for t in batch.schema.types])
    for j, column in enumerate(batch.columns):
        if column.null_count:
            null[:, j] = column.is_null().to_numpy(zero_copy_only=False)
            column = column.fill_null(0)
        values[:, j] = column.to_numpy(zero_copy_only=False)
    label_col = names.index(LABEL)
    top = np.full(len(names), 255.0)
    top[label_col] = 9.0
    scaled = np.where(is_float, values * 255.0, values)
    scaled[:, label_col] = values[:, label_col]  # a float label is the digit itself
    levels = np.rint(scaled)
    off_grid = np.abs(scaled - levels) > np.where(is_float, FLOAT_PIXEL_TOLERANCE, 0.0)
    off_grid[:, label_col] = values[:, label_col] != levels[:, label_col]
    outside = ~((values >= 0) & (values <= np.where(is_float, 1.0, top)))  # NaN too
    outside[:, label_col] = ~((values[:, label_col] >= 0) & (values[:, label_col] <= 9))
    bad = null | outside | off_grid
    bad_rows = np.flatnonzero(bad.any(axis=1))
    ok_rows = np.flatnonzero(~bad.any(axis=1))
    rejects = []
    for r, c in zip(bad_rows.tolist(), bad[bad_rows].argmax(axis=1).tolist(), strict=True):
        why = "null" if null[r, c] else "outside" if outside[r, c] else "off grid"
        rejects.append((r, _reason(names[c], values[r, c], bool(is_float[c]), why)))
    pixel_cols = [names.index(p) for p in PIXEL_COLUMNS]
    pixels = levels[np.ix_(ok_rows, pixel_cols)].astype(np.uint8)
    labels = levels[ok_rows, label_col].astype(np.uint8)
    return ParsedChunk(first_row, n, pixels, ok_rows, labels, [], rejects)


def _reason(name: str, value: float, is_float: bool, why: str) -> str:
    """A Parquet row's reject reason, in scoring's words where they apply."""
    if why == "null":
        return f"{name}: null"
    shown = f"{value:.6g}" if is_float else str(int(value))
    if why == "outside":
        allowed = "0-9" if name == LABEL else "0-1" if is_float else "0-255"  # no comma: unquoted
        return f"{name}: {shown} is outside {allowed}"
    if name == LABEL:
        return f"{name}: {shown} is not an integer"
    return f"{name}: {shown} is not k/255 for an integer k"


# ----------------------------------------------------------------------------- reading back


def _keys_of(record: dict[str, Any]) -> np.ndarray:
    path = location(record["path"])
    with store_errors(path, "read"), path.open("rb") as f:
        # ParquetFile, not pq.read_table: that imports pyarrow.dataset (and pandas), ~60 MB.
        table = pq.ParquetFile(f).read(columns=["row_key"])
    return table.column("row_key").to_numpy().astype(np.uint64, copy=False)


def _labeled_batches(path: Location) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 pixels (k, 784), uint8 labels (k,)) of a converted file, batch by batch."""
    with store_errors(path, "read"), path.open("rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(READ_BATCH_ROWS, columns=[LABEL, PIXELS]):
            labels = batch.column(0).to_numpy().astype(np.uint8, copy=False)
            yield pixels_of_column(batch.column(1)), labels


def _read_split_into(path: Location, X: np.ndarray, y: np.ndarray) -> int:
    """Fill the first rows of ``X`` and ``y`` with a float32 MNIST split's uint8 pixels
    and labels; return its rows. A row group is read a block of columns at a time: all
    784 at once (MNIST's splits are one row group) peaked ~250 MB above the result, 28 at a
    time ~130 MB (60,000 rows)."""
    at = 0
    with store_errors(path, "read"), path.open("rb") as f:
        split = pq.ParquetFile(f)
        for group in range(split.num_row_groups):
            rows = split.metadata.row_group(group).num_rows
            labels = split.read_row_group(group, columns=[LABEL]).column(0)
            y[at : at + rows] = labels.to_numpy().astype(np.uint8, copy=False)
            for start in range(0, N_PIXELS, SPLIT_COLUMNS):
                names = PIXEL_COLUMNS[start : start + SPLIT_COLUMNS]
                block = split.read_row_group(group, columns=names).combine_chunks()
                row = at
                for batch in block.to_batches():
                    floats = np.asarray(batch.to_tensor(row_major=True))
                    X[row : row + len(floats), start : start + len(names)] = pixels_of(floats)
                    row += len(floats)
            at += rows
    return at


def _split_rows(path: Location) -> int:
    with store_errors(path, "read"), path.open("rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def training_data(
    train_split: Location, labeled: Sequence[dict[str, Any]], holdout: float
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's train split plus every labeled file's rows not held out: X uint8 of shape
    (n, 784) and y uint8 (n,), in that order. Allocated once and filled batch by batch, so
    the peak is about the result (785 bytes a row), not twice it."""
    train_split = location(train_split)
    keeps = [~holdout_mask(_keys_of(record), holdout) for record in labeled]
    n = _split_rows(train_split) + sum(int(keep.sum()) for keep in keeps)
    X = np.empty((n, N_PIXELS), np.uint8)
    y = np.empty(n, np.uint8)
    at = _read_split_into(train_split, X, y)
    for record, keep in zip(labeled, keeps, strict=True):
        start = 0
        for pixels, labels in _labeled_batches(location(record["path"])):
            mask = keep[start : start + len(labels)]
            start += len(labels)
            k = int(mask.sum())
            X[at : at + k], y[at : at + k] = pixels[mask], labels[mask]
            at += k
    if at != n:  # a file changed under us between the two reads
        raise LabeledDataError(f"training data: expected {n} rows, read {at}")
    return X, y


def holdout_data(record: dict[str, Any], holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """One converted file's held-out rows: X uint8 (k, 784), y uint8 (k,), in file order."""
    parts_X, parts_y = [], []
    start = 0
    keep = holdout_mask(_keys_of(record), holdout)
    for pixels, labels in _labeled_batches(location(record["path"])):
        mask = keep[start : start + len(labels)]
        start += len(labels)
        parts_X.append(pixels[mask])
        parts_y.append(labels[mask])
    if not parts_X:
        return np.empty((0, N_PIXELS), np.uint8), np.empty(0, np.uint8)
    return np.concatenate(parts_X), np.concatenate(parts_y)


def holdout_count(record: dict[str, Any], holdout: float) -> int:
    """How many of a converted file's rows ``holdout`` holds out (its ``held_out``)."""
    return int(holdout_mask(_keys_of(record), holdout).sum())
