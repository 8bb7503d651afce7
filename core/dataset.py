"""The normalized dataset format: one Parquet file per split.

Columns: ``label`` (uint8) and ``pixel0`` … ``pixel783`` (float32, pixel / 255, so in
[0, 1]; pixel k is row k // 28, column k % 28), zstd-compressed. The file's key-value
metadata records where the data came from (the source IDX checksums).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.files import atomic_path, file_identity

N_PIXELS = 784
PIXEL_COLUMNS = [f"pixel{k}" for k in range(N_PIXELS)]
METADATA_KEY = b"mnist_pipeline"


def write_split(
    dest: Path, images: np.ndarray, labels: np.ndarray, metadata: dict[str, Any]
) -> None:
    """Write uint8 ``images`` (n, 28, 28) and ``labels`` (n,) to ``dest`` atomically.

    While the file is being written, the decoded arrays are already available in this
    process to ``load_split(dest, source)`` (see ``wait_until_decoded``), where
    ``source`` is ``metadata["source_sha256"]``, the checksums they were decoded from.
    """
    n = len(labels)
    pixels = images.reshape(n, N_PIXELS)
    X = pixels.astype(np.float32)
    X /= np.float32(255)
    y = labels.astype(np.uint8, copy=False)
    X.setflags(write=False)
    y.setflags(write=False)
    decoded = _decoded_key(dest, metadata.get("source_sha256"))
    _set_decoded(decoded, (X, y))
    try:
        _write_parquet(dest, pixels, y, metadata)
    except BaseException:
        _set_decoded(decoded, None)
        raise
    _remember(Path(dest), X, y, decoded)


def _write_parquet(dest: Path, pixels: np.ndarray, y: np.ndarray, metadata: dict[str, Any]) -> None:
    """Write uint8 ``pixels`` (n, 784) as pixel / 255 and ``y`` to ``dest`` atomically."""
    n = len(y)
    # Each pixel column goes in as a dictionary array: the uint8 pixels index the 256
    # possible float32 values. Parquet stores such a column dictionary-encoded anyway (it
    # is what keeps the files small), and handing it the encoding saves the writer from
    # hashing 47 million floats to find it (10-20% of the write). On disk the columns are
    # plain FLOAT, and they read back as float32.
    columns = _transposed(pixels)  # one contiguous run per pixel column
    values = pa.array(np.arange(256, dtype=np.float32) / np.float32(255))
    # One dictionary array over all the columns, sliced (zero-copy) into 784: building
    # 784 arrays one by one releases and retakes the GIL at each, and with any other
    # thread busy (a flow runs several) each retake waited ~5 ms: seconds in all.
    whole = pa.DictionaryArray.from_buffers(
        pa.dictionary(pa.uint8(), pa.float32()), columns.size, [None, pa.py_buffer(columns)], values
    )
    arrays = [pa.array(y)] + [whole.slice(k * n, n) for k in range(N_PIXELS)]
    table = pa.Table.from_arrays(arrays, names=["label", *PIXEL_COLUMNS])
    with atomic_path(Path(dest)) as tmp:
        # No stored Arrow schema, so readers see float columns, not dictionaries (and so
        # the footer's key-value metadata is added by hand); no min/max statistics:
        # nothing reads them (the file is always read whole); zstd level 1, which is ~10%
        # faster than the default and as small here (the encoded indices are what remain).
        with pq.ParquetWriter(
            tmp,
            table.schema,
            compression="zstd",
            compression_level=1,
            write_statistics=False,
            store_schema=False,
        ) as writer:
            writer.write_table(table)
            writer.add_key_value_metadata({METADATA_KEY: json.dumps(metadata).encode()})


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a split from disk as X float32 of shape (n, 784) and y uint8 of shape (n,)."""
    table = pq.read_table(path)
    y = table.column("label").to_numpy().astype(np.uint8, copy=False)
    pixels = table.select(PIXEL_COLUMNS).combine_chunks()
    if pixels.num_rows == 0:
        return np.empty((0, N_PIXELS), dtype=np.float32), y
    # One call builds the row-major (n, 784) matrix: converting the 784 columns one at a
    # time releases and retakes the GIL at each, and beside any busy thread that took
    # seconds instead of a fraction of one.
    (batch,) = pixels.to_batches()
    return np.asarray(batch.to_tensor(row_major=True)), y


