"""Stream a pixel CSV (Kaggle "Digit Recognizer" style) in bounded chunks, with row validation.

What is accepted:

* Kaggle ``test.csv`` (header ``pixel0..pixel783``) and ``train.csv`` (``label`` + pixels);
  with a header, pixel columns are matched by name in any order and other columns are
  carried through verbatim as strings.
* Headerless files with 784 fields (pixels) or 785 (label first), decided by line 1.
* Plain or gzip-compressed (detected by magic bytes, not by the name).

Rows and lines: every ``\\n``-terminated physical line after the header is one row, so a
row's ImageId and line number always differ by the header's one line. ``\\r\\n`` endings are
accepted; a final newline does not start a row, but a blank line anywhere else is a row
rejected as ``empty row``. Quoted fields are understood within a line; a quoted field
holding a newline is not supported and yields rejected rows: a line with an odd number of
quote characters is rejected as ``unbalanced quotes``.

Speed: the file is read in 1 MiB blocks and cut into chunks of whole lines. Each chunk is
scanned (in pieces of SCAN_ROWS lines) with vectorised NumPy byte arithmetic that accepts
only canonical rows: the right number of comma-separated fields, each pixel 1-3 ASCII
digits <= 255, the label <= 9, no quote or carriage return. Only the rows it leaves are
re-parsed one at a time with the ``csv`` module (``careful_row``), which either accepts them
(``" 7"``, ``007``, a quoted ``"7"``) or rejects them with an exact reason. So clean rows
never run per-row Python, and dirty rows still get exact reasons and line numbers. Chunks
are parsed on a small thread pool: NumPy releases the GIL, so two workers use two cores.
Memory is bounded by chunk size x chunks in flight, whatever the file size.

Byte ranges: a plain (uncompressed) file can also be read one slice at a time, so that
several processes score one big file (``core.scoring.chunks`` plans the slices). A slice starts
and stops on line boundaries and is told how many data rows come before it, so ImageIds,
line numbers and reject reasons are the same as when the whole file is read at once.
"""

from __future__ import annotations

import csv
import gzip
import re
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np

N_PIXELS = 784
PIXEL_NAMES = tuple(f"pixel{j}" for j in range(N_PIXELS))
LABEL_NAME = "label"
# A Kaggle row is at most ~3.2 kB; anything this long is not a pixel CSV, and the cap keeps
# memory bounded on binary or newline-free input.
MAX_LINE_BYTES = 1 << 20
READ_BYTES = 1 << 20
# Lines per vectorised scan: its ~10 scratch bytes per input byte stay ~45 MB per thread.
SCAN_ROWS = 2048

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = {
    b"PK\x03\x04": "a zip archive",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PAR1": "a Parquet file",
}
# Names the output uses; a carried-through input column may not shadow them.
OUTPUT_COLUMNS = ("ImageId", "Label", "Confidence", "TrueLabel")
_INTEGER = re.compile(r"[+-]?[0-9]+")
UNBALANCED_QUOTES = "unbalanced quotes (quoted newlines are not supported)"
_COMMA, _NEWLINE, _ZERO = 44, 10, 48


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


# --------------------------------------------------------------------------- opening


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes, transparently gunzipping; file-level errors raised."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a directory, not a file") from None
    except OSError as e:
        raise InputFileError(path, f"cannot be opened ({e.strerror})") from None
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # closing it leaves raw open: see close
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
    non_ints = sum(1 for f in fields if f.strip() and not _INTEGER.fullmatch(f.strip()))
    return non_ints * 2 > len(fields)


def layout_from_first_line(path: Path, line: bytes) -> Layout:
    """Decide the file's Layout from its first line, or raise InputFileError."""
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
    for i in extra_cols:
        if names[i] in OUTPUT_COLUMNS:
            raise InputFileError(path, f"column {names[i]!r} clashes with an output column")
    return Layout(tuple(names), True, tuple(index[p] for p in PIXEL_NAMES), label_col, extra_cols)


# --------------------------------------------------------------------------- careful path


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
    values = []
    for col in layout.numeric_cols:
        name, s = layout.names[col], fields[col].strip()
        if not s:
            return None, [], f"{name}: empty"
        if not _INTEGER.fullmatch(s):
            return None, [], f"{name}: {_short_repr(fields[col])} is not an integer"
        v, hi = int(s), int(layout.limits[col])
        if not 0 <= v <= hi:
            return None, [], f"{name}: {v} is outside 0-{hi}"
        values.append(v)
    return values, extras, None


