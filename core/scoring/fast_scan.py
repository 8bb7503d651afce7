"""The hand-written vectorised tokenizer: accepts canonical rows with NumPy byte arithmetic.

A chunk is scanned in pieces of SCAN_ROWS lines. The scan accepts only canonical rows: the
right number of comma-separated fields, each pixel 1-3 ASCII digits <= 255, the label
<= 9, no quote or carriage return. Only the rows it leaves go through ``careful_row``,
which accepts them or rejects them with an exact reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from core.scoring.careful import ParsedChunk, careful_row, newlines, parsed_chunk
from core.scoring.layout import Layout

# Lines per vectorised scan: its ~10 scratch bytes per input byte stay ~45 MB per thread.
SCAN_ROWS = 2048
_COMMA, _ZERO = 44, 48
_LOCAL = threading.local()


def scan_chunk(chunk: bytes, first_row: int, layout: Layout) -> ParsedChunk:
    """parse_chunk with this thread's scratch arrays."""
    ws = getattr(_LOCAL, "ws", None)
    if ws is None:
        ws = _LOCAL.ws = _Workspace()
    return parse_chunk(chunk, first_row, layout, ws)


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
    ws.ensure(nb)
    padded = ws.padded[: nb + 3]
    # Three leading commas let the look-behinds below read separators at the chunk start.
    padded[:3] = _COMMA
    padded[3:] = np.frombuffer(chunk, np.uint8)
    fields = _Fields(padded[3:], row_ends, layout.ncols, ws)
    value = _digit_values(padded, nb, ws)
    _flag_noncanonical(chunk, fields, layout, ws)

    n, ncols = len(row_ends), layout.ncols
    fast_rows = np.flatnonzero(~fields.slow)
    if len(fast_rows) == n:
        field_ends = fields.ends.reshape(n, ncols)
    else:
        field_ends = fields.ends[fields.first_idx[fast_rows, None] + np.arange(ncols)]
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
    return _Scan(n, fast_rows, values, field_ends, fields.row_starts, row_ends)


class _Fields:
    """Where each row's fields end, and which rows have the wrong number of fields."""

    def __init__(self, buf: np.ndarray, row_ends: np.ndarray, ncols: int, ws: _Workspace) -> None:
        n, nb = len(row_ends), len(buf)
        self.row_ends = row_ends
        self.row_starts = np.empty(n, np.int64)
        self.row_starts[0] = 0
        self.row_starts[1:] = row_ends[:-1] + 1
        self.is_sep = ws.is_sep[:nb]
        np.equal(buf, _COMMA, out=self.is_sep)
        self.is_sep[row_ends] = True
        self.ends = np.flatnonzero(self.is_sep)  # byte offset of every field's terminator
        # Field counts per row; the common case (all rows right) is checked without a search.
        if len(self.ends) == n * ncols and np.array_equal(self.ends[ncols - 1 :: ncols], row_ends):
            self.term_idx = np.arange(ncols - 1, n * ncols, ncols)
        else:
            self.term_idx = np.searchsorted(self.ends, row_ends)
        self.first_idx = np.empty(n, np.int64)
        self.first_idx[0] = 0
        self.first_idx[1:] = self.term_idx[:-1] + 1
        self.slow = (self.term_idx - self.first_idx + 1) != ncols


def _digit_values(padded: np.ndarray, nb: int, ws: _Workspace) -> np.ndarray:
    """value[p] = the (up to 3-digit) number ending just before byte p of the chunk.

    Read at separators, it is the field's value. Leaves ``ws.is_digit`` set for the padded
    bytes.
    """
    digit = ws.digit[: nb + 3]
    is_digit = ws.is_digit[: nb + 3]
    np.subtract(padded, _ZERO, out=digit)  # wraps for non-digits, which land >= 10
    np.less(digit, 10, out=is_digit)
    np.multiply(digit, is_digit, out=digit)  # non-digits count as 0 in the sums below
    # The hundreds digit only counts when the tens byte is a digit, else it belongs to the
    # previous field.
    value, tmp = ws.value[:nb], ws.tmp_u8[:nb]
    np.multiply(digit[0:nb], is_digit[1 : nb + 1], out=tmp)
    np.multiply(tmp, np.uint16(100), out=value)
    np.multiply(digit[1 : nb + 1], np.uint8(10), out=tmp)
    np.add(value, tmp, out=value)
    np.add(value, digit[2 : nb + 2], out=value)
    return value


