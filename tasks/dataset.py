"""The normalized dataset format: one Parquet file per split.

Columns: ``label`` (uint8) and ``pixel0`` … ``pixel783`` (float32, pixel / 255, so in
[0, 1]; pixel k is row k // 28, column k % 28), zstd-compressed. The file's key-value
metadata records where the data came from (the source IDX checksums).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.files import atomic_path

N_PIXELS = 784
PIXEL_COLUMNS = [f"pixel{k}" for k in range(N_PIXELS)]
METADATA_KEY = b"mnist_pipeline"


def write_split(
    dest: Path, images: np.ndarray, labels: np.ndarray, metadata: dict[str, Any]
) -> None:
    """Write uint8 ``images`` (n, 28, 28) and ``labels`` (n,) to ``dest`` atomically."""
    n = len(labels)
    # Transposed so that each pixel column is one contiguous float32 run: Arrow then
    # wraps the columns without copying them again.
    columns = np.ascontiguousarray(images.reshape(n, N_PIXELS).T, dtype=np.float32)
    columns /= np.float32(255)
    arrays = [pa.array(labels.astype(np.uint8, copy=False))] + [pa.array(c) for c in columns]
    table = pa.Table.from_arrays(arrays, names=["label", *PIXEL_COLUMNS])
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    with atomic_path(Path(dest)) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a split back as X float32 of shape (n, 784) and y uint8 of shape (n,)."""
    table = pq.read_table(path)
    X = np.empty((table.num_rows, N_PIXELS), dtype=np.float32)
    for k, name in enumerate(PIXEL_COLUMNS):
        X[:, k] = table.column(name).to_numpy()
    return X, table.column("label").to_numpy().astype(np.uint8, copy=False)


def read_metadata(path: Path) -> dict[str, Any]:
    """The pipeline's metadata stored in a split's Parquet footer."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw.get(METADATA_KEY, b"{}"))
