"""Where the pipeline's files live: a local folder, or any fsspec URL (s3://, gs://, ...).

``location`` turns what a user wrote (a flag, an environment variable, a path carried in
a task's result) into a path object: a plain ``pathlib.Path`` for a local path or a
``file://`` URL, so that local behaviour is exactly what it always was, and a
``upath.UPath`` for a store URL. Both offer ``/``, ``.name``, ``.parent``, ``.open()``,
``.read_bytes()``, ``.exists()``, ``.iterdir()``, so most code never asks which it has;
the few things a store cannot do (rename, file locks) ask ``is_remote``.

Credentials and endpoints are the store library's own: for S3, the AWS variables and
profiles, ``AWS_ENDPOINT_URL``, or fsspec's ``FSSPEC_S3_ENDPOINT_URL`` for MinIO, Ceph
or R2. The project adds no flags of its own.

A store's faults (no such bucket, access denied, an endpoint that does not answer) come
from s3fs/botocore as their own exception types; ``store_errors`` turns them into one
``StorageError`` line that names the URL.

Nothing here creates a bucket: ``check_bucket`` only looks, and no store path is ever
passed to ``mkdir``/``makedirs``, which in s3fs and gcsfs create a missing bucket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

from upath import UPath

from core.errors import PipelineError

# A local path or a store URL; both behave like pathlib paths.
Location: TypeAlias = Path | UPath

# Schemes whose filesystem comes from an optional extra: scheme -> (package, extra).
EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
}


# Stores whose top level is buckets (containers on Azure): there ``mkdir``/``makedirs``
# create a missing bucket, and a path's first segment is its bucket.
BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


class StorageError(PipelineError):
    """A store that failed us: missing bucket or key, denied, unreachable (exit code 1)."""


class StorageURLError(PipelineError):
    """A URL that cannot be used at all: unknown scheme, or its extra is not installed
    (exit code 2)."""


def is_url(text: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (but not a Windows drive letter)."""
    text = str(text)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def location(text: str | os.PathLike[str]) -> Location:
    """The path object for a local path, a ``file://`` URL, or a store URL.

    Local paths are expanded (``~``) but not resolved, as the user wrote them. Raises
    StorageURLError for a scheme fsspec does not know, or whose extra is missing.
    """
    if isinstance(text, UPath) and is_remote(text):
        return text
    if isinstance(text, Path):
        return text
    text = os.fspath(text)
    if not is_url(text):
        return Path(text).expanduser()
    scheme = text.partition("://")[0].lower()
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(text).path))
    _check_scheme(text, scheme)
    # Listings are not cached: another process (a worker, a second training run) may have
    # written a version or a champion since this one last looked.
    return UPath(text, use_listings_cache=False)


