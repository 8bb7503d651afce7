"""Atomic writes and content fingerprints for every file the pipeline produces.

Every output, whatever writes it, goes through one helper (``new_temporary`` then
``move_into_place``; ``atomic_path`` wraps the pair) with one set of guarantees. A file is
written to a temporary name in its destination folder, created with mode 0666 less the
umask like any file the user makes, flushed to the disk (fsync) and renamed into place
only when complete, then the folder is flushed: a crash, a power cut or a retry never
leaves a half-written file under the final name. On a store (``core.storage``), where
there is no rename, the file is written to a local temporary and uploaded whole when
complete (one PUT, or a multipart upload the store completes only once every part is in):
the final key never holds a partial object either. A ``<file>.sha256`` sidecar written
after it records what was written; a file is *intact* when it still hashes to its
sidecar. Caches use that to refuse a hit whose output was deleted or altered.

A write that fails (a full disk, a read-only folder, no permission) is an
``OutputWriteError`` naming the output, never the hidden temporary, which the user did not
ask for and which is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from core.errors import PipelineError
from core.storage import Location, is_remote, put_file, store_errors

_CHUNK = 1 << 20


class OutputWriteError(PipelineError):
    """An output that could not be written: ``<output>: could not write: <what happened>``."""

    def __init__(self, dest: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{dest}: could not write: {reason}")
        self.dest, self.reason = dest, reason
        self.errno = code  # the OSError's, so that a retry condition can still tell EIO

    def __reduce__(self) -> tuple[object, ...]:  # pickled whole (Dask, Prefect results)
        return (type(self), (self.dest, self.reason, self.errno))


# The faults a user can act on, in plain words; any other keeps the system's wording.
_WRITE_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# Raised by writing only: a block that also reads or downloads (atomic_path's callers do)
# raises its other OSErrors for reasons of its own, which must keep their messages.
_ONLY_WRITES_FAIL_SO = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


@contextlib.contextmanager
def writing(dest: Location) -> Iterator[None]:
    """Turn an OSError of the block, which writes ``dest`` or its temporary, into an
    OutputWriteError naming ``dest``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(dest, exc) from exc


def _write_error(dest: Location, exc: OSError) -> OutputWriteError:
    reason = _WRITE_FAULTS.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    return OutputWriteError(str(dest), reason, exc.errno)


def sha256_file(path: Location) -> str:
    """Hex SHA-256 of the file at ``path`` (local or on a store), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with store_errors(path, "read"), path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temporary_path(dest: Path) -> Path:
    """A new hidden name beside ``dest`` for writing it: ``.NAME.HOST-PID.RANDOM.tmp``.

    The name says which process writes it, so that a temporary left by a writer that was
    killed (nothing else leaves one) can be told from one still being written. The first
    time a process writes into a folder, it removes the temporaries there of dead
    processes of this host (once per folder: an output folder may hold thousands of
    files). Other hosts' are left alone, since their processes cannot be checked.
    """
    host = socket.gethostname()
    _remove_abandoned_once(dest.parent, host)
    return dest.with_name(f".{dest.name}.{host}-{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_abandoned_once(folder: Path, host: str) -> None:
    key = (os.getpid(), str(folder.resolve()))  # a forked child sweeps for itself
    with _SWEPT_LOCK:
        if key in _SWEPT:
            return
        _SWEPT.add(key)
    _remove_temporaries(folder, host, lambda pid: not pid_alive(pid))


def remove_own_temporaries() -> None:
    """Remove this process's temporaries from every folder it has written into (for a
    process about to exit mid-write: the files being written there are never renamed
    into place, so the final names keep their previous content or stay absent)."""
    pid = os.getpid()
    with _SWEPT_LOCK:
        folders = [folder for owner, folder in _SWEPT if owner == pid]
    for folder in folders:
        _remove_temporaries(Path(folder), socket.gethostname(), lambda writer: writer == pid)


def _remove_temporaries(folder: Path, host: str, doomed: Callable[[int], bool]) -> None:
    """Remove the temporaries of ``host`` in ``folder`` whose writer's pid is ``doomed``."""
    ours = re.compile(rf"\..+\.{re.escape(host)}-(\d+)\.[0-9a-f]{{8}}\.tmp")
    # Tidying is best effort: a folder or file it may not touch never fails the write.
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = ours.fullmatch(entry.name)
            if match and doomed(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_SWEPT: set[tuple[int, str]] = set()  # (pid, folder) already swept
_SWEPT_LOCK = threading.Lock()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


@contextlib.contextmanager
def atomic_path(dest: Location) -> Iterator[Path]:
    """Yield a temporary local path (``new_temporary``); it becomes ``dest`` if the block
    succeeds (``move_into_place``). Failing to write it (creating it, filling it, renaming
    it) raises OutputWriteError; either way the temporary is removed."""
    tmp = new_temporary(dest)
    try:
        try:
            yield tmp
        except OSError as exc:
            if _failed_writing(exc, tmp):
                raise _write_error(dest, exc) from exc
            raise
        move_into_place(tmp, dest)
    finally:
        # Gone already once moved into place. Tidying never hides the block's own error.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _failed_writing(exc: OSError, tmp: Path) -> bool:
    """Whether ``exc`` came from writing ``tmp``, not from what else the block does."""
    names = {str(name) for name in (exc.filename, exc.filename2) if name is not None}
    return exc.errno in _ONLY_WRITES_FAIL_SO or str(tmp) in names


def new_temporary(dest: Location) -> Path:
    """Create the empty temporary that becomes ``dest``: beside it (see temporary_path),
    or for a store URL a local file to upload. OutputWriteError if it cannot be created."""
    with writing(dest):
        if is_remote(dest):
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".upload")
            os.close(fd)
            return Path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(dest)
        # Not mkstemp, whose 0600 would survive the rename: 0666 less the umask, as for
        # any file the user creates. O_EXCL: the name is ours alone.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return tmp


def move_into_place(tmp: Path, dest: Location) -> None:
    """Make the complete, closed temporary ``tmp`` the file ``dest``: upload it whole
    (``put_file``), or flush it to the disk, rename it and flush the folder, which makes
    the rename last: after a crash ``dest`` is the old file or the whole new one."""
    if is_remote(dest):
        put_file(tmp, dest)  # a store's faults are StorageErrors that name dest
        tmp.unlink(missing_ok=True)
        return
    with writing(dest):
        fsync(tmp)  # the rename must not land before the data does
        os.replace(tmp, dest)
    with contextlib.suppress(OSError):  # best effort: not every system opens folders
        fsync(dest.parent)


def fsync(path: Path) -> None:
    """Flush the file or folder ``path`` to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(dest: Location, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(text.encode())


def sidecar(path: Location) -> Location:
    return path.with_name(path.name + ".sha256")


def seal(path: Location) -> str:
    """Record ``path``'s SHA-256 in its sidecar and return it."""
    digest = sha256_file(path)
    atomic_write_text(sidecar(path), digest + "\n")
    return digest


def is_intact(path: Location) -> bool:
    """True when ``path`` exists and still hashes to the digest its sidecar recorded."""
    try:
        with store_errors(path, "read"):
            recorded = sidecar(path).read_text().strip()
        return sha256_file(path) == recorded
    except FileNotFoundError:
        return False


def copy_file(source: Location, dest: Location) -> str:
    """Copy ``source`` to ``dest`` (either local or on a store), atomically; the SHA-256
    of the bytes written."""
    with atomic_path(dest) as tmp:
        with store_errors(source, "read"), source.open("rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return sha256_file(tmp)
