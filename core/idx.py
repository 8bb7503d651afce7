"""Parse IDX files (the MNIST container format) into NumPy arrays, with validation.

IDX layout: a 4-byte magic (0x00 0x00 dtype ndim), ndim big-endian uint32 sizes,
then the items as unsigned bytes. MNIST uses magic 2051 for images (ndim 3) and
2049 for labels (ndim 1).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIDE = 28


class IdxFormatError(ValueError):
    """An IDX file whose header or size is not what MNIST requires."""


def parse_idx(data: bytes, name: str, expected_magic: int) -> np.ndarray:
    """Return the uint8 array stored in IDX ``data``; ``name`` is used in errors.

    Images come back with shape (n, 28, 28) and labels with shape (n,).
    """
    ndim = 3 if expected_magic == IMAGES_MAGIC else 1
    header_len = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic is not None and magic != expected_magic:
        raise IdxFormatError(f"{name}: magic number {magic}, expected {expected_magic}")
    if len(data) < header_len:
        raise IdxFormatError(f"{name}: too few bytes for an IDX header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxFormatError(
            f"{name}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    expected_len = header_len + int(np.prod(dims))
    if len(data) != expected_len:
        raise IdxFormatError(
            f"{name}: header promises {dims[0]} items ({expected_len} bytes), "
            f"file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_gz(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzip-compressed IDX file from ``path`` (convenience for tests and benchmarks)."""
    return parse_idx(gzip.decompress(Path(path).read_bytes()), Path(path).name, expected_magic)
