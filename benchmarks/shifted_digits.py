"""Realistic labeled digits: MNIST training images, shifted and slightly rotated.

A team's own digits (cheques, forms, meter readings) are MNIST-like but not centred the
way MNIST's are. This makes such data from MNIST's *training* images only (never the test
images, which the leakage guard of ``core.labeled`` refuses): each new digit is a random
training image moved by a whole-pixel shift of up to ``max_shift`` in each direction and
turned by up to ``max_rotation`` degrees about the image centre, resampled by nearest
neighbour through the inverse map (output pixel -> source pixel; outside the image is 0).
Pure NumPy and seeded: the same seed, rows and strengths give the same bytes, whatever
the batch size.

The defaults (4 px, 20 degrees) make digits that the default preset trained on MNIST
alone gets ~35% right (issue 22 quotes 37%; 2 px and 10 degrees gave 67%, 6 px 21%):
benchmarks/README.md, "Labeled data (issue 22)".

    .venv/bin/python -m benchmarks.shifted_digits --rows N --out FILE [--seed S]
        [--format csv|parquet] [--no-header] [--floats] [--mnist DIR]

``--format csv`` writes Kaggle's ``train.csv`` (header ``label,pixel0..pixel783``), or with
``--no-header`` 785 columns, label first; a name ending in ``.gz`` is gzip-compressed.
``--format parquet`` writes ``label`` + ``pixel0..pixel783`` as uint8 integers, or with
``--floats`` as float32 pixel / 255.
"""

from __future__ import annotations

import argparse
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

SIDE = 28
N_PIXELS = SIDE * SIDE
PIXEL_NAMES = [f"pixel{j}" for j in range(N_PIXELS)]
DEFAULT_MAX_SHIFT = 4
DEFAULT_MAX_ROTATION = 20.0
DEFAULT_MNIST = Path(
    os.environ.get("MNIST_DIR", Path(__file__).resolve().parents[2] / "shared" / "mnist")
)
BATCH_ROWS = 4096  # rows transformed and written at a time: ~50 MB of scratch


def load_train(mnist_dir: Path = DEFAULT_MNIST) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training images (uint8, (60000, 28, 28)) and labels (uint8, (60000,))."""
    from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz

    mnist_dir = Path(mnist_dir)
    images = read_idx_gz(mnist_dir / "train-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx_gz(mnist_dir / "train-labels-idx1-ubyte.gz", LABELS_MAGIC)
    return images, labels


def transform(images: np.ndarray, shifts: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``images`` (n, 28, 28) uint8 moved by ``shifts`` (n, 2) whole pixels (down, right)
    and turned by ``angles`` (n,) radians about the centre; (n, 784) uint8.

    Nearest neighbour through the inverse map: each output pixel takes the source pixel
    that lands on it, so no value is invented and no scipy is needed.
    """
    n = len(images)
    centre = (SIDE - 1) / 2
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) - centre  # (28, 28) each
    # Undo the shift, then the rotation: source = R(-angle) @ (output - shift).
    r = rows[None] - shifts[:, 0, None, None]
    c = cols[None] - shifts[:, 1, None, None]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    src_r = np.rint(cos * r - sin * c + centre).astype(np.int64)
    src_c = np.rint(sin * r + cos * c + centre).astype(np.int64)
    inside = (src_r >= 0) & (src_r < SIDE) & (src_c >= 0) & (src_c < SIDE)
    flat = np.where(inside, src_r * SIDE + src_c, 0)
    which = np.arange(n)[:, None, None]
    out = np.where(inside, images.reshape(n, N_PIXELS)[which, flat], 0)
    return out.reshape(n, N_PIXELS).astype(np.uint8)


