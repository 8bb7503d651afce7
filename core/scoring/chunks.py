"""Cut one big pixel CSV into byte ranges that several workers can score at the same time.

A range starts just after a newline and ends just after one (the last range ends at the end
of the file, newline or not), so no row is split. Each range carries the number of data
rows before it, which keeps ImageIds and line numbers those of the whole file. Planning
reads the file once and counts newlines with ``bytes.count`` (a memchr-speed scan, some
GB/s from the page cache), and only blocks where a cut falls are searched with NumPy.

gzip files cannot be cut this way (a byte offset in the compressed stream is not a line
boundary), so they are always scored whole.

Part files live beside the outputs as hidden files named after the output, a per-run token
and the range's index, so a retried range overwrites its own parts and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CHUNK_BYTES = 256 * 2**20  # ~140,000 Kaggle rows: ~2 s of work for one core
_SCAN_BYTES = 8 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to ``stop`` of a file, holding the data rows after ``first_row``."""

    index: int
    start: int
    stop: int
    first_row: int  # data rows before ``start``


def splittable(path: Path, chunk_bytes: int) -> bool:
    """True for a readable plain (not gzip) file larger than ``chunk_bytes``."""
    try:
        size = os.stat(path).st_size
        if size <= chunk_bytes:
            return False
        with open(path, "rb") as f:
            return f.read(2) != _GZIP_MAGIC
    except OSError:
        return False  # scored whole, which reports the problem in one line


def plan_ranges(
    path: Path, data_start: int, chunk_bytes: int, align_rows: int = 1
) -> list[ByteRange]:
    """Line-aligned ranges of about ``chunk_bytes`` each, covering ``data_start`` to the end.

    A cut falls on the first newline at least ``chunk_bytes`` into the range that also
    ends a multiple of ``align_rows`` data rows. Scoring passes its chunk rows: each range
    then yields the very tables a single pass writes, so Parquet row groups match too.
    """
    if chunk_bytes < 1 or align_rows < 1:
        raise ValueError(
            f"chunk_bytes and align_rows must be >= 1, got {chunk_bytes}, {align_rows}"
        )
    ranges: list[ByteRange] = []
    start, first_row = data_start, 0
    target = start + chunk_bytes  # a cut is a newline at byte >= target - 1
    rows, pos = 0, data_start  # newlines in [data_start, pos)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(data_start)
        while block := f.read(_SCAN_BYTES):
            end = pos + len(block)
            if end < target:  # no cut can fall in this block: just count its rows
                rows += block.count(b"\n")
                pos = end
                continue
            newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            i = 0
            while True:
                j = max(i, int(np.searchsorted(newlines, target - 1 - pos)))
                j += (-(rows + 1 + j)) % align_rows  # newline j ends data row rows + 1 + j
                if j >= len(newlines):
                    break
                cut = pos + int(newlines[j]) + 1
                if cut >= size:
                    break
                ranges.append(ByteRange(len(ranges), start, cut, first_row))
                start, first_row, target = cut, rows + 1 + j, cut + chunk_bytes
                i = j + 1
            rows += len(newlines)
            pos = end
    ranges.append(ByteRange(len(ranges), start, max(size, start), first_row))
    return ranges


def part_paths(output: Path, rejects: Path, token: str, index: int) -> tuple[Path, Path]:
    """Where range ``index`` of a run (``token``) writes its predictions and rejects parts."""
    suffix = f"{token}-part{index:05d}"
    return (
        output.with_name(f".{output.name}.{suffix}"),
        rejects.with_name(f".{rejects.name}.{suffix}"),
    )


def remove_parts(output: Path, rejects: Path, token: str) -> int:
    """Delete every part of a run, and the temp files of parts whose writer was killed."""
    removed = 0
    for final in {Path(output), Path(rejects)}:
        marker = f".{final.name}.{token}-part"
        try:
            names = os.listdir(final.parent)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(marker) or name.startswith("." + marker):
                try:
                    (final.parent / name).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
