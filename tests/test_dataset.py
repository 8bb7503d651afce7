"""The Parquet split format and its conversion from IDX, and fetching verified files:
Prefect-free, so no backend."""

from __future__ import annotations

import gzip
import hashlib
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.dataset import PIXEL_COLUMNS, convert_idx, read_metadata, read_split, write_split
from core.fetch import FetchError, IngestError, fetch_from_mirrors, is_verified
from core.files import is_intact, sha256_file
from tests.support import FILES, idx_bytes, synthetic_digits, write_mirror


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


def test_an_empty_split_round_trips(tmp_path):
    write_split(tmp_path / "s.parquet", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), {})
    X, y = read_split(tmp_path / "s.parquet")
    assert X.shape == (0, 784) and y.shape == (0,)


def test_convert_reads_the_gz_files_and_names_the_file_it_wrote(tmp_path):
    images, labels = synthetic_digits(3, seed=7)
    (tmp_path / "i.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "l.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    dest = tmp_path / "data" / "s.parquet"
    dest.parent.mkdir()
    split = convert_idx(tmp_path / "i.gz", tmp_path / "l.gz", dest, {"i": "11", "l": "22"})
    assert split == {"path": str(dest), "rows": 3, "sha256": sha256_file(dest)}
    assert is_intact(dest), "sealed, so a cache hit can check it"
    X, y = read_split(dest)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(X, images.reshape(3, 784).astype(np.float32) / 255)
    assert read_metadata(dest) == {"source_sha256": {"i": "11", "l": "22"}}


def test_convert_refuses_a_count_mismatch_naming_both_files(tmp_path):
    images, labels = synthetic_digits(3, seed=7)
    (tmp_path / "i.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "l.gz").write_bytes(gzip.compress(idx_bytes(labels[:2])))
    with pytest.raises(IngestError, match=r"^i.gz: 3 images but l.gz has 2 labels$"):
        convert_idx(tmp_path / "i.gz", tmp_path / "l.gz", tmp_path / "s.parquet", {})
    assert not (tmp_path / "s.parquet").exists()


def test_fetch_takes_the_first_mirror_with_a_verified_copy(tmp_path, caplog):
    good = write_mirror(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    name = FILES["test"][1]
    (bad / f"{name}.gz").write_bytes(gzip.compress(b"not the labels"))
    sha = dict(reversed(line.split()) for line in good.read_text().splitlines())[name]
    dest = tmp_path / "raw" / f"{name}.gz"
    dest.parent.mkdir()
    with caplog.at_level(logging.WARNING):
        used = fetch_from_mirrors(
            dest.name, sha, (str(bad), str(tmp_path / "good")), dest, logging.getLogger("t")
        )
    assert used == str(tmp_path / "good")
    assert "checksum mismatch" in caplog.text
    assert is_verified(dest, sha) and not is_verified(dest, hashlib.sha256(b"x").hexdigest())


def test_when_every_mirror_fails_nothing_lands_and_each_reason_is_named(tmp_path):
    dest = tmp_path / "f.gz"
    with pytest.raises(FetchError, match=r"^f.gz: every mirror failed: .*a/f.gz: no such file"):
        fetch_from_mirrors("f.gz", "0" * 64, (str(tmp_path / "a"),), dest, logging.getLogger())
    assert not dest.exists() and not list(tmp_path.glob(".*.tmp"))