# --------------------------------------------------------------------------- fast path


class _Workspace:
    """Per-thread scratch arrays, reused across pieces: fresh allocations page-fault."""

    def __init__(self) -> None:
        self.cap = -1

    def ensure(self, nbytes: int) -> None:
        """Make every array hold at least ``nbytes`` (+3 padding) bytes."""
        if nbytes <= self.cap:
            return
        cap = self.cap = int(nbytes * 1.25)
        self.padded = np.empty(cap + 3, np.uint8)
        self.digit = np.empty(cap + 3, np.uint8)  # byte - '0', then zeroed off digits
        self.is_digit = np.empty(cap + 3, bool)
        self.is_sep = np.empty(cap, bool)
        self.flag = np.empty(cap, bool)
        self.tmp_bool = np.empty(cap, bool)
        self.tmp_u8 = np.empty(cap, np.uint8)
        self.value = np.empty(cap, np.uint16)


@dataclass
class _Scan:
    """What the vectorised scan of a chunk found."""

    n_rows: int
    fast_rows: np.ndarray  # int64 indices of rows accepted by the scan
    values: np.ndarray  # uint16 (len(fast_rows), ncols); extras' entries are meaningless
    field_ends: np.ndarray  # int64 (len(fast_rows), ncols): byte offset of each field's end
    row_starts: np.ndarray  # int64 (n_rows,): byte offset where each row starts
    row_ends: np.ndarray  # int64 (n_rows,): byte offset of each row's '\n'


def fast_scan(chunk: bytes, row_ends: np.ndarray, layout: Layout, ws: _Workspace) -> _Scan:
    """Vectorised scan of ``chunk`` (whole lines, ends with '\\n'); accepts canonical rows.

    ``row_ends`` are the offsets of the chunk's newlines.
    """
    nb = len(chunk)
    ncols = layout.ncols
    ws.ensure(nb)
    padded = ws.padded[: nb + 3]
    # Three leading commas let the look-behinds below read separators at the chunk start.
    padded[:3] = _COMMA
    padded[3:] = np.frombuffer(chunk, np.uint8)
    buf = padded[3:]

    n = len(row_ends)
    row_starts = np.empty(n, np.int64)
    row_starts[0] = 0
    row_starts[1:] = row_ends[:-1] + 1
    is_sep = ws.is_sep[:nb]
    np.equal(buf, _COMMA, out=is_sep)
    is_sep[row_ends] = True
    ends = np.flatnonzero(is_sep)  # byte offset of every field's terminator

    # Field counts per row; the common case (all rows right) is checked without a search.
    if len(ends) == n * ncols and np.array_equal(ends[ncols - 1 :: ncols], row_ends):
        term_idx = np.arange(ncols - 1, n * ncols, ncols)
    else:
        term_idx = np.searchsorted(ends, row_ends)
    first_idx = np.empty(n, np.int64)
    first_idx[0] = 0
    first_idx[1:] = term_idx[:-1] + 1
    slow = (term_idx - first_idx + 1) != ncols

    digit = ws.digit[: nb + 3]
    is_digit = ws.is_digit[: nb + 3]
    np.subtract(padded, _ZERO, out=digit)  # wraps for non-digits, which land >= 10
    np.less(digit, 10, out=is_digit)
    np.multiply(digit, is_digit, out=digit)  # non-digits count as 0 in the sums below

    # value[p] = the (up to 3-digit) number ending just before byte p; read at separators.
    # The hundreds digit only counts when the tens byte is a digit, else it belongs to the
    # previous field.
    value, tmp = ws.value[:nb], ws.tmp_u8[:nb]
    np.multiply(digit[0:nb], is_digit[1 : nb + 1], out=tmp)
    np.multiply(tmp, np.uint16(100), out=value)
    np.multiply(digit[1 : nb + 1], np.uint8(10), out=tmp)
    np.add(value, tmp, out=value)
    np.add(value, digit[2 : nb + 2], out=value)

    # Bytes that make their field non-canonical: neither digit nor separator; a separator
    # right after a separator (empty field); the 4th of 4 consecutive digits (too long for
    # the 3-digit sum above, though e.g. "0007" is valid - the careful path decides).
    flag, tb = ws.flag[:nb], ws.tmp_bool[:nb]
    if np.count_nonzero(is_digit[3:]) + len(ends) == nb:
        flag[:] = False  # every byte is a digit or a separator: counting is cheaper
    else:
        np.logical_or(is_digit[3:], is_sep, out=flag)
        np.logical_not(flag, out=flag)
    tb[0] = is_sep[0]
    np.logical_and(is_sep[1:], is_sep[:-1], out=tb[1:])
    np.logical_or(flag, tb, out=flag)
    np.logical_and(is_digit[3:], is_digit[2 : nb + 2], out=tb)
    np.logical_and(tb, is_digit[1 : nb + 1], out=tb)
    np.logical_and(tb, is_digit[0:nb], out=tb)
    np.logical_or(flag, tb, out=flag)
    if flag.any():
        pos = np.flatnonzero(flag)
        fidx = np.searchsorted(ends, pos)  # the field each flagged byte belongs to
        row = np.searchsorted(term_idx, fidx)
        # Rows with too many fields can give col >= ncols; they are slow already.
        col = np.minimum(fidx - first_idx[row], ncols - 1)
        numeric = np.ones(ncols, bool)
        numeric[list(layout.extra_cols)] = False
        slow[row[numeric[col]]] = True
    # Quotes change field boundaries and a lone '\r' is a line break to the csv module:
    # leave those rows to it. bytes.find is a memchr, so this is free on clean chunks.
    for special in (b'"', b"\r"):
        if chunk.find(special) >= 0:
            pos = np.flatnonzero(buf == special[0])
            slow[np.searchsorted(row_ends, pos)] = True

    fast_rows = np.flatnonzero(~slow)
    if len(fast_rows) == n:
        field_ends = ends.reshape(n, ncols)
    else:
        field_ends = ends[first_idx[fast_rows, None] + np.arange(ncols)]
    values = np.take(value, field_ends)
    # Range checks (pixels <= 255, label <= 9); rows over them go to the careful path. Two
    # cheap whole-array maxima settle the common case without a row-wise comparison.
    over = None
    if layout.extra_cols or values.max(initial=0) > 255:
        over = np.any(values > layout.limits, axis=1)
    elif layout.label_col is not None:
        over = values[:, layout.label_col] > 9
    if over is not None and over.any():
        keep = ~over
        fast_rows, values, field_ends = fast_rows[keep], values[keep], field_ends[keep]
    return _Scan(n, fast_rows, values, field_ends, row_starts, row_ends)


