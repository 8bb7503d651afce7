"""Atomic writes and sidecar fingerprints."""

import subprocess
import sys
from pathlib import Path

import pytest

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
