"""Atomic writes and sidecar fingerprints."""

import pytest

from tasks.files import atomic_path, atomic_write_text, is_intact, seal


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