def parse_chunk(
    chunk: bytes, first_row: int, layout: Layout, ws: _Workspace | None, fast: bool = True
) -> ParsedChunk:
    """Parse a chunk of whole lines (ending in '\\n') into a ParsedChunk.

    The scan runs on pieces of at most SCAN_ROWS lines so that its scratch arrays stay
    small whatever the chunk size. ``fast=False`` sends every row down the careful path
    (tests use it as an oracle).
    """
    newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == _NEWLINE)
    if len(newlines) <= SCAN_ROWS:
        return _parse_piece(chunk, newlines, first_row, layout, ws, fast)
    pieces = []
    start_byte = 0
    for i in range(0, len(newlines), SCAN_ROWS):
        ends = newlines[i : i + SCAN_ROWS]
        stop_byte = int(ends[-1]) + 1
        piece = chunk[start_byte:stop_byte]
        pieces.append(_parse_piece(piece, ends - start_byte, first_row + i, layout, ws, fast))
        start_byte = stop_byte
    return _concat(pieces, first_row)


def _concat(pieces: list[ParsedChunk], first_row: int) -> ParsedChunk:
    """One ParsedChunk from consecutive pieces."""
    offsets = [p.first_row - first_row for p in pieces]
    labels = None
    if pieces[0].labels is not None:
        labels = np.concatenate([p.labels for p in pieces])  # type: ignore[misc]
    return ParsedChunk(
        first_row,
        sum(p.n_rows for p in pieces),
        np.concatenate([p.pixels for p in pieces]),
        np.concatenate([p.ok_rows + off for p, off in zip(pieces, offsets, strict=True)]),
        labels,
        [sum(cols, []) for cols in zip(*(p.extras for p in pieces), strict=True)],
        [(r + off, why) for p, off in zip(pieces, offsets, strict=True) for r, why in p.rejects],
    )


