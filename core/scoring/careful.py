"""The careful per-row parser: slow, exact, and the only judge of a rejected row's reason.

Every ``\\n``-terminated line is one row. Quoted fields are understood within a line; a
quoted field holding a newline is not supported: a line with an odd number of quote
characters is rejected as ``unbalanced quotes``. Values may be spelled loosely (``" 7"``,
``007``, ``+7``, a quoted ``"7"``); anything else gets a reason naming the first bad field
in file order. ``ParsedChunk`` is what any parser of a chunk of rows returns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

from core.scoring.layout import INTEGER, Layout

UNBALANCED_QUOTES = "unbalanced quotes (quoted newlines are not supported)"
NEWLINE = 10


def newlines(data: bytes) -> np.ndarray:
    """The offsets of the ``\\n`` bytes of ``data`` (NumPy's search releases the GIL)."""
    return np.flatnonzero(np.frombuffer(data, np.uint8) == NEWLINE)


@dataclass
class ParsedChunk:
    """One chunk of consecutive rows: the accepted rows' data and the rejected rows' reasons."""

    first_row: int  # 0-based index of the chunk's first row among all data rows
    n_rows: int
    pixels: np.ndarray  # uint8, shape (n_ok, 784), accepted rows in input order
    ok_rows: np.ndarray  # int64, shape (n_ok,): index within the chunk of each accepted row
    labels: np.ndarray | None  # uint8, shape (n_ok,) when the file has labels
    extras: list[list[str]]  # one list of n_ok strings per carried-through column
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (index in chunk, reason)


def parsed_chunk(
    first_row: int,
    n_rows: int,
    kept: np.ndarray,
    ok_rows: np.ndarray,
    layout: Layout,
    extras: list[list[str]],
    rejects: list[tuple[int, str]] | None = None,
) -> ParsedChunk:
    """The ParsedChunk whose accepted rows ``ok_rows`` hold the field values ``kept``
    (uint16, shape (n_ok, ncols), in file column order)."""
    labels = None if layout.label_col is None else kept[:, layout.label_col].astype(np.uint8)
    pixels = kept[:, layout.pixel_index].astype(np.uint8)
    return ParsedChunk(first_row, n_rows, pixels, ok_rows, labels, extras, rejects or [])


def _short_repr(s: str, limit: int = 20) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "...")


def careful_row(line: bytes, layout: Layout) -> tuple[list[int] | None, list[str], str | None]:
    """Parse one line (no terminator) slowly and exactly.

    Returns ``(values, extras, None)`` for a good row, ``values`` being the numeric fields
    (pixels and label) in file order, or ``(None, [], reason)`` for a bad one.
    """
    text = line.decode("utf-8", errors="replace")
    if not text.strip():
        return None, [], "empty row"
    # Well-formed quoting always pairs up. An odd count is a quoted field cut by a newline
    # (both halves of it have one), which we do not support; the csv module would accept
    # the second half as a row with a stray quote in it.
    if text.count('"') % 2:
        return None, [], UNBALANCED_QUOTES
    try:
        fields = next(csv.reader([text], strict=True))
    except csv.Error as e:
        if "new-line character" in str(e):
            return None, [], "carriage return inside an unquoted field"
        return None, [], f"malformed CSV ({e})"
    if len(fields) != layout.ncols:
        return None, [], f"expected {layout.ncols} fields, got {len(fields)}"
    extras = [fields[c] for c in layout.extra_cols]
    raw = [fields[c] for c in layout.numeric_cols]
    # Quick accept: int() in C is ~10x faster than the per-field loop. It is looser than
    # our rule (it takes "1_0" and non-ASCII digits), hence the two guards.
    try:
        values = list(map(int, raw))
    except ValueError:
        pass
    else:
        joined = "".join(raw)
        if joined.isascii() and "_" not in joined and min(values) >= 0:
            if all(v <= hi for v, hi in zip(values, layout.numeric_limits, strict=True)):
                return values, extras, None
    return _first_bad_field(fields, layout)


def _first_bad_field(
    fields: list[str], layout: Layout
) -> tuple[list[int] | None, list[str], str | None]:
    """Field by field, in file order: the values, or the first bad field's reason."""
    values = []
    for col in layout.numeric_cols:
        name, s = layout.names[col], fields[col].strip()
        if not s:
            return None, [], f"{name}: empty"
        if not INTEGER.fullmatch(s):
            return None, [], f"{name}: {_short_repr(fields[col])} is not an integer"
        v, hi = int(s), int(layout.limits[col])
        if not 0 <= v <= hi:
            return None, [], f"{name}: {v} is outside 0-{hi}"
        values.append(v)
    return values, [fields[c] for c in layout.extra_cols], None


def careful_chunk(chunk: bytes, first_row: int, layout: Layout) -> ParsedChunk:
    """Every row of ``chunk`` (whole lines, each ending in '\\n') through ``careful_row``."""
    ends = newlines(chunk).tolist()
    n = len(ends)
    values = np.zeros((n, layout.ncols), np.uint16)
    extras: list[list[str]] = [[] for _ in layout.extra_cols]
    ok, rejects = [], []
    numeric_cols = list(layout.numeric_cols)
    start = 0
    for r, end in enumerate(ends):
        vals, extra, reason = careful_row(chunk[start:end], layout)
        start = end + 1
        if reason is not None:
            rejects.append((r, reason))
            continue
        ok.append(r)
        values[r, numeric_cols] = vals
        for dest, s in zip(extras, extra, strict=True):
            dest.append(s)
    ok_rows = np.asarray(ok, np.int64)
    return parsed_chunk(first_row, n, values[ok_rows], ok_rows, layout, extras, rejects)
