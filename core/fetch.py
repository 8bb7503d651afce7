"""Fetch the MNIST .gz files from a mirror within a deadline, and verify them.

Each raw file is downloaded within a deadline, written to a temporary file, checked
against the SHA-256 of its decompressed IDX bytes, and only then renamed into place.
Transient faults (connection errors, timeouts, a transfer too slow for its deadline,
HTTP 5xx and 429, truncated bodies) raise ``TransientFetchError``, which the download
task retries with backoff; a 403/404, a bad gzip or a checksum mismatch is a
``FetchError``, on which the next mirror is tried at once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from core.errors import PipelineError
from core.files import atomic_path, is_intact, seal
from core.settings import download_deadline
from core.storage import Location, StorageError, is_url, location, store_errors

# Every transfer has a deadline. urllib's timeout bounds each socket operation (each
# connect, each read), not a transfer: a mirror that sent a byte every few seconds was
# never abandoned. So by t seconds after it started, a transfer must have received
# DOWNLOAD_MIN_RATE * (t - DOWNLOAD_GRACE_SECONDS) bytes: a file of n bytes has
# GRACE + n / MIN_RATE seconds (208 s for MNIST's largest, 9.9 MB), and a mirror that
# sends (almost) nothing is abandoned after the grace period. With every mirror
# stalled, one file then takes 4 attempts x 3 mirrors x ~10 s + retry delays (22 s,
# at most 33 s with jitter): under 2.6 minutes, and the four files are fetched at once.
# Both numbers are settings (core.settings: MNIST_DOWNLOAD_GRACE_SECONDS, MNIST_DOWNLOAD_MIN_RATE).
# Each connect and read of the transfer thread. Past the deadline this only bounds how
# long an abandoned transfer's thread lingers; within it, a connection silent this long
# fails even if the transfer was ahead of its deadline.
SOCKET_TIMEOUT = 30
_POLL_SECONDS = 0.25  # how often the deadline is checked
_CHUNK = 1 << 20


class IngestError(PipelineError):
    """A user-facing ingestion failure; its message is one line and names the file."""


class FetchError(IngestError):
    """One mirror could not supply a valid copy of one file."""


class TransientFetchError(FetchError):
    """A fault worth retrying later: the network or the server, not the content."""


def mirror_url(mirror: str, filename: str) -> str:
    """Join a mirror base (``http(s)://``, ``file://`` or a directory) and a file name."""
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + filename
    return str(Path(mirror).expanduser() / filename)


def fetch(source: str, dest: Path) -> None:
    """Copy ``source`` (a URL or a local path) to ``dest``, raising FetchError on failure."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        _fetch_http(source, dest)
        return
    if scheme not in ("", "file") and is_url(source):
        _fetch_store(source, dest)
        return
    path = (
        Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
        if scheme == "file"
        else Path(source)
    )
    if not path.is_file():
        raise FetchError(f"{source}: no such file")
    shutil.copyfile(path, dest)


def _fetch_store(url: str, dest: Path) -> None:
    """Copy an object-store file (``s3://…``) to the local ``dest``."""
    source = location(url)
    try:
        with store_errors(source, "download"):
            source.fs.get_file(source.path, os.fspath(dest))
    except FileNotFoundError:
        raise FetchError(f"{url}: no such file") from None
    except StorageError as err:  # denied, unreachable: the next mirror may do better
        raise TransientFetchError(str(err)) from None


def _fetch_http(url: str, dest: Path) -> None:
    grace, min_rate = download_deadline()
    transfer = _Transfer(url)
    while not transfer.done.wait(_POLL_SECONDS):
        elapsed = time.monotonic() - transfer.started
        if transfer.received < min_rate * (elapsed - grace):
            transfer.abandoned.set()
            raise TransientFetchError(
                f"{url}: too slow, {transfer.received} bytes in {elapsed:.0f} s (a download "
                f"must average {min_rate:g} bytes/s after its first {grace:g} s)"
            )
    if transfer.error is not None:
        raise _fetch_error(url, transfer.error)
    if transfer.expected is not None and transfer.received != int(transfer.expected):
        raise TransientFetchError(
            f"{url}: truncated body ({transfer.received} of {transfer.expected} bytes)"
        )
    Path(dest).write_bytes(b"".join(transfer.chunks))


class _Transfer:
    """One HTTP GET, run in a daemon thread so that the caller can walk away from it.

    A thread blocked in a connect or a read cannot be interrupted, so the caller watches
    the deadline and, past it, abandons the transfer: the thread stops at its next read
    (or socket timeout) and is never waited for. The body is kept in memory (MNIST's
    largest file is ~10 MB) and written by the caller, so an abandoned transfer never
    touches a file.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.chunks: list[bytes] = []
        self.received = 0
        self.expected: str | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        self.abandoned = threading.Event()
        self.started = time.monotonic()
        threading.Thread(target=self._run, name=f"GET {url}", daemon=True).start()

    def _run(self) -> None:
        request = urllib.request.Request(self.url, headers={"User-Agent": "mnist-pipeline"})
        try:
            with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT) as response:
                self.expected = response.headers.get("Content-Length")
                # read1 returns what has arrived (one socket read), so `received` keeps
                # up with the transfer; read() would wait for a whole chunk.
                while not self.abandoned.is_set() and (chunk := response.read1(_CHUNK)):
                    self.chunks.append(chunk)
                    self.received += len(chunk)
        except Exception as err:  # handed to the caller, which owns the reporting
            self.error = err
        finally:
            self.done.set()


def _fetch_error(url: str, err: Exception) -> Exception:
    """The FetchError for what a transfer failed with; anything else is a bug, as is."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code >= 500 or err.code == 429:
            return TransientFetchError(f"{url}: HTTP {err.code}")
        return FetchError(f"{url}: HTTP {err.code}")
    if isinstance(err, OSError | http.client.HTTPException):  # includes timeouts
        return TransientFetchError(f"{url}: {getattr(err, 'reason', err)}")
    return err


def decompressed_idx(gz_path: Location) -> bytes:
    """The decompressed IDX content of ``gz_path``; FetchError if it is not valid gzip."""
    # One call over the whole file, not a stream of small reads: zlib then releases the
    # GIL once, where a read loop contends for it thousands of times with the other
    # downloads and conversions running beside it (that made the 47 MB train images 4x
    # slower inside the flow than alone).
    try:
        with store_errors(gz_path, "read"):
            data = gz_path.read_bytes()
        return gzip.decompress(data)
    except EOFError:
        # The gzip stream stops early: a body cut off in transit, worth fetching again.
        raise TransientFetchError(f"{gz_path.name}: truncated gzip stream") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise FetchError(f"{gz_path.name}: not a valid gzip file ({err})") from None


def is_verified(gz_path: Location, sha256: str) -> bool:
    """True if ``gz_path`` is intact and decompresses to IDX bytes with SHA-256 ``sha256``."""
    if not is_intact(gz_path):
        return False
    try:
        data = decompressed_idx(gz_path)
    except FetchError:
        return False
    return hashlib.sha256(data).hexdigest() == sha256


def fetch_verified(source: str, dest: Location, expected_sha256: str) -> None:
    """Copy ``source`` to ``dest`` only if its IDX content has SHA-256 ``expected_sha256``."""
    with atomic_path(dest) as tmp:
        fetch(source, tmp)
        actual = hashlib.sha256(decompressed_idx(tmp)).hexdigest()
        if actual != expected_sha256:
            raise FetchError(
                f"{source}: checksum mismatch "
                f"(IDX sha256 {actual[:12]}…, expected {expected_sha256[:12]}…)"
            )
    seal(dest)


def fetch_from_mirrors(
    filename: str, sha256: str, mirrors: tuple[str, ...], dest: Location, logger: logging.Logger
) -> str:
    """Fetch ``filename`` to ``dest`` from the first mirror with a verified copy; return
    that mirror. Each mirror's failure is logged as a warning; when all fail, one
    FetchError names every reason (a TransientFetchError if any was transient)."""
    failures: list[FetchError] = []
    for mirror in mirrors:
        try:
            fetch_verified(mirror_url(mirror, filename), dest, sha256)
        except FetchError as err:
            logger.warning("%s", err)
            failures.append(err)
            continue
        return mirror
    summary = f"{filename}: every mirror failed: " + "; ".join(str(f) for f in failures)
    if any(isinstance(f, TransientFetchError) for f in failures):
        raise TransientFetchError(summary)
    raise FetchError(summary)