def _parse_piece(
    chunk: bytes,
    row_ends: np.ndarray,
    first_row: int,
    layout: Layout,
    ws: _Workspace | None,
    fast: bool,
) -> ParsedChunk:
    """Fast scan of one piece, then the careful path for the rows the scan left."""
    pix_idx = layout.pixel_index
    n = len(row_ends)
    if fast:
        assert ws is not None
        scan = fast_scan(chunk, row_ends, layout, ws)
        fast_rows, row_starts = scan.fast_rows, scan.row_starts
        if len(fast_rows) == n:  # the clean path: no per-row Python at all
            labels = None
            if layout.label_col is not None:
                labels = scan.values[:, layout.label_col].astype(np.uint8)
            return ParsedChunk(
                first_row,
                n,
                scan.values[:, pix_idx].astype(np.uint8),
                fast_rows,
                labels,
                _slice_extras(chunk, layout, scan.field_ends, row_starts),
            )
    else:
        fast_rows = np.empty(0, np.int64)
        row_starts = np.concatenate([[0], row_ends[:-1] + 1]).astype(np.int64)

    # Mixed piece: collect every row by file column, then pick accepted rows in order.
    all_vals = np.zeros((n, layout.ncols), np.uint16)
    all_extras: list[list[str]] = [[""] * n for _ in layout.extra_cols]
    ok = np.zeros(n, bool)
    if len(fast_rows):
        all_vals[fast_rows] = scan.values
        ok[fast_rows] = True
        sliced = _slice_extras(chunk, layout, scan.field_ends, row_starts[fast_rows])
        for dest, col in zip(all_extras, sliced, strict=True):
            for r, s in zip(fast_rows.tolist(), col, strict=True):
                dest[r] = s
    rejects: list[tuple[int, str]] = []
    numeric_cols = list(layout.numeric_cols)
    for r in np.flatnonzero(~ok).tolist():
        vals, extra, reason = careful_row(chunk[row_starts[r] : row_ends[r]], layout)
        if reason is not None:
            rejects.append((r, reason))
            continue
        ok[r] = True
        all_vals[r, numeric_cols] = vals
        for dest, s in zip(all_extras, extra, strict=True):
            dest[r] = s
    ok_rows = np.flatnonzero(ok)
    kept = all_vals[ok_rows]
    labels = None
    if layout.label_col is not None:
        labels = kept[:, layout.label_col].astype(np.uint8)
    extras = [[col[r] for r in ok_rows.tolist()] for col in all_extras]
    return ParsedChunk(
        first_row, n, kept[:, pix_idx].astype(np.uint8), ok_rows, labels, extras, rejects
    )


def _slice_extras(
    chunk: bytes, layout: Layout, field_ends: np.ndarray, row_starts: np.ndarray
) -> list[list[str]]:
    """Carried-through columns' raw text; ``field_ends`` and ``row_starts`` align by row."""
    out = []
    for c in layout.extra_cols:
        stop = field_ends[:, c]
        start = field_ends[:, c - 1] + 1 if c > 0 else row_starts
        out.append(
            [
                chunk[a:b].decode("utf-8", errors="replace")
                for a, b in zip(start.tolist(), stop.tolist(), strict=True)
            ]
        )
    return out


# --------------------------------------------------------------------------- the reader


def long_line_reason(length: int) -> str:
    """The reject reason of a line over MAX_LINE_BYTES (no comma: it stays unquoted)."""
    return f"line is {length} bytes long; the limit is {MAX_LINE_BYTES} (1 MiB)"


def _newlines(data: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, np.uint8) == _NEWLINE)