def load_split(path: Path, source: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``read_split``, served from memory when this process wrote or read the same file.

    In a cold training run the convert step has just built the arrays, and the train and
    evaluate steps (threads of the same process) would otherwise read them back from disk.
    The arrays are read-only, since every caller shares them. The key is the file's
    identity (inode, size, mtime): an atomic rename of a new file is a new key. Given the
    ``source`` checksums, arrays decoded from them for ``path`` are served even while
    the file is still being written.
    """
    path = Path(path)
    decoded = _decoded_key(path, source)
    with _LOCK:
        if decoded in _DECODED:
            return _DECODED[decoded]
        key = file_identity(path)
        if key in _RECENT:
            _RECENT.move_to_end(key)
            return _RECENT[key]
    X, y = read_split(path)
    _remember(path, X, y)
    return X, y


_TRANSPOSE_BLOCK_BYTES = 3 << 20  # a block this size stays in cache; few blocks, few GIL waits


def _transposed(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a.T``, made a block of rows at a time: 3-4x faster than
    ``np.ascontiguousarray(a.T)`` on MNIST's 60000 x 784 (which strides across all of it)."""
    out = np.empty(a.shape[::-1], dtype=a.dtype)
    block = max(1, _TRANSPOSE_BLOCK_BYTES // max(1, a[:1].nbytes))  # rows
    for start in range(0, a.shape[0], block):
        out[:, start : start + block] = a[start : start + block].T
    return out


def wait_until_decoded(path: Path, source: dict[str, str], give_up: threading.Event) -> bool:
    """Block until this process holds the arrays decoded from ``source`` for ``path``
    (they appear when its conversion has decoded them, before the file is written), or
    until ``give_up`` is set. True if the arrays are there: ``load_split(path, source)``
    then serves them, whether or not the file is written yet.
    """
    decoded = _decoded_key(path, source)
    with _CHANGED:
        while decoded not in _DECODED:
            if give_up.is_set():
                return False
            _CHANGED.wait(0.02)  # a conversion that fails or is cached never notifies
    return True


_KEPT = 2  # splits kept in memory: a training run's train and test
_LOCK = threading.Lock()
_CHANGED = threading.Condition(_LOCK)
_RECENT: OrderedDict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
# Splits decoded but still being written, by (path, source checksums).
_DECODED: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _decoded_key(path: Path, source: dict[str, str] | None) -> tuple[str, str] | None:
    if source is None:
        return None
    return str(Path(path).resolve()), json.dumps(source, sort_keys=True)


def _set_decoded(key: tuple[str, str] | None, arrays: tuple[np.ndarray, np.ndarray] | None) -> None:
    if key is None:
        return
    with _CHANGED:
        if arrays is None:
            _DECODED.pop(key, None)
        else:
            _DECODED[key] = arrays
            _CHANGED.notify_all()


def _remember(
    path: Path, X: np.ndarray, y: np.ndarray, decoded: tuple[str, str] | None = None
) -> None:
    """Keep the arrays of the file at ``path``; they replace its ``decoded`` entry, if
    any, in one step, so that a reader always finds one or the other."""
    X.setflags(write=False)
    y.setflags(write=False)
    key = file_identity(path)
    with _LOCK:
        _DECODED.pop(decoded, None)
        _RECENT[key] = (X, y)
        _RECENT.move_to_end(key)
        while len(_RECENT) > _KEPT:
            _RECENT.popitem(last=False)


def read_metadata(path: Path) -> dict[str, Any]:
    """The pipeline's metadata stored in a split's Parquet footer."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw.get(METADATA_KEY, b"{}"))