def _flag_noncanonical(chunk: bytes, fields: _Fields, layout: Layout, ws: _Workspace) -> None:
    """Mark slow the rows with a numeric field that is not 1-3 plain digits, or with a
    quote or carriage return anywhere."""
    nb, ncols = len(chunk), layout.ncols
    is_digit, is_sep, ends = ws.is_digit[: nb + 3], fields.is_sep, fields.ends
    # Bytes that make their field non-canonical: neither digit nor separator; a separator
    # right after a separator (empty field); the 4th of 4 consecutive digits (too long for
    # the 3-digit sum, though e.g. "0007" is valid - the careful path decides).
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
        row = np.searchsorted(fields.term_idx, fidx)
        # Rows with too many fields can give col >= ncols; they are slow already.
        col = np.minimum(fidx - fields.first_idx[row], ncols - 1)
        numeric = np.ones(ncols, bool)
        numeric[list(layout.extra_cols)] = False
        fields.slow[row[numeric[col]]] = True
    # Quotes change field boundaries and a lone '\r' is a line break to the csv module:
    # leave those rows to it. bytes.find is a memchr, so this is free on clean chunks.
    for special in (b'"', b"\r"):
        if chunk.find(special) >= 0:
            pos = np.flatnonzero(np.frombuffer(chunk, np.uint8) == special[0])
            fields.slow[np.searchsorted(fields.row_ends, pos)] = True


def parse_chunk(chunk: bytes, first_row: int, layout: Layout, ws: _Workspace) -> ParsedChunk:
    """Parse a chunk of whole lines (ending in '\\n') into a ParsedChunk.

    The scan runs on pieces of at most SCAN_ROWS lines so that its scratch arrays stay
    small whatever the chunk size.
    """
    row_ends = newlines(chunk)
    if len(row_ends) <= SCAN_ROWS:
        return _parse_piece(chunk, row_ends, first_row, layout, ws)
    pieces = []
    start_byte = 0
    for i in range(0, len(row_ends), SCAN_ROWS):
        ends = row_ends[i : i + SCAN_ROWS]
        stop_byte = int(ends[-1]) + 1
        piece = chunk[start_byte:stop_byte]
        pieces.append(_parse_piece(piece, ends - start_byte, first_row + i, layout, ws))
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
    chunk: bytes, row_ends: np.ndarray, first_row: int, layout: Layout, ws: _Workspace
) -> ParsedChunk:
    """Fast scan of one piece, then the careful path for the rows the scan left."""
    n = len(row_ends)
    scan = fast_scan(chunk, row_ends, layout, ws)
    if len(scan.fast_rows) == n:  # the clean path: no per-row Python at all
        extras = _slice_extras(chunk, layout, scan.field_ends, scan.row_starts)
        return parsed_chunk(first_row, n, scan.values, scan.fast_rows, layout, extras)
    return _mixed_piece(chunk, scan, first_row, layout)


def _mixed_piece(chunk: bytes, scan: _Scan, first_row: int, layout: Layout) -> ParsedChunk:
    """A piece whose scan left rows: the careful path parses them, in input order."""
    n, fast_rows, row_starts, row_ends = scan.n_rows, scan.fast_rows, scan.row_starts, scan.row_ends
    # Collect every row by file column, then pick accepted rows in order.
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
    extras = [[col[r] for r in ok_rows.tolist()] for col in all_extras]
    return parsed_chunk(first_row, n, all_vals[ok_rows], ok_rows, layout, extras, rejects)


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