@dataclass
class _Pending:
    """Bytes read but not yet yielded: whole lines, then ``tail`` bytes of an unfinished one."""

    parts: list[bytes] = field(default_factory=list)
    nls: list[np.ndarray] = field(default_factory=list)  # newline offsets from the start
    size: int = 0
    n_nl: int = 0
    tail: int = 0
    long_lines: list[tuple[int, int]] = field(default_factory=list)  # (row, bytes)
    skipping: int | None = None  # bytes so far of an over-long line being skipped

    def add(self, data: bytes, nl: np.ndarray) -> None:
        """Append ``data`` whose newline offsets are ``nl``."""
        self.parts.append(data)
        self.nls.append(nl + self.size)
        self.size += len(data)
        self.n_nl += len(nl)
        self.tail = len(data) - 1 - int(nl[-1]) if len(nl) else self.tail + len(data)

    def drop_tail(self) -> int:
        """Forget the unfinished line (it is too long); return how many bytes it had."""
        dropped, keep = self.tail, self.size - self.tail
        nls = np.concatenate(self.nls) if self.nls else np.empty(0, np.int64)
        self.parts, self.nls = [b"".join(self.parts)[:keep]], [nls]
        self.size, self.tail = keep, 0
        return dropped

    def add_long_line(self, length: int) -> None:
        """An empty line in place of a skipped line of ``length`` bytes."""
        self.long_lines.append((self.n_nl, length))
        self.skipping = None
        self.add(b"\n", np.zeros(1, np.int64))

    def take(self, max_lines: int) -> tuple[bytes, int, list[tuple[int, int]]]:
        """Remove and return (up to ``max_lines`` whole lines, their count, their long
        lines); with fewer whole lines pending, all of it, an unfinished line completed."""
        buf = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        nls = self.nls[0] if len(self.nls) == 1 else np.concatenate(self.nls)
        if self.n_nl >= max_lines:
            take, cut = max_lines, int(nls[max_lines - 1]) + 1
        else:  # end of file: the rest, including a last line without a newline
            take, cut = self.n_nl + (1 if self.tail else 0), self.size
        chunk = buf[:cut]
        if self.tail and cut == self.size:
            chunk += b"\n"
            self.tail = 0
        long_lines = [(r, n) for r, n in self.long_lines if r < take]
        self.long_lines = [(r - take, n) for r, n in self.long_lines if r >= take]
        rest = buf[cut:]
        self.parts, self.nls = ([rest], [nls[take:] - cut]) if rest else ([], [])
        self.size, self.n_nl = len(rest), max(0, self.n_nl - take)
        return chunk, take, long_lines


