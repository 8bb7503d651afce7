"""Ingestion tasks: fetch the MNIST .gz files from a mirror, verify them, convert to Parquet.

Each raw file is downloaded within a deadline, written to a temporary file, checked
against the SHA-256 of its decompressed IDX bytes, and only then renamed into
``data/raw/``. Transient faults (connection errors, timeouts, a transfer too slow for its
deadline, HTTP 5xx and 429, truncated bodies) fail the task with ``TransientFetchError``
so that Prefect retries it with backoff; a 403/404, a bad gzip or a checksum mismatch
moves on to the next mirror at once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from core.dataset import write_split
from core.errors import PipelineError
from core.files import atomic_path, file_identity, is_intact, seal
from core.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxFormatError, parse_idx
from core.settings import SettingsError
from tasks import INGEST

# Every transfer has a deadline. urllib's timeout bounds each socket operation (each
# connect, each read), not a transfer: a mirror that sent a byte every few seconds was
# never abandoned. So by t seconds after it started, a transfer must have received
# DOWNLOAD_MIN_RATE * (t - DOWNLOAD_GRACE_SECONDS) bytes: a file of n bytes has
# GRACE + n / MIN_RATE seconds (208 s for MNIST's largest, 9.9 MB), and a mirror that
# sends (almost) nothing is abandoned after the grace period. With every mirror
# stalled, one file then takes 4 attempts x 3 mirrors x ~10 s + retry delays (22 s,
# at most 33 s with jitter): under 2.6 minutes, and the four files are fetched at once.
DOWNLOAD_GRACE_SECONDS = 10.0
DOWNLOAD_MIN_RATE = 50_000  # bytes per second, averaged over the transfer after the grace
ENV_DOWNLOAD_GRACE = "MNIST_DOWNLOAD_GRACE_SECONDS"
ENV_DOWNLOAD_MIN_RATE = "MNIST_DOWNLOAD_MIN_RATE"
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
    path = (
        Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
        if scheme == "file"
        else Path(source)
    )
    if not path.is_file():
        raise FetchError(f"{source}: no such file")
    shutil.copyfile(path, dest)


def download_deadline() -> tuple[float, float]:
    """(grace seconds, minimum average bytes per second) of each HTTP transfer: the
    defaults, or ``MNIST_DOWNLOAD_GRACE_SECONDS`` and ``MNIST_DOWNLOAD_MIN_RATE``."""
    return (
        _positive_env(ENV_DOWNLOAD_GRACE, DOWNLOAD_GRACE_SECONDS),
        _positive_env(ENV_DOWNLOAD_MIN_RATE, DOWNLOAD_MIN_RATE),
    )


def _positive_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SettingsError(f"{name}={text!r}: expected a positive number")
    return value


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


def decompressed_idx(gz_path: Path) -> bytes:
    """The decompressed IDX content of ``gz_path``; FetchError if it is not valid gzip."""
    # One call over the whole file, not a stream of small reads: zlib then releases the
    # GIL once, where a read loop contends for it thousands of times with the other
    # downloads and conversions running beside it (that made the 47 MB train images 4x
    # slower inside the flow than alone).
    try:
        return gzip.decompress(Path(gz_path).read_bytes())
    except EOFError:
        # The gzip stream stops early: a body cut off in transit, worth fetching again.
        raise TransientFetchError(f"{gz_path.name}: truncated gzip stream") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise FetchError(f"{gz_path.name}: not a valid gzip file ({err})") from None


# The convert step needs the IDX bytes that the download step has just decompressed to
# verify them; in one process they are handed over rather than decompressed twice. Keyed
# on the file's identity, so a replaced file is never answered from memory; taken once,
# and at most one run's four files are held (when convert is cached, nothing takes them).
_HANDOVER: dict[tuple[Any, ...], bytes] = {}
_HANDOVER_LOCK = threading.Lock()
_HANDOVER_MAX = 4


def _hand_over(gz_path: Path, data: bytes) -> None:
    with _HANDOVER_LOCK:
        _HANDOVER[file_identity(gz_path)] = data
        while len(_HANDOVER) > _HANDOVER_MAX:
            del _HANDOVER[next(iter(_HANDOVER))]  # the oldest


def _take_decompressed_idx(gz_path: Path) -> bytes:
    with _HANDOVER_LOCK:
        data = _HANDOVER.pop(file_identity(gz_path), None)
    return decompressed_idx(gz_path) if data is None else data


def _fetch_verified(source: str, dest: Path, expected_sha256: str) -> None:
    with atomic_path(dest) as tmp:
        fetch(source, tmp)
        data = decompressed_idx(tmp)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise FetchError(
                f"{source}: checksum mismatch "
                f"(IDX sha256 {actual[:12]}…, expected {expected_sha256[:12]}…)"
            )
    seal(dest)
    _hand_over(dest, data)


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    return isinstance(state.result(raise_on_failure=False), TransientFetchError)


@task(
    cache_policy=INGEST,  # the mirror list is not part of the key (tasks)
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_if_transient,
)
def download(name: str, sha256: str, mirrors: tuple[str, ...], raw_dir: Path) -> Path:
    """Fetch one MNIST file from the first mirror that has a verified copy."""
    logger = get_run_logger()
    dest = Path(raw_dir) / f"{name}.gz"
    if is_intact(dest) and (data := _verified_decompressed_idx(dest, sha256)) is not None:
        _hand_over(dest, data)
        logger.info("%s: verified copy already present", dest.name)
        return dest
    failures: list[FetchError] = []
    for mirror in mirrors:
        source = mirror_url(mirror, f"{name}.gz")
        try:
            _fetch_verified(source, dest, sha256)
        except FetchError as err:
            logger.warning("%s", err)
            failures.append(err)
            continue
        logger.info("%s: downloaded and verified from %s", dest.name, mirror)
        return dest
    summary = f"{name}.gz: every mirror failed: " + "; ".join(str(f) for f in failures)
    if any(isinstance(f, TransientFetchError) for f in failures):
        raise TransientFetchError(summary)
    raise FetchError(summary)


def _verified_decompressed_idx(gz_path: Path, sha256: str) -> bytes | None:
    try:
        data = decompressed_idx(gz_path)
    except FetchError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


@task(cache_policy=INGEST)
def convert(
    images_gz: Path, labels_gz: Path, dest: Path, checksums: dict[str, str]
) -> dict[str, Any]:
    """Parse one split's IDX files and write it as normalized Parquet."""
    try:
        images = parse_idx(_take_decompressed_idx(images_gz), Path(images_gz).name, IMAGES_MAGIC)
        labels = parse_idx(_take_decompressed_idx(labels_gz), Path(labels_gz).name, LABELS_MAGIC)
    except IdxFormatError as err:
        raise IngestError(str(err)) from None
    if len(images) != len(labels):
        raise IngestError(
            f"{Path(images_gz).name}: {len(images)} images but "
            f"{Path(labels_gz).name} has {len(labels)} labels"
        )
    write_split(dest, images, labels, metadata={"source_sha256": checksums})
    digest = seal(dest)
    get_run_logger().info("%s: %d rows written", Path(dest).name, len(labels))
    return {"path": str(dest), "rows": int(len(labels)), "sha256": digest}
