"""No command creates a bucket (issue 20, items 5 and 9), against a real S3 API (moto's
server on loopback): a store URL into a missing bucket is one line and exit 1, before any
flow starts, and the bucket is still missing afterwards, so the next run fails the same
way instead of writing quietly into a bucket nobody meant to have.

The bucket was made by Prefect's result storage (``RemoteFileSystem.write_path`` calls
s3fs ``makedirs``, which creates a missing bucket), so that path is tested on its own too.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import s3fs

from tests.conftest import run_cli
from tests.support import write_mirror

pytestmark = pytest.mark.e2e


def bucket_exists(name: str) -> bool:
    """Asked afresh (no instance or listing cache), as another process would see it."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    return name in {b.rstrip("/") for b in fs.ls("", refresh=True)}


def the_one_error_line(stderr: str, command: str) -> str:
    """The command's whole stderr, which must be a single error line (no Prefect logs: the
    check comes before any flow starts)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"mnist-pipeline {command}: error: "), stderr
    return lines[0]


def test_train_into_a_missing_bucket_fails_and_leaves_no_bucket(s3_server, tmp_path):
    checksums = write_mirror(tmp_path / "mirror")
    root = "s3://typo-bucket-train/x"
    for _ in range(2):  # the second run must fail too: the first left nothing behind
        done = run_cli(
            "train", "--epochs", "1", "--mirror", str(tmp_path / "mirror"),
            "--checksums", str(checksums), "--artifacts", root,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        line = the_one_error_line(done.stderr, "train")
        assert f"{root}: no such bucket" in line
        assert not bucket_exists("typo-bucket-train")


def test_score_into_a_missing_output_bucket_fails_and_leaves_no_bucket(s3_server, tmp_path):
    from core import registry
    from model.config import preset
    from model.network import init_params

    config = preset("default")
    version = registry.publish(
        tmp_path / "models",
        {
            "params": init_params(config, np.random.default_rng(0)),
            "config": config.to_dict(),
            "metrics": {"test_accuracy": 0.5},
            "fingerprint": "fp",
            "created": "2026-12-01T00:00:00+00:00",
        },
        {},
    )
    digits = tmp_path / "digits.csv"
    digits.write_text("\n".join([",".join(["0"] * 784)] * 3) + "\n")
    for flag, out in (("--output-dir", "s3://typo-bucket-score/out"),
                      ("--output", "s3://typo-bucket-score/out/digits.csv")):  # fmt: skip
        done = run_cli(
            "score", str(digits), flag, out, "--model", str(tmp_path / "models" / version),
            "--artifacts", str(tmp_path),
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{out}: no such bucket" in the_one_error_line(done.stderr, "score")
        assert not bucket_exists("typo-bucket-score")


def test_models_list_in_a_missing_bucket_is_not_no_models_yet(s3_server):
    done = run_cli("models", "list", "--artifacts", "s3://no-such-bucket/x")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no models yet" not in done.stdout
    assert "s3://no-such-bucket/x: no such bucket" in the_one_error_line(done.stderr, "models")
    assert not bucket_exists("no-such-bucket")


def test_result_storage_never_creates_a_bucket(s3_server, prefect_api):
    """Prefect writes results and cache records through the block, sync or async; into a
    missing bucket both fail and create nothing, into an existing one both write."""
    from core.storage import location
    from tasks import result_storage

    storage = result_storage(location("s3://typo-bucket-results/x/.prefect-results"))
    with pytest.raises(FileNotFoundError):
        storage.write_path("record", content=b"result", _sync=True)
    with pytest.raises(FileNotFoundError):
        asyncio.run(storage.awrite_path("record", content=b"result"))
    assert not bucket_exists("typo-bucket-results")

    there = s3_server.bucket("results-bucket-there")
    storage = result_storage(location(f"{there}/x/.prefect-results"))
    storage.write_path("one", content=b"sync", _sync=True)
    asyncio.run(storage.awrite_path("two", content=b"async"))
    assert storage.read_path("one", _sync=True) == b"sync"
    assert storage.read_path("two", _sync=True) == b"async"