def shifted_batches(
    images: np.ndarray,
    labels: np.ndarray,
    rows: int,
    seed: int = 0,
    max_shift: int = DEFAULT_MAX_SHIFT,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (pixels (k, 784) uint8, labels (k,) uint8) batches, ``rows`` in all.

    Every random draw is made up front from ``seed``, so the output does not depend on
    ``batch_rows``.
    """
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(images), rows)
    shifts = rng.integers(-max_shift, max_shift + 1, (rows, 2))
    angles = np.deg2rad(rng.uniform(-max_rotation, max_rotation, rows))
    for start in range(0, rows, batch_rows):
        part = slice(start, min(start + batch_rows, rows))
        idx = source[part]
        yield transform(images[idx], shifts[part], angles[part]), labels[idx].astype(np.uint8)


def shifted_digits(
    rows: int,
    seed: int = 0,
    max_shift: int = DEFAULT_MAX_SHIFT,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    mnist_dir: Path = DEFAULT_MNIST,
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` new digits in memory: (pixels (rows, 784) uint8, labels (rows,) uint8)."""
    images, labels = load_train(mnist_dir)
    parts = list(shifted_batches(images, labels, rows, seed, max_shift, max_rotation))
    if not parts:
        return np.empty((0, N_PIXELS), np.uint8), np.empty(0, np.uint8)
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


def _digit_table() -> np.ndarray:
    """(256, 3) uint8: the text of each value 0-255, left-aligned, NUL-padded."""
    table = np.zeros((256, 3), np.uint8)
    for v in range(256):
        text = str(v).encode()
        table[v, : len(text)] = np.frombuffer(text, np.uint8)
    return table


def csv_rows(pixels: np.ndarray, labels: np.ndarray) -> bytes:
    """CSV text of rows ``label,pixel0,...,pixel783``, vectorised (a Python loop over 785
    million values would take minutes): each value's digits, then ',' or '\\n', NULs
    dropped."""
    values = np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1)
    cells = np.zeros((*values.shape, 4), np.uint8)
    cells[..., :3] = _digit_table()[values]
    cells[..., 3] = ord(",")
    cells[:, -1, 3] = ord("\n")
    flat = cells.reshape(-1)
    return flat[flat != 0].tobytes()


def csv_header() -> bytes:
    return ("label," + ",".join(PIXEL_NAMES) + "\n").encode()


def _open_out(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=1)  # type: ignore[return-value]
    return open(path, "wb")  # noqa: SIM115 - the caller closes it


def write_csv(
    path: Path, batches: Iterator[tuple[np.ndarray, np.ndarray]], header: bool = True
) -> int:
    """Write (pixels, labels) batches as a CSV (gzip if ``path`` ends in .gz); rows written."""
    n = 0
    with _open_out(Path(path)) as f:
        if header:
            f.write(csv_header())
        for pixels, labels in batches:
            f.write(csv_rows(pixels, labels))
            n += len(labels)
    return n


def write_parquet(
    path: Path, batches: Iterator[tuple[np.ndarray, np.ndarray]], floats: bool = False
) -> int:
    """Write (pixels, labels) batches as Parquet: ``label`` uint8 and ``pixel0..783`` uint8,
    or float32 pixel / 255 with ``floats``; one row group per batch; rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pixel_type = pa.float32() if floats else pa.uint8()
    schema = pa.schema(
        [pa.field("label", pa.uint8())] + [pa.field(p, pixel_type) for p in PIXEL_NAMES]
    )
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for pixels, labels in batches:
            columns = np.ascontiguousarray(pixels.T)
            if floats:
                columns = columns.astype(np.float32) / np.float32(255)
            arrays = [pa.array(labels)] + [pa.array(col) for col in columns]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            n += len(labels)
    return n


def generate(
    out: Path,
    rows: int,
    seed: int = 0,
    fmt: str = "csv",
    header: bool = True,
    floats: bool = False,
    max_shift: int = DEFAULT_MAX_SHIFT,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    mnist_dir: Path = DEFAULT_MNIST,
) -> int:
    """Write ``rows`` new digits to ``out`` as ``fmt`` ("csv" or "parquet"); rows written."""
    images, labels = load_train(mnist_dir)
    batches = shifted_batches(images, labels, rows, seed, max_shift, max_rotation)
    if fmt == "csv":
        return write_csv(Path(out), batches, header=header)
    if fmt == "parquet":
        return write_parquet(Path(out), batches, floats=floats)
    raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--no-header", action="store_true", help="csv: 785 columns, no header")
    parser.add_argument("--floats", action="store_true", help="parquet: float32 pixel / 255")
    parser.add_argument("--max-shift", type=int, default=DEFAULT_MAX_SHIFT)
    parser.add_argument("--max-rotation", type=float, default=DEFAULT_MAX_ROTATION)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    args = parser.parse_args(argv)
    n = generate(
        args.out,
        args.rows,
        seed=args.seed,
        fmt=args.format,
        header=not args.no_header,
        floats=args.floats,
        max_shift=args.max_shift,
        max_rotation=args.max_rotation,
        mnist_dir=args.mnist,
    )
    print(f"{args.out}: {n} rows")


if __name__ == "__main__":
    main()
