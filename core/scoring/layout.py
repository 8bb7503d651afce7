"""What a pixel CSV holds: open it (plain or gzip), and read its columns from line 1.

Accepted (Kaggle "Digit Recognizer" style):

* ``test.csv`` (header ``pixel0..pixel783``) and ``train.csv`` (``label`` + pixels); with a
  header, pixel columns are matched by name in any order and other columns are carried
  through verbatim as strings;
* headerless files with 784 fields (pixels) or 785 (label first), decided by line 1;
* plain or gzip-compressed (detected by magic bytes, not by the name).

A problem with the file as a whole is an ``InputFileError`` whose message is one line.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.storage import Location, describe, is_remote, is_store_fault

_READ_BUFFER = 1 << 20

N_PIXELS = 784
PIXEL_NAMES = tuple(f"pixel{j}" for j in range(N_PIXELS))
LABEL_NAME = "label"
# Names the output uses; a carried-through input column may not shadow them.
OUTPUT_COLUMNS = ("ImageId", "Label", "Confidence", "TrueLabel")
INTEGER = re.compile(r"[+-]?[0-9]+")

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = {
    b"PK\x03\x04": "a zip archive",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PAR1": "a Parquet file",
}


class InputFileError(ValueError):
    """A problem with the input file as a whole; the message is one line naming the file."""

    def __init__(self, path: Path | str, what: str) -> None:
        # Keep it one line whatever the cause's text held.
        super().__init__(f"{path}: {' '.join(str(what).split())}")


@dataclass(frozen=True)
class Layout:
    """How the columns of one file map to pixels, the label and carried-through columns."""

    names: tuple[str, ...]  # column names in file order (synthetic when headerless)
    has_header: bool
    pixel_cols: tuple[int, ...]  # pixel_cols[j] = file column holding pixel j
    label_col: int | None
    extra_cols: tuple[int, ...]  # carried through, in file order

    @property
    def ncols(self) -> int:
        return len(self.names)

    @property
    def extra_names(self) -> tuple[str, ...]:
        return tuple(self.names[c] for c in self.extra_cols)

    @property
    def header_lines(self) -> int:
        return 1 if self.has_header else 0

    @cached_property
    def numeric_cols(self) -> tuple[int, ...]:
        """File columns holding pixels or the label, in file order."""
        extra = set(self.extra_cols)
        return tuple(c for c in range(self.ncols) if c not in extra)

    @cached_property
    def limits(self) -> np.ndarray:
        """uint16 (ncols,): the largest valid value per file column (no limit for extras)."""
        limit = np.full(self.ncols, 255, np.uint16)
        if self.label_col is not None:
            limit[self.label_col] = 9
        limit[list(self.extra_cols)] = np.iinfo(np.uint16).max
        return limit

    @cached_property
    def pixel_index(self) -> slice | list[int]:
        """Selects pixel 0..783 from a row of fields: a slice when they are in order."""
        first = self.pixel_cols[0]
        if self.pixel_cols == tuple(range(first, first + N_PIXELS)):
            return slice(first, first + N_PIXELS)  # a view, not a gather
        return list(self.pixel_cols)

    @cached_property
    def numeric_limits(self) -> list[int]:
        """The largest valid value of each numeric column, aligned with numeric_cols."""
        return [int(self.limits[c]) for c in self.numeric_cols]


def open_binary(path: Location) -> BinaryIO:
    """Open ``path`` (local, or a store URL: read as a buffered stream of ranged GETs) for
    reading bytes, transparently gunzipping; file-level errors raised.

    A gzip stream is returned as a GzipFile whose ``fileobj`` the caller closes too.
    """
    try:
        raw = path.open("rb")  # noqa: SIM115 - returned to the caller, who closes it
        if is_remote(path):
            # fsspec's file lacks readline(size), which the reader's long-line guard needs;
            # a standard buffered reader over it has every method a local file has.
            raw = io.BufferedReader(raw, _READ_BUFFER)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a directory, not a file") from None
    except Exception as e:
        if not is_store_fault(e):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else describe(e)
        raise InputFileError(path, f"cannot be opened ({reason})") from None
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.name.lower().endswith(".gz") and magic:
        raw.close()
        raise InputFileError(path, "is named .gz but is not gzip-compressed")
    for prefix, what in _OTHER_MAGIC.items():
        if magic.startswith(prefix):
            raw.close()
            raise InputFileError(path, f"is {what}, not a CSV (only gzip is supported)")
    return raw


def _is_header(fields: list[str]) -> bool:
    """True when line 1 is a header: most of its fields are not integers."""
    # A majority vote, so a headerless file whose first row has one bad value is still
    # read as data (and that row rejected) rather than mistaken for a header.
    non_ints = sum(1 for f in fields if f.strip() and not INTEGER.fullmatch(f.strip()))
    return non_ints * 2 > len(fields)


def layout_from_first_line(path: Path, line: bytes) -> Layout:
    """Decide the file's Layout from its first line (BOM removed), or raise InputFileError."""
    if b"\0" in line:
        raise InputFileError(path, "is binary, not a text CSV (NUL byte in line 1)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(path, "is binary or not UTF-8 text (line 1)") from None
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if not text.strip():
        raise InputFileError(path, "line 1 is blank; expected a header or pixel values")
    try:
        fields = next(csv.reader([text], strict=True))
    except csv.Error as e:
        raise InputFileError(path, f"line 1 is not valid CSV ({e})") from None
    if not _is_header(fields):
        if len(fields) == N_PIXELS:
            return Layout(PIXEL_NAMES, False, tuple(range(N_PIXELS)), None, ())
        if len(fields) == N_PIXELS + 1:
            names = (LABEL_NAME, *PIXEL_NAMES)
            return Layout(names, False, tuple(range(1, N_PIXELS + 1)), 0, ())
        raise InputFileError(
            path,
            f"has no header and {len(fields)} columns; expected 784 (pixels) "
            "or 785 (label, then pixels)",
        )
    return _layout_from_header(path, [f.strip() for f in fields])


def _layout_from_header(path: Path, names: list[str]) -> Layout:
    """Match header ``names`` to pixels/label/extras, or raise InputFileError."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputFileError(path, f"header has duplicate column {name!r}")
        seen.add(name)
    index = {name: i for i, name in enumerate(names)}
    missing = [p for p in PIXEL_NAMES if p not in index]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputFileError(
            path, f"header lacks {len(missing)} of the 784 pixel columns ({shown})"
        )
    label_col = index.get(LABEL_NAME)
    numeric = set(index[p] for p in PIXEL_NAMES) | ({label_col} - {None})
    extra_cols = tuple(i for i in range(len(names)) if i not in numeric)
    return Layout(tuple(names), True, tuple(index[p] for p in PIXEL_NAMES), label_col, extra_cols)
