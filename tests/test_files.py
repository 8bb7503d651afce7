"""Atomic writes and sidecar fingerprints."""

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import PipelineError
from core.files import atomic_path, atomic_write_text, is_intact, seal, temporary_path
from tests.support import REPO


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_and_is_readable(tmp_path):
    dest = tmp_path / "out.txt"
    atomic_write_text(dest, "one")
    atomic_write_text(dest, "two")
    assert dest.read_text() == "two"
    assert dest.stat().st_mode & 0o044 == 0o044
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_intact_until_deleted_or_altered(tmp_path):
    path = tmp_path / "data.bin"
    assert not is_intact(path)
    path.write_bytes(b"abc")
    assert not is_intact(path), "no sidecar yet"
    seal(path)
    assert is_intact(path)
    path.write_bytes(b"abd")
    assert not is_intact(path)
    path.unlink()
    assert not is_intact(path)


def killed_writer(dest: Path) -> Path:
    """The temporary a real process leaves when it is killed (SIGKILL) mid-write."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from core.files import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'half a file')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    tmp = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()
    proc.stdout.close()
    return tmp


def test_the_first_write_into_a_folder_removes_what_killed_writers_left(tmp_path):
    dest = tmp_path / "train.parquet"
    left = killed_writer(dest)
    assert left.exists() and left.name.startswith(".train.parquet.")
    other = killed_writer(tmp_path / "test.parquet")  # a new process, its first write here
    assert other.exists() and not left.exists()
    atomic_write_text(dest, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]


def test_live_writers_and_other_hosts_keep_their_temporaries(tmp_path):
    dest = tmp_path / "model.joblib"
    ours = temporary_path(dest)
    ours.write_bytes(b"being written by this very process")
    elsewhere = tmp_path / ".model.joblib.some-other-host-1.abcd1234.tmp"
    elsewhere.write_bytes(b"cannot tell from here")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"new")
    assert ours.exists() and elsewhere.exists()
    assert dest.read_bytes() == b"new"


# ----------------------------------------------------------------------------- write errors
# Issue 20, item 7: a write that fails is one line (a PipelineError) that names the output,
# never the hidden temporary, and says what happened; the temporary is removed.

PLAIN_WORDS = [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
    (errno.EPERM, "permission denied"),
    (errno.EIO, os.strerror(errno.EIO)),  # no plainer words: the system's own
]


def test_a_failed_write_of_the_temporary_names_the_output(tmp_path):
    dest = tmp_path / "metrics.json"
    dest.write_text("previous")
    with pytest.raises(PipelineError) as caught, atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as the next write would
    assert str(caught.value) == f"{dest}: could not write: no space left on the device"
    assert dest.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [dest]


@pytest.mark.parametrize(("code", "words"), PLAIN_WORDS)
def test_a_rename_that_fails_is_said_in_plain_words(tmp_path, monkeypatch, code, words):
    def refuse(src, dst):
        raise OSError(code, os.strerror(code), src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    dest = tmp_path / "report.md"
    with pytest.raises(PipelineError) as caught:
        atomic_write_text(dest, "# report\n")
    assert str(caught.value) == f"{dest}: could not write: {words}"
    assert caught.value.errno == code  # a retry condition can still tell EIO
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_refuses_the_temporary_names_the_output_not_the_temporary(
    tmp_path, monkeypatch
):
    # Tests run as root, whom chmod does not stop: the refusal is injected where the
    # temporary is created (test_write_errors has a real read-only mount).
    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(os, "open", refuse)
    dest = tmp_path / "champion.json"
    with pytest.raises(PipelineError) as caught:
        atomic_write_text(dest, "{}")
    [line] = str(caught.value).splitlines()
    assert line == f"{dest}: could not write: permission denied"
    assert ".tmp" not in line


def test_what_else_the_block_fails_at_keeps_its_own_error(tmp_path):
    # atomic_path's callers also read and download inside the block: a missing source is
    # not an output that could not be written.
    dest = tmp_path / "copy.bin"
    with pytest.raises(FileNotFoundError), atomic_path(dest) as tmp:
        tmp.write_bytes((tmp_path / "absent.bin").read_bytes())
    assert list(tmp_path.iterdir()) == []


def test_the_write_error_crosses_processes_whole():
    from core.files import OutputWriteError

    error = OutputWriteError("/out/a.csv", "no space left on the device", errno.ENOSPC)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is OutputWriteError and str(copy) == str(error)
    assert copy.errno == errno.ENOSPC


# ----------------------------------------------------------------------------- one helper
# Issue 21, item 2: every output gets the same guarantees, whichever code writes it: the
# umask honoured, and the data on the disk before the rename makes it visible.


def write_with_atomic_path(dest: Path) -> None:
    atomic_write_text(dest, "written by atomic_path\n")


def write_with_the_scoring_writer(dest: Path) -> None:
    from core.scoring.writers import AtomicFile

    out = AtomicFile(dest)
    out.file.write(b"written by the scoring writer\n")
    out.commit()


BOTH_WRITERS = [write_with_atomic_path, write_with_the_scoring_writer]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_writer_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        for n, write in enumerate(BOTH_WRITERS):
            write(tmp_path / f"out{n}")
    finally:
        os.umask(old)
    modes = [(tmp_path / f"out{n}").stat().st_mode & 0o777 for n in range(len(BOTH_WRITERS))]
    assert modes == [0o666 & ~umask] * len(BOTH_WRITERS)


@pytest.mark.parametrize("write", BOTH_WRITERS)
def test_every_writer_flushes_the_data_before_the_rename(tmp_path, monkeypatch, write):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    dest = tmp_path / "out.txt"
    write(dest)
    file, folder = dest.stat().st_ino, tmp_path.stat().st_ino
    assert ("replace", file) in events
    renamed = events.index(("replace", file))
    assert ("fsync", file) in events[:renamed], events  # the data first
    assert ("fsync", folder) in events[renamed:], events  # then the rename itself