def _check_scheme(url: str, scheme: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise StorageURLError(
            f"{url}: unknown storage scheme {scheme}:// (use a local path, or a URL that "
            "fsspec knows: s3://, gs://, memory://, ...)"
        ) from None
    except ImportError:
        package, extra = EXTRAS.get(scheme, (f"the fsspec driver for {scheme}://", None))
        how = f"pip install 'mnist-pipeline[{extra}]'" if extra else f"install {package}"
        raise StorageURLError(f"{url}: {scheme}:// needs {package}: {how}") from None


def is_remote(path: Location) -> bool:
    """True for a store URL; False for a local path (also a ``file://`` UPath)."""
    return not isinstance(path, Path)


def identity(path: Location) -> str:
    """What makes two paths one file, by name: the resolved local path, or the URL."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


def bucket_of(path: Location) -> str | None:
    """The bucket a store path is in; None for a local path or a store without buckets."""
    if not is_remote(path) or path.protocol not in BUCKET_SCHEMES:
        return None
    return path.path.split("/", 1)[0]


def check_bucket(path: Location) -> None:
    """Raise StorageError unless the bucket of ``path`` exists (a no-op for a local path).

    No command creates a bucket: a mistyped URL must fail, and fail again next time, in
    one line, instead of leaving behind a new bucket that the next run writes into
    quietly. The check is a read (HEAD on the bucket), so it also reports access denied
    or a store that does not answer before any work starts.
    """
    bucket = bucket_of(path)
    if bucket is None:
        return
    with store_errors(path, "bucket"):
        try:
            path.fs.info(bucket)
        except FileNotFoundError:
            raise StorageError(
                f"{path}: no such bucket {bucket!r} (create it first: no command creates buckets)"
            ) from None


def describe(err: BaseException) -> str:
    """A short reason for a store's exception, without the URL (the caller adds it)."""
    name = type(err).__name__
    if isinstance(err, FileNotFoundError):
        return "not found (no such bucket or key)"
    if isinstance(err, PermissionError):
        return "access denied (check the credentials: AWS_* variables or profile)"
    if name == "NoCredentialsError":
        return "no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError") or (
        isinstance(err, OSError) and err.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT)
    ):
        return "the store does not answer (is its endpoint up? AWS_ENDPOINT_URL)"
    return str(err).strip().splitlines()[0] if str(err).strip() else name


def is_store_fault(err: BaseException) -> bool:
    """An exception a store library raised for I/O: OSError, or one of its own types."""
    return isinstance(err, OSError) or is_library_store_fault(err)


def is_library_store_fault(err: BaseException) -> bool:
    """An exception type of a store library (botocore's and aiohttp's are not OSErrors)."""
    module = type(err).__module__ or ""
    return module.split(".")[0] in _STORE_LIBRARIES


_STORE_LIBRARIES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "google", "gcsfs")


@contextlib.contextmanager
def store_errors(path: Location, doing: str = "") -> Iterator[None]:
    """Turn a store's fault inside the block into a StorageError naming ``path``.

    Local paths pass through untouched: their OSErrors keep the messages each caller
    already gives them. FileNotFoundError passes through too, so that "absent" keeps
    meaning absent (no champion yet, a cache output gone) on a store as on disk.
    """
    try:
        yield
    except (StorageError, FileNotFoundError):
        raise
    except Exception as err:
        if not is_remote(path) or not is_store_fault(err):
            raise
        what = f" ({doing})" if doing else ""
        raise StorageError(f"{path}{what}: {describe(err)}") from err


def put_file(local: Path, dest: Location) -> None:
    """Upload the complete local file ``local`` to the store path ``dest``.

    One PUT, or for a large file a multipart upload that the store completes only when
    every part has arrived: the final key never shows a partial object.
    """
    with store_errors(dest, "upload"):
        try:
            dest.fs.put_file(os.fspath(local), dest.path)
        except FileNotFoundError:  # the local file is there: the bucket is not
            raise StorageError(f"{dest} (upload): no such bucket") from None


def conditional_put(dest: Location, data: bytes, etag: str | None) -> bool:
    """Write ``data`` to ``dest`` only if it is unchanged since it was read with ``etag``
    (or, with ``etag`` None, only if it does not exist). Returns False if another writer
    got there first. S3's If-Match / If-None-Match; stores without them raise StorageError.
    """
    kwargs: dict[str, Any] = {"IfMatch": etag} if etag else {"mode": "create"}
    with store_errors(dest, "conditional write"):
        try:
            dest.fs.pipe_file(dest.path, data, **kwargs)
        except FileExistsError:
            return False
        except OSError as err:
            if "pre-condition" in str(err).lower() or "precondition" in str(err).lower():
                return False
            raise
    return True


def etag(path: Location) -> str | None:
    """The store's ETag of ``path``, or None if it does not exist."""
    with store_errors(path, "stat"):
        try:
            info = path.fs.info(path.path)
        except FileNotFoundError:
            return None
    tag = info.get("ETag") or info.get("etag")
    return str(tag) if tag else None
