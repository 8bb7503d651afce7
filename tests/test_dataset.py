"""The Parquet split format, and the in-process copy that spares a cold run a re-read."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.dataset import PIXEL_COLUMNS, load_split, read_metadata, read_split, write_split
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
