"""Training with the artifacts root on an object store, against a real S3 API (moto's
server on loopback), through the CLI: what the store holds after a run, a cache that is
never stale when an output on the store changes, a store mirror that fails (the next mirror
serves), and a store that stops in the middle of a run.

tests/test_store_e2e.py has the headline cases (the root and the mirror on the store, a warm
re-run all Cached, a store answering 503 mid-publish with the champion intact); these are
the ones around them.
"""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pytest
import s3fs

from tests.conftest import run_cli
from tests.support import S3_ENV, MotoServer, states, write_mirror

pytestmark = pytest.mark.e2e

EPOCHS = "2"
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def store(endpoint: str | None = None) -> s3fs.S3FileSystem:
    """A fresh client (no instance or listing cache) on the session's store or ``endpoint``."""
    # A private server's client carries moto's dummy credentials itself: this process's
    # environment has them only while the session's server (s3_server) is up.
    kwargs = (
        {"endpoint_url": endpoint, "key": S3_ENV["AWS_ACCESS_KEY_ID"],
         "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"]}
        if endpoint else {}
    )  # fmt: skip
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **kwargs)


def train(root: str, mirror: tuple[Path, Path], *extra: str, env: dict | None = None):
    folder, checksums = mirror
    return run_cli(
        "train", "--epochs", EPOCHS, "--mirror", str(folder), "--checksums", str(checksums),
        "--artifacts", root, *extra, env=env,
    )  # fmt: skip


def test_a_changed_output_on_the_store_is_computed_again(s3_bucket, mirror):
    """The cache is trusted only while its outputs on the store are intact: a fit file
    overwritten behind the pipeline's back and a Parquet file deleted are made again, and
    the steps whose outputs are untouched stay Cached."""
    root = f"{s3_bucket}/root"
    key = root[5:]
    first = train(root, mirror)
    assert first.returncode == 0, first.stderr
    assert set(states(first.stdout).values()) == {"Completed"}, first.stdout
    fs = store()
    # Everything is on the store: the bucket holds it all, and nothing went to a local
    # folder named like the URL.
    listed = {p[len(key) + 1 :] for p in fs.find(key)}
    champion = json.loads(fs.cat(f"{key}/models/champion.json"))
    version = champion["version"]
    (fit,) = [p for p in listed if p.startswith("training/") and p.endswith("/fit.joblib")]
    expected = {
        "data/train.parquet", "data/test.parquet", "models/champion.json",
        *(f"data/raw/{name}.gz" for name in FILES),
        *(f"models/{version}/{name}" for name in (
            "model.joblib", "manifest.json", "report.md", "metrics.json",
            "confusion_matrix.png", "learning_curve.png", "misclassified.png",
        )),  # fmt: skip
        fit,
    }  # fmt: skip
    assert expected <= listed, sorted(expected - listed)
    assert any(p.startswith(".prefect-results/") for p in listed), "results and cache records"
    assert (
        "![confusion matrix](data:image/png;base64,"
        in fs.cat(f"{key}/models/{version}/report.md").decode()
    )
    assert not Path("s3:").exists()

    # Overwrite the fit file (its sidecar keeps the old digest) and delete the test split.
    fs.pipe_file(f"{key}/{fit}", b"not the fit that was cached")
    fs.rm_file(f"{key}/data/test.parquet")
    again = train(root, mirror)
    assert again.returncode == 0, again.stderr
    steps = states(again.stdout)
    assert steps["train"] == "Completed" and steps["convert test"] == "Completed", again.stdout
    assert steps["convert train"] == "Cached", again.stdout
    assert {steps[f"download {name}"] for name in FILES} == {"Cached"}, again.stdout
    assert fs.cat(f"{key}/{fit}") != b"not the fit that was cached"
    assert fs.exists(f"{key}/data/test.parquet")
    # The fit was made again (its training time differs, so its bytes do), and so is a
    # new version, as on disk; the first version stays as it was.
    now = json.loads(fs.cat(f"{key}/models/champion.json"))["version"]
    assert now != version and fs.exists(f"{key}/models/{now}/model.joblib")
    assert fs.exists(f"{key}/models/{version}/model.joblib")


