"""The Parquet split format, and the in-process copy that spares a cold run a re-read."""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from core import dataset
from core.dataset import PIXEL_COLUMNS, load_split, read_metadata, read_split, write_split
from tests.support import synthetic_digits


def test_round_trip_scales_pixels_and_keeps_metadata(tmp_path):
    images, labels = synthetic_digits(50, seed=1)
    write_split(tmp_path / "s.parquet", images, labels, {"source_sha256": {"a": "b"}})
    X, y = read_split(tmp_path / "s.parquet")
    assert X.dtype == np.float32 and X.shape == (50, 784) and y.dtype == np.uint8
    np.testing.assert_array_equal(X, images.reshape(50, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    assert read_metadata(tmp_path / "s.parquet") == {"source_sha256": {"a": "b"}}
    schema = pq.read_schema(tmp_path / "s.parquet")
    assert schema.names == ["label", *PIXEL_COLUMNS]
    assert str(schema.field("pixel0").type) == "float"


def test_load_split_serves_what_was_written_read_only(tmp_path):
    images, labels = synthetic_digits(30, seed=2)
    path = tmp_path / "s.parquet"
    write_split(path, images, labels, {})
    X, y = load_split(path)
    assert load_split(path)[0] is X, "the second load is the same arrays"
    X_disk, y_disk = read_split(path)
    np.testing.assert_array_equal(X, X_disk)
    np.testing.assert_array_equal(y, y_disk)
    with pytest.raises(ValueError, match="read-only"):
        X[0, 0] = 1.0


def test_load_split_rereads_a_replaced_file(tmp_path):
    path = tmp_path / "s.parquet"
    first, labels = synthetic_digits(30, seed=3)
    write_split(path, first, labels, {})
    load_split(path)
    second, _ = synthetic_digits(30, seed=4)
    other = tmp_path / "other.parquet"
    write_split(other, second, labels, {})
    os.replace(other, path)  # how every write lands: a new file renamed over the old
    X, _ = load_split(path)
    np.testing.assert_array_equal(X, second.reshape(30, 784).astype(np.float32) / 255)


def write_in_thread(monkeypatch, path, images, labels, source, fail=False):
    """Start ``write_split`` in a thread whose Parquet write is held until released."""
    release, real_write = threading.Event(), dataset._write_parquet

    def held_write(*args, **kwargs):
        assert release.wait(30), "the test never released the write"
        if fail:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(dataset, "_write_parquet", held_write)
    errors = []

    def run():
        try:
            write_split(path, images, labels, {"source_sha256": source})
        except OSError as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return release, thread, errors


def test_decoded_arrays_are_served_while_the_file_is_written(tmp_path, monkeypatch):
    images, labels = synthetic_digits(40, seed=5)
    path, source = tmp_path / "s.parquet", {"images": "aa", "labels": "bb"}
    release, thread, _ = write_in_thread(monkeypatch, path, images, labels, source)
    assert dataset.wait_until_decoded(path, source, give_up=threading.Event())
    assert not path.exists(), "served before the file is written"
    X, y = load_split(path, source)
    np.testing.assert_array_equal(X, images.reshape(40, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(FileNotFoundError):
        load_split(path, {"images": "aa", "labels": "other"})  # other source: not these
    release.set()
    thread.join()
    assert load_split(path, source)[0] is X, "after the write: the same arrays, by file"
    assert load_split(path)[0] is X


def test_waiting_gives_up_when_told_and_a_failed_write_withdraws_the_arrays(tmp_path, monkeypatch):
    images, labels = synthetic_digits(20, seed=6)
    path, source = tmp_path / "s.parquet", {"images": "cc", "labels": "dd"}
    given_up = threading.Event()
    given_up.set()
    assert not dataset.wait_until_decoded(path, source, given_up), "nothing decoded yet"

    release, thread, errors = write_in_thread(monkeypatch, path, images, labels, source, fail=True)
    assert dataset.wait_until_decoded(path, source, threading.Event())
    release.set()
    thread.join()
    assert [str(e) for e in errors] == ["disk full"]
    assert not dataset.wait_until_decoded(path, source, given_up), "withdrawn with the failure"
    assert not path.exists()