class PixelCsvReader:
    """Open a pixel CSV, work out its Layout, and iterate it as ParsedChunks.

    Use as a context manager. Construction raises InputFileError for file-level problems
    found in line 1; iteration raises it for ones found later (corrupt gzip, a huge line).
    """

    def __init__(
        self,
        path: Path,
        chunk_rows: int = 2048,
        workers: int = 2,
        byte_range: tuple[int, int] | None = None,
        first_row: int = 0,
    ) -> None:
        """``byte_range=(start, stop)`` reads only those bytes of a plain file; both must be
        line boundaries at or after ``data_start``, and ``first_row`` is the number of data
        rows before ``start``. Line 1 is still read, for the layout."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.workers = max(1, workers)
        self.first_row = first_row
        self.fast = True  # tests set False to run every row through careful_row
        self._f = _open_binary(self.path)
        self._remaining: int | None = None  # bytes left in the byte range, if there is one
        try:
            raw_first = self._readline(1)
            if not raw_first:
                raise InputFileError(self.path, "is empty")
            first = raw_first.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM from Excel exports
            self.layout = layout_from_first_line(self.path, first)
            # Offset of the first data row: after the header, else after any BOM.
            self.data_start = (
                len(raw_first) if self.layout.has_header else len(raw_first) - len(first)
            )
            self.compressed = isinstance(self._f, gzip.GzipFile)
            if byte_range is not None:
                self._seek_range(*byte_range)
        except BaseException:
            self.close()
            raise
        # A headerless file's line 1 is its first data row (unless a byte range starts later).
        self._pushback = None if self.layout.has_header or byte_range is not None else first

    def _seek_range(self, start: int, stop: int) -> None:
        if self.compressed:
            raise ValueError(f"{self.path}: byte ranges need an uncompressed file")
        if not self.data_start <= start <= stop:
            raise ValueError(
                f"byte range {start}-{stop} of {self.path} must lie after byte {self.data_start}"
            )
        self._f.seek(start)
        self._remaining = stop - start

    def close(self) -> None:
        """Close the file (and the raw file under a gzip stream)."""
        f = self._f
        inner = getattr(f, "fileobj", None)
        f.close()
        if inner is not None:
            inner.close()

    def __enter__(self) -> PixelCsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self, line_no: int) -> bytes:
        line = self._read(self._f.readline, MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            self._too_long(line, line_no)
        return line

    def _read(self, method: Callable[[int], bytes], size: int) -> bytes:
        try:
            return method(size)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise InputFileError(self.path, f"corrupt or truncated gzip data ({e})") from None

    def _too_long(self, data: bytes, line_no: int) -> None:
        if b"\0" in data:
            raise InputFileError(self.path, f"is binary, not a text CSV (line {line_no})")
        raise InputFileError(self.path, f"line {line_no} is longer than 1 MiB")

    def _read_block(self) -> bytes:
        """The next block of at most READ_BYTES, not reading past the byte range's end."""
        if self._remaining is None:
            return self._read(self._f.read, READ_BYTES)
        data = self._read(self._f.read, min(READ_BYTES, self._remaining))
        self._remaining -= len(data)
        return data

    def raw_chunks(self) -> Iterator[tuple[bytes, int, list[tuple[int, int]]]]:
        """Yield (chunk, n_lines, long_lines): up to chunk_rows whole lines, ending in '\\n'.

        Reads fixed-size blocks and cuts at the chunk_rows-th newline (found with NumPy,
        which releases the GIL), so the reading thread does little Python per row. A line
        over MAX_LINE_BYTES is skipped, never held: an empty line stands in for it, and
        ``long_lines`` gives (its row in the chunk, its length in bytes).
        """
        pending = _Pending()
        lines_before = self.layout.header_lines + self.first_row  # physical lines emitted
        if self._pushback is not None:
            pending.add(self._pushback, _newlines(self._pushback))
            self._pushback = None
        eof = False
        while True:
            while pending.n_nl < self.chunk_rows and not eof:
                data = self._read_block()
                if data:
                    self._add_block(pending, data, lines_before)
                    continue
                eof = True
                if pending.skipping is not None:  # the last line, without a newline
                    pending.add_long_line(pending.skipping)
            if pending.size == 0:
                return
            chunk, take, long_lines = pending.take(self.chunk_rows)
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n")
            yield chunk, take, long_lines
            lines_before += take
            if pending.size == 0 and eof:
                return

    def _add_block(self, pending: _Pending, data: bytes, lines_before: int) -> None:
        """Add a block to ``pending``, skipping the bytes of any line over MAX_LINE_BYTES."""
        while data:
            if pending.skipping is not None:
                end = data.find(b"\n")
                if end < 0:
                    pending.skipping += len(data)
                    return
                pending.add_long_line(pending.skipping + end)
                data = data[end + 1 :]
                continue
            nl = _newlines(data)
            if pending.tail + (int(nl[0]) if len(nl) else len(data)) <= MAX_LINE_BYTES:
                pending.add(data, nl)
                return
            if b"\0" in data:
                line_no = lines_before + pending.n_nl + 1
                raise InputFileError(self.path, f"is binary, not a text CSV (line {line_no})")
            pending.skipping = pending.drop_tail()  # then this block again, skipping

    def chunks(self) -> Iterator[ParsedChunk]:
        """Parsed chunks in file order; parsing runs on a small thread pool.

        NumPy releases the GIL in the scan, so two workers use both cores; at most
        ``workers + 1`` chunks are in flight, which keeps memory bounded.
        """
        local = threading.local()

        def work(chunk: bytes, first_row: int, long_lines: list[tuple[int, int]]) -> ParsedChunk:
            ws = getattr(local, "ws", None)
            if ws is None:
                ws = local.ws = _Workspace()
            parsed = parse_chunk(chunk, first_row, self.layout, ws, fast=self.fast)
            if long_lines:  # their stand-ins, empty lines, were rejected: say why
                length = dict(long_lines)
                parsed.rejects = [
                    (r, long_line_reason(length[r]) if r in length else why)
                    for r, why in parsed.rejects
                ]
            return parsed

        pending: deque[Future[ParsedChunk]] = deque()
        first_row = self.first_row
        with ThreadPoolExecutor(self.workers, thread_name_prefix="csv-parse") as pool:
            try:
                for chunk, n_lines, long_lines in self.raw_chunks():
                    pending.append(pool.submit(work, chunk, first_row, long_lines))
                    first_row += n_lines
                    if len(pending) > self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()