def test_a_store_mirror_that_fails_is_one_line_and_the_next_mirror_serves(
    s3_bucket, mirror, tmp_path
):
    """A store mirror with one file corrupted and one missing: each failure is one warning
    naming its URL, the local mirror supplies those two, and the store mirror the others."""
    folder, checksums = mirror
    bucket = s3_bucket[5:]
    fs = store()
    for name in FILES[:2] + FILES[2:3]:
        fs.put_file(str(folder / f"{name}.gz"), f"{bucket}/mnist/{name}.gz")
    # Valid gzip, wrong content: only the checksum of the IDX bytes can tell.
    corrupt = gzip.decompress((folder / f"{FILES[1]}.gz").read_bytes())
    fs.pipe_file(f"{bucket}/mnist/{FILES[1]}.gz", gzip.compress(corrupt[:-1] + b"\x07"))
    store_mirror = f"{s3_bucket}/mnist/"
    done = run_cli(
        "ingest", "--mirror", store_mirror, "--mirror", str(folder),
        "--checksums", str(checksums), "--artifacts", f"{s3_bucket}/root",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    mismatch = [line for line in output.splitlines() if "checksum mismatch" in line]
    assert len(mismatch) == 1 and f"{store_mirror}{FILES[1]}.gz" in mismatch[0], output
    missing = [line for line in output.splitlines() if "no such file" in line]
    assert len(missing) == 1 and f"{store_mirror}{FILES[3]}.gz" in missing[0], output
    served = {
        name: mirror_name
        for line in output.splitlines()
        if "downloaded and verified from" in line
        for name in FILES
        if f"{name}.gz: downloaded" in line
        for mirror_name in [line.rsplit("downloaded and verified from ", 1)[1].strip()]
    }
    assert served == {
        FILES[0]: store_mirror, FILES[1]: str(folder),
        FILES[2]: store_mirror, FILES[3]: str(folder),
    }, output  # fmt: skip
    assert fs.exists(f"{bucket}/root/data/train.parquet")


@pytest.mark.parametrize(
    "stop_after",
    [
        "data/train.parquet",  # while the training split is being sealed and read back
        "training/*/fit.joblib.sha256",  # the fit sealed: Prefect's records, then evaluate
    ],
)
def test_the_store_stopping_mid_run_is_one_line_naming_the_url(tmp_path, stop_after):
    """A private store is stopped (its process ended, connections refused) once
    ``stop_after`` is on it: the run ends with one line naming a URL under the root, exit
    code 1, no traceback. (moto keeps nothing across a restart, so the champion's survival
    is checked where the store stays up and refuses writes: tests/test_store_e2e.py.)"""
    server = MotoServer(tmp_path / "moto.log")
    root = f"{server.bucket('stopping')}/root"
    checksums = write_mirror(tmp_path / "mirror")
    fs = store(server.endpoint)
    stopped, finished = threading.Event(), threading.Event()

    def stop_once_it_is_there() -> None:
        while not finished.wait(0.05):
            try:
                if fs.glob(f"{root[5:]}/{stop_after}"):
                    server.stop()
                    stopped.set()
                    return
            except Exception:  # noqa: BLE001 (a failed look: look again)
                pass

    watcher = threading.Thread(target=stop_once_it_is_there, daemon=True)
    watcher.start()
    try:
        # Few attempts: botocore's default retries would only make the failure slower.
        done = train(
            root, (tmp_path / "mirror", checksums),
            env={**server.env, "AWS_MAX_ATTEMPTS": "2"},
        )  # fmt: skip
    finally:
        finished.set()
        watcher.join(timeout=30)
        server.stop()
    assert stopped.is_set(), f"the watcher never saw {stop_after} on the store"
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{root}/" in errors[0], done.stderr
