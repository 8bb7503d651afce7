"""Ingestion under a real Prefect server, from a real HTTP mirror on 127.0.0.1 with faults."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from core import fetch
from core.dataset import read_metadata, read_split
from core.fetch import IngestError, mirror_url
from core.settings import DOWNLOAD_GRACE_SECONDS, DOWNLOAD_MIN_RATE, SettingsError
from flows.ingest import ingest_flow
from tests.support import (
    FILES,
    REAL_MNIST,
    FaultyMirror,
    idx_bytes,
    synthetic_digits,
    write_mirror,
)

# The flows run against the session's Prefect server.
on_prefect = pytest.mark.usefixtures("prefect_api")


def run(artifacts, mirror, checksums, **kw):
    return ingest_flow(mirror=mirror, artifacts=str(artifacts), checksums_file=str(checksums), **kw)


def states(result):
    return {s["step"]: s["state"] for s in result["steps"]}


def test_mirror_url_joins_every_kind_of_base(tmp_path):
    assert mirror_url("http://h/x", "f.gz") == "http://h/x/f.gz"
    assert mirror_url("https://h/x/", "f.gz") == "https://h/x/f.gz"
    assert mirror_url("file:///d/", "f.gz") == "file:///d/f.gz"
    assert mirror_url(str(tmp_path), "f.gz") == str(tmp_path / "f.gz")


@on_prefect
def test_http_ingest_builds_parquet_then_is_fully_cached(http_mirror, mirror, artifacts):
    first = run(artifacts, http_mirror.url, mirror[1])
    assert set(states(first).values()) == {"Completed"}
    assert first["train"]["rows"] == 300 and first["test"]["rows"] == 100

    X, y = read_split(artifacts / "data" / "train.parquet")
    images, labels = synthetic_digits(300, seed=1)
    assert X.dtype == np.float32 and X.shape == (300, 784)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X, images.reshape(300, 784) / 255, rtol=1e-6)
    schema = pq.read_schema(artifacts / "data" / "train.parquet")
    assert schema.field("label").type == "uint8" and schema.field("pixel783").type == "float"
    assert (
        pq.ParquetFile(artifacts / "data" / "train.parquet")
        .metadata.row_group(0)
        .column(1)
        .compression
        == "ZSTD"
    )
    assert set(read_metadata(artifacts / "data" / "test.parquet")["source_sha256"]) == set(
        FILES["test"]
    )

    hits = sum(http_mirror.hits.values())
    second = run(artifacts, http_mirror.url, mirror[1])
    assert set(states(second).values()) == {"Cached"}
    assert sum(http_mirror.hits.values()) == hits, "a cached run must not download"


@on_prefect
def test_deleted_or_altered_parquet_is_rebuilt(http_mirror, mirror, artifacts):
    run(artifacts, http_mirror.url, mirror[1])
    (artifacts / "data" / "test.parquet").unlink()
    with open(artifacts / "data" / "train.parquet", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    result = run(artifacts, http_mirror.url, mirror[1])
    assert states(result)["convert test"] == "Completed"
    assert states(result)["convert train"] == "Completed"
    assert states(result)["download train-images-idx3-ubyte"] == "Cached"
    assert read_split(artifacts / "data" / "train.parquet")[0].shape == (300, 784)


@on_prefect
def test_503_twice_then_the_file_succeeds_through_retries(http_mirror, mirror, artifacts):
    http_mirror.faults["train-labels-idx1-ubyte.gz"] = ["503", "503"]
    result = run(artifacts, http_mirror.url, mirror[1])
    assert states(result)["download train-labels-idx1-ubyte"] == "Completed"
    assert http_mirror.hits["train-labels-idx1-ubyte.gz"] == 3


@on_prefect
def test_truncated_body_is_retried(http_mirror, mirror, artifacts):
    http_mirror.faults["t10k-images-idx3-ubyte.gz"] = ["truncate"]
    result = run(artifacts, http_mirror.url, mirror[1])
    assert result["test"]["rows"] == 100
    assert http_mirror.hits["t10k-images-idx3-ubyte.gz"] == 2
    assert not list((artifacts / "data" / "raw").glob(".*.tmp"))


@on_prefect
def test_checksum_mismatch_moves_to_the_next_mirror(tmp_path, http_mirror, mirror, artifacts):
    http_mirror.faults["train-images-idx3-ubyte.gz"] = ["corrupt"] * 10
    result = run(artifacts, [http_mirror.url, str(mirror[0])], mirror[1])
    assert result["train"]["rows"] == 300
    assert http_mirror.hits["train-images-idx3-ubyte.gz"] == 1, "no retry on a bad checksum"


@on_prefect
def test_all_mirrors_down_fails_with_every_reason_and_no_parquet(http_mirror, mirror, artifacts):
    http_mirror.faults["t10k-labels-idx1-ubyte.gz"] = ["404"]
    missing = mirror[0].parent / "nowhere"
    with pytest.raises(IngestError) as info:
        run(artifacts, [http_mirror.url, str(missing)], mirror[1])
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz: every mirror failed" in message
    assert "HTTP 404" in message and f"{missing}/t10k-labels-idx1-ubyte.gz: no such file" in message
    assert "\n" not in message
    assert not (artifacts / "data" / "test.parquet").exists()
    assert not (artifacts / "data" / "raw" / "t10k-labels-idx1-ubyte.gz").exists()


@on_prefect
def test_server_errors_are_retried_then_reported(http_mirror, mirror, artifacts):
    http_mirror.faults["train-labels-idx1-ubyte.gz"] = ["503"] * 10
    with pytest.raises(IngestError, match=r"train-labels-idx1-ubyte.gz: every mirror failed.*503"):
        run(artifacts, http_mirror.url, mirror[1])
    assert http_mirror.hits["train-labels-idx1-ubyte.gz"] == 4, "1 try + 3 retries"


@pytest.fixture
def short_deadline(monkeypatch):
    """Transfers get 1 s of grace, then must average 1000 bytes/s (the files are ~1-150 kB)."""
    monkeypatch.setenv("MNIST_DOWNLOAD_GRACE_SECONDS", "1")
    monkeypatch.setenv("MNIST_DOWNLOAD_MIN_RATE", "1000")


@on_prefect
def test_a_drip_fed_mirror_is_abandoned_at_its_deadline_for_the_next(
    http_mirror, mirror, artifacts, short_deadline
):
    # A byte every 0.2 s never trips a socket timeout; it used to hold the download forever.
    http_mirror.faults["train-images-idx3-ubyte.gz"] = ["drip"] * 10
    started = time.monotonic()
    result = run(artifacts, [http_mirror.url, str(mirror[0])], mirror[1])
    assert result["train"]["rows"] == 300
    assert http_mirror.hits["train-images-idx3-ubyte.gz"] == 1, "the next mirror, at once"
    assert time.monotonic() - started < 30
    assert not list((artifacts / "data" / "raw").glob(".*.tmp"))


@on_prefect
def test_a_slow_but_steady_download_within_its_deadline_completes(
    http_mirror, mirror, artifacts, monkeypatch
):
    # ~130 bytes at 100 bytes/s: needs ~1.3 s, has 1 + 130 / 20 = 7.5 s. Progress must be
    # counted as bytes arrive, not per 1 MiB read, or it looks stalled after the grace.
    monkeypatch.setenv("MNIST_DOWNLOAD_GRACE_SECONDS", "1")
    monkeypatch.setenv("MNIST_DOWNLOAD_MIN_RATE", "20")
    http_mirror.drip_seconds = 0.01
    http_mirror.faults["t10k-labels-idx1-ubyte.gz"] = ["drip"]
    result = run(artifacts, http_mirror.url, mirror[1])
    assert result["test"]["rows"] == 100
    assert http_mirror.hits["t10k-labels-idx1-ubyte.gz"] == 1, "no retry"


@on_prefect
def test_every_mirror_stalled_fails_in_one_line_after_every_attempt(
    http_mirror, mirror, artifacts, short_deadline
):
    silent = FaultyMirror(mirror[0])  # accepts the request and never answers
    http_mirror.faults["train-labels-idx1-ubyte.gz"] = ["drip"] * 10
    silent.faults["train-labels-idx1-ubyte.gz"] = ["hang"] * 10
    started = time.monotonic()
    try:
        with pytest.raises(IngestError) as info:
            run(artifacts, [http_mirror.url, silent.url], mirror[1])
    finally:
        silent.close()
    # 4 attempts x 2 mirrors x ~1.25 s, plus the tests' 0.05 s retry delays.
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert message.startswith("train-labels-idx1-ubyte.gz: every mirror failed")
    assert message.count("too slow") == 2 and "\n" not in message
    assert http_mirror.hits["train-labels-idx1-ubyte.gz"] == 4, "1 try + 3 retries"
    assert silent.hits["train-labels-idx1-ubyte.gz"] == 4
    assert not (artifacts / "data" / "raw" / "train-labels-idx1-ubyte.gz").exists()
    assert not list((artifacts / "data" / "raw").glob(".*.tmp"))


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_deadline_setting_is_a_one_line_error(monkeypatch, value):
    monkeypatch.setenv("MNIST_DOWNLOAD_MIN_RATE", value)
    with pytest.raises(SettingsError, match=rf"^MNIST_DOWNLOAD_MIN_RATE='{value}': expected"):
        fetch.download_deadline()


def test_the_default_deadline_meets_the_five_minute_bound():
    # With every mirror stalled, each attempt ends at the grace period; a file's 4
    # attempts on the 3 default mirrors, plus the longest retry delays (jitter 0.5),
    # must leave ingest well inside 5 minutes, start-up included.
    attempts, mirrors, delays = 4, 3, sum(d * 1.5 for d in (2, 5, 15))
    worst = attempts * mirrors * (DOWNLOAD_GRACE_SECONDS + fetch._POLL_SECONDS) + delays
    assert worst < 240
    # ...and a healthy mirror at the minimum rate still delivers the largest file.
    assert DOWNLOAD_GRACE_SECONDS + 9_912_422 / DOWNLOAD_MIN_RATE < 240


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"t10k_labels_idx1_ubyte": idx_bytes(np.zeros((100, 28, 28), np.uint8))}, "magic number"),
        ({"t10k_images_idx3_ubyte": idx_bytes(np.zeros((100, 28, 27), np.uint8))}, "28x27"),
        ({"t10k_images_idx3_ubyte": idx_bytes(np.zeros((100, 28, 28), np.uint8))[:-9]}, "promises"),
        ({"t10k_labels_idx1_ubyte": idx_bytes(np.zeros(99, np.uint8))}, "has 99 labels"),
    ],
    ids=["wrong-magic", "wrong-dimensions", "too-few-bytes", "count-mismatch"],
)
@on_prefect
def test_bad_idx_content_is_a_clear_error(tmp_path, artifacts, override, message):
    checksums = write_mirror(tmp_path / "bad", **override)
    with pytest.raises(IngestError, match=rf"^t10k-.*{message}"):
        run(artifacts, str(tmp_path / "bad"), checksums)
    assert not (artifacts / "data" / "test.parquet").exists()


@pytest.mark.realdata
def test_real_mnist_from_a_local_folder(real_mnist_champion):
    # The session's real-MNIST root: ingested by its training run, from the same folder.
    artifacts, _ = real_mnist_champion
    result = ingest_flow(mirror=str(REAL_MNIST), artifacts=str(artifacts))
    assert result["train"]["rows"] == 60000 and result["test"]["rows"] == 10000
    labels = pq.read_table(artifacts / "data" / "test.parquet", columns=["label"])
    counts = np.bincount(labels.column("label").to_numpy(), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train = pq.read_table(artifacts / "data" / "train.parquet", columns=["label"])
    assert np.bincount(train.column("label").to_numpy()).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    size = sum((artifacts / "data" / f"{s}.parquet").stat().st_size for s in ("train", "test"))
    assert size < 25e6
