"""The normalized dataset format: one Parquet file per split, converted from IDX files.

Columns: ``label`` (uint8) and ``pixel0`` … ``pixel783`` (float32, pixel / 255, so in
[0, 1]; pixel k is row k // 28, column k % 28), zstd-compressed. The file's key-value
metadata records where the data came from (the source IDX checksums).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.fetch import IngestError, decompressed_idx
from core.files import atomic_path, seal
from core.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxFormatError, parse_idx
from core.storage import Location, location, store_errors

N_PIXELS = 784
PIXEL_COLUMNS = [f"pixel{k}" for k in range(N_PIXELS)]
METADATA_KEY = b"mnist_pipeline"


def convert_idx(
    images_gz: str | Location,
    labels_gz: str | Location,
    dest: str | Location,
    checksums: dict[str, str],
) -> dict[str, Any]:
    """Decompress and parse one split's two IDX .gz files and write them to ``dest``.

    Returns the split's record: ``{"path", "rows", "sha256"}`` (of the Parquet file).
    IngestError, naming the file, for content that is not MNIST IDX.
    """
    images_gz, labels_gz, dest = location(images_gz), location(labels_gz), location(dest)
    try:
        images = parse_idx(decompressed_idx(images_gz), images_gz.name, IMAGES_MAGIC)
        labels = parse_idx(decompressed_idx(labels_gz), labels_gz.name, LABELS_MAGIC)
    except IdxFormatError as err:
        raise IngestError(str(err)) from None
    if len(images) != len(labels):
        raise IngestError(
            f"{images_gz.name}: {len(images)} images but {labels_gz.name} has {len(labels)} labels"
        )
    write_split(dest, images, labels, metadata={"source_sha256": checksums})
    return {"path": str(dest), "rows": int(len(labels)), "sha256": seal(dest)}


def write_split(
    dest: Location, images: np.ndarray, labels: np.ndarray, metadata: dict[str, Any]
) -> None:
    """Write uint8 ``images`` (n, 28, 28) and ``labels`` (n,) to ``dest`` atomically,
    the pixels as float32 pixel / 255."""
    n = len(labels)
    y = labels.astype(np.uint8, copy=False)
    # Each pixel column goes in as a dictionary array: the uint8 pixels index the 256
    # possible float32 values. Parquet stores such a column dictionary-encoded anyway (it
    # is what keeps the files small), and handing it the encoding saves the writer from
    # hashing 47 million floats to find it (10-20% of the write). On disk the columns are
    # plain FLOAT, and they read back as float32.
    columns = _transposed(images.reshape(n, N_PIXELS))  # one contiguous run per column
    values = pa.array(np.arange(256, dtype=np.float32) / np.float32(255))
    # One dictionary array over all the columns, sliced (zero-copy) into 784: building
    # 784 arrays one by one releases and retakes the GIL at each, and with any other
    # thread busy (a flow runs several) each retake waited ~5 ms: seconds in all.
    whole = pa.DictionaryArray.from_buffers(
        pa.dictionary(pa.uint8(), pa.float32()), columns.size, [None, pa.py_buffer(columns)], values
    )
    arrays = [pa.array(y)] + [whole.slice(k * n, n) for k in range(N_PIXELS)]
    table = pa.Table.from_arrays(arrays, names=["label", *PIXEL_COLUMNS])
    with atomic_path(location(dest)) as tmp:
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


def read_split(path: str | Location) -> tuple[np.ndarray, np.ndarray]:
    """Read a split (local or on a store) as X float32 of shape (n, 784) and y uint8 of
    shape (n,)."""
    path = location(path)
    with store_errors(path, "read"), path.open("rb") as f:
        table = pq.read_table(f)
    y = table.column("label").to_numpy().astype(np.uint8, copy=False)
    pixels = table.select(PIXEL_COLUMNS).combine_chunks()
    if pixels.num_rows == 0:
        return np.empty((0, N_PIXELS), dtype=np.float32), y
    # One call builds the row-major (n, 784) matrix: converting the 784 columns one at a
    # time releases and retakes the GIL at each, and beside any busy thread that took
    # seconds instead of a fraction of one.
    (batch,) = pixels.to_batches()
    return np.asarray(batch.to_tensor(row_major=True)), y


def pixels_of(X: np.ndarray) -> np.ndarray:
    """The uint8 pixels, ndarray of shape (n, 784), behind read_split's ``X``.

    Exact for what write_split stores: each float32 pixel / 255, times 255 in float32,
    lands on its integer (all 256 values; tests/test_evaluation.py checks them).
    """
    scaled = X * np.float32(255)
    return np.rint(scaled, out=scaled).astype(np.uint8)


_TRANSPOSE_BLOCK_BYTES = 3 << 20  # a block this size stays in cache; few blocks, few GIL waits


def _transposed(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a.T``, made a block of rows at a time: 3-4x faster than
    ``np.ascontiguousarray(a.T)`` on MNIST's 60000 x 784 (which strides across all of it)."""
    out = np.empty(a.shape[::-1], dtype=a.dtype)
    block = max(1, _TRANSPOSE_BLOCK_BYTES // max(1, a[:1].nbytes))  # rows
    for start in range(0, a.shape[0], block):
        out[:, start : start + block] = a[start : start + block].T
    return out


def read_metadata(path: str | Location) -> dict[str, Any]:
    """The pipeline's metadata stored in a split's Parquet footer."""
    path = location(path)
    with store_errors(path, "read"), path.open("rb") as f:
        raw = pq.read_schema(f).metadata or {}
    return json.loads(raw.get(METADATA_KEY, b"{}"))
