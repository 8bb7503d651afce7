"""Stream a pixel CSV as parsed chunks of rows, with memory bounded whatever the file size.

Rows and lines: every ``\\n``-terminated physical line after the header is one row, so a
row's ImageId and line number always differ by the header's one line. ``\\r\\n`` endings are
accepted; a final newline does not start a row, but a blank line anywhere else is a row
(rejected as ``empty row``). A line over MAX_LINE_BYTES is one rejected row too, and is
skipped as it is read, never held.

The file is read in 1 MiB blocks and cut into chunks of ``chunk_rows`` whole lines, the
parse unit. Chunks are parsed on a small thread pool (``parse``, NumPy's byte arithmetic
in ``core.scoring.fast_scan``, releases the GIL, so two workers use two cores); at most
``workers + 1`` chunks are in flight.
"""

from __future__ import annotations

import gzip
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from core.scoring.careful import ParsedChunk, newlines
from core.scoring.fast_scan import scan_chunk
from core.scoring.layout import InputFileError, Layout, layout_from_first_line, open_binary
from core.storage import Location

# A Kaggle row is at most ~3.2 kB; anything this long is not a pixel CSV, and the cap keeps
# memory bounded on binary or newline-free input.
MAX_LINE_BYTES = 1 << 20
READ_BYTES = 1 << 20

ChunkParser = Callable[[bytes, int, Layout], ParsedChunk]


def long_line_reason(length: int) -> str:
    """The reject reason of a line over MAX_LINE_BYTES (no comma: it stays unquoted)."""
    return f"line is {length} bytes long; the limit is {MAX_LINE_BYTES} (1 MiB)"


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
    found in line 1; iteration raises it for ones found later (corrupt gzip, binary data).
    ``parse`` turns one chunk into a ParsedChunk (tests swap in ``careful_chunk``).
    """

    parse: ChunkParser = staticmethod(scan_chunk)

    def __init__(self, path: Location, chunk_rows: int = 2048, workers: int = 2) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path = path
        self.chunk_rows = chunk_rows
        self.workers = max(1, workers)
        self._f = open_binary(self.path)
        try:
            raw_first = self._readline(1)
            if not raw_first:
                raise InputFileError(self.path, "is empty")
            first = raw_first.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM from Excel exports
            self.layout = layout_from_first_line(self.path, first)
        except BaseException:
            self.close()
            raise
        # A headerless file's line 1 is its first data row.
        self._pushback = None if self.layout.has_header else first

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

    def raw_chunks(self) -> Iterator[tuple[bytes, int, list[tuple[int, int]]]]:
        """Yield (chunk, n_lines, long_lines): up to chunk_rows whole lines, ending in '\\n'.

        Reads fixed-size blocks and cuts at the chunk_rows-th newline (found with NumPy,
        which releases the GIL), so the reading thread does little Python per row. A line
        over MAX_LINE_BYTES is skipped, never held: an empty line stands in for it, and
        ``long_lines`` gives (its row in the chunk, its length in bytes).
        """
        pending = _Pending()
        lines_before = self.layout.header_lines  # physical lines emitted
        if self._pushback is not None:
            pending.add(self._pushback, newlines(self._pushback))
            self._pushback = None
        eof = False
        while True:
            while pending.n_nl < self.chunk_rows and not eof:
                data = self._read(self._f.read, READ_BYTES)
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
            nl = newlines(data)
            if pending.tail + (int(nl[0]) if len(nl) else len(data)) <= MAX_LINE_BYTES:
                pending.add(data, nl)
                return
            if b"\0" in data:
                line_no = lines_before + pending.n_nl + 1
                raise InputFileError(self.path, f"is binary, not a text CSV (line {line_no})")
            pending.skipping = pending.drop_tail()  # then this block again, skipping

    def chunks(self) -> Iterator[ParsedChunk]:
        """Parsed chunks in file order; parsing runs on a small thread pool.

        At most ``workers + 1`` chunks are in flight, which keeps memory bounded.
        """

        def work(chunk: bytes, first_row: int, long_lines: list[tuple[int, int]]) -> ParsedChunk:
            parsed = self.parse(chunk, first_row, self.layout)
            if long_lines:  # their stand-ins, empty lines, were rejected: say why
                length = dict(long_lines)
                parsed.rejects = [
                    (r, long_line_reason(length[r]) if r in length else why)
                    for r, why in parsed.rejects
                ]
            return parsed

        pending: deque[Future[ParsedChunk]] = deque()
        first_row = 0
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
