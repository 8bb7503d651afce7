"""Everything on an object store, end to end through the CLI, against a real S3 API (moto's
server on loopback): train with ``--artifacts s3://…``, score an ``s3://`` glob, Dask
without a shared disk, and a store that goes away in the middle of a run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs

from tests.conftest import run_cli
from tests.support import REPO, S3_ENV, StoreOutage, states, synthetic_digits

pytestmark = pytest.mark.e2e

HEADER = ",".join(f"pixel{k}" for k in range(784))
BAD_ROWS = ["1,2", "3," + ",".join(["0"] * 783) + ",300"]


def store() -> s3fs.S3FileSystem:
    """A fresh client (no listing cache) on the session's store."""
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def kaggle_csv(path: Path, n: int, seed: int, extra_lines: list[str] = ()) -> None:
    images, y = synthetic_digits(n, seed)
    with open(path, "w") as f:
        f.write("label," + HEADER + "\n")
        for label, row in zip(y, images.reshape(n, 784), strict=True):
            f.write(f"{label}," + ",".join(map(str, row)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def train(root: str, mirror: tuple[Path, Path], *extra: str, env: dict | None = None):
    folder, checksums = mirror
    return run_cli(
        "train", "--epochs", "2", "--mirror", str(folder), "--checksums", str(checksums),
        "--artifacts", root, *extra, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_on_store(s3_server, tmp_path_factory) -> tuple[str, object]:
    """An artifacts root on the store with a champion, trained from a store mirror."""
    from tests.support import write_mirror

    tmp = tmp_path_factory.mktemp("store")
    checksums = write_mirror(tmp / "mirror")
    bucket = s3_server.bucket("trained-on-store")
    fs = store()
    for gz in sorted((tmp / "mirror").glob("*.gz")):
        fs.put_file(str(gz), f"{bucket[5:]}/mnist/{gz.name}")
    root = f"{bucket}/root"
    first = train(root, (f"{bucket}/mnist/", checksums))
    second = train(root, (f"{bucket}/mnist/", checksums))
    return root, (first, second, tmp / "mirror", checksums)


def test_train_with_the_artifacts_root_and_the_mirror_on_the_store(trained_on_store):
    root, (first, second, _, _) = trained_on_store
    assert first.returncode == 0, first.stderr
    assert " is the champion (first model: no champion yet)" in first.stdout
    fs = store()
    key = root[5:]
    champion = fs.cat(f"{key}/models/champion.json").decode()
    version = champion.split('"version": "')[1].split('"')[0]
    for name in ("model.joblib", "manifest.json", "report.md", "confusion_matrix.png"):
        assert fs.exists(f"{key}/models/{version}/{name}"), name
    assert fs.exists(f"{key}/data/train.parquet") and fs.exists(f"{key}/data/raw")
    assert fs.find(f"{key}/.prefect-results"), "Prefect's results and cache records"
    # Nothing of the run landed on the local disk in a folder named like the URL.
    assert not Path("s3:").exists()
    # The warm re-run is all Cached, as on disk.
    assert second.returncode == 0, second.stderr
    steps = states(second.stdout)
    assert len(steps) == 10 and set(steps.values()) == {"Cached"}, second.stdout


def test_score_a_store_glob_with_malformed_rows_locally_and_on_dask(trained_on_store, tmp_path):
    root, _ = trained_on_store
    bucket = root[5:].split("/")[0]
    kaggle_csv(tmp_path / "good.csv", 40, seed=1)
    kaggle_csv(tmp_path / "bad_rows.csv", 25, seed=2, extra_lines=BAD_ROWS)
    fs = store()
    for name in ("good.csv", "bad_rows.csv"):
        fs.put_file(str(tmp_path / name), f"{bucket}/incoming/{name}")

    on_store = run_cli(
        "score", f"s3://{bucket}/incoming/*.csv", "--output-dir", f"s3://{bucket}/scored/",
        "--artifacts", root,
    )  # fmt: skip
    assert on_store.returncode == 3, on_store.stderr  # some rows were rejected
    assert "Traceback" not in on_store.stdout + on_store.stderr
    predictions = list(
        csv.DictReader(io.StringIO(fs.cat(f"{bucket}/scored/bad_rows.predictions.csv").decode()))
    )
    rejects = list(
        csv.DictReader(io.StringIO(fs.cat(f"{bucket}/scored/bad_rows.rejects.csv").decode()))
    )
    assert len(predictions) + len(rejects) == 27  # every row accounted for
    assert [r["Line"] for r in rejects] == ["27", "28"]
    assert not fs.exists(f"{bucket}/scored/good.rejects.csv")

    # The same files scored from and to the local disk, with the same model (by URL).
    champion = fs.cat(f"{root[5:]}/models/champion.json").decode()
    version = champion.split('"version": "')[1].split('"')[0]
    local = run_cli(
        "score", str(tmp_path / "good.csv"), str(tmp_path / "bad_rows.csv"),
        "--output-dir", str(tmp_path / "local"), "--model", f"{root}/models/{version}",
    )  # fmt: skip
    assert local.returncode == 3, local.stderr
    # Dask without a shared disk: the workers read inputs and model from the store.
    on_dask = run_cli(
        "score", f"s3://{bucket}/incoming/*.csv", "--output-dir", f"s3://{bucket}/dask/",
        "--artifacts", root, "--dask-local", "2",
    )  # fmt: skip
    assert on_dask.returncode == 3, on_dask.stderr
    for name in ("good.predictions.csv", "bad_rows.predictions.csv", "bad_rows.rejects.csv"):
        local_bytes = (tmp_path / "local" / name).read_bytes()
        assert fs.cat(f"{bucket}/scored/{name}") == local_bytes, name
        assert fs.cat(f"{bucket}/dask/{name}") == local_bytes, name


def test_a_missing_store_input_is_one_line_and_the_rest_is_scored(trained_on_store, tmp_path):
    root, _ = trained_on_store
    bucket = root[5:].split("/")[0]
    kaggle_csv(tmp_path / "one.csv", 5, seed=3)
    store().put_file(str(tmp_path / "one.csv"), f"{bucket}/single/one.csv")
    done = run_cli(
        "score", f"s3://{bucket}/single/one.csv", f"s3://{bucket}/single/absent.csv",
        "--output-dir", f"s3://{bucket}/single-out/", "--artifacts", root,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert f"error: s3://{bucket}/single/absent.csv: file not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert store().exists(f"{bucket}/single-out/one.predictions.csv")


def test_the_store_going_away_mid_run_is_one_line_and_the_champion_stays(
    trained_on_store, s3_server
):
    """The store stops answering (503 to everything) once the new model's first file is
    being uploaded; the run fails with one line naming the URL, and champion.json and the
    versions on the store are as they were."""
    root, (_, _, mirror, checksums) = trained_on_store
    key = root[5:]
    fs = store()
    champion_before = fs.cat(f"{key}/models/champion.json")
    versions_before = sorted(fs.ls(f"{key}/models"))
    outage = StoreOutage(
        s3_server.endpoint, trips=lambda method, path: method == "PUT" and "/models/2" in path
    )
    try:
        # Another config (3 epochs): a new model, which is published and then promoted.
        done = train(
            root, (mirror, checksums), "--epochs", "3",
            env={**S3_ENV, "AWS_ENDPOINT_URL": outage.endpoint, "AWS_MAX_ATTEMPTS": "2"},
        )  # fmt: skip
    finally:
        outage.close()
    assert outage.down, "the outage never started: the run did not reach publishing"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "mnist-pipeline train: error:" in line]
    assert len(errors) == 1 and f"{root}/models/" in errors[0], done.stderr
    assert fs.cat(f"{key}/models/champion.json") == champion_before
    # A version whose upload was cut off has no manifest, so it does not exist.
    listed = run_cli("models", "list", "--artifacts", root)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("\n") == 2 + len(  # the header and the artifacts line
        [v for v in versions_before if not v.endswith((".json", ".sha256"))]
    ), listed.stdout


def test_fsspecs_own_endpoint_variable_works_too(trained_on_store, s3_server):
    """FSSPEC_S3_ENDPOINT_URL instead of AWS_ENDPOINT_URL (MinIO, Ceph, R2 setups)."""
    root, _ = trained_on_store
    env = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    env["FSSPEC_S3_ENDPOINT_URL"] = s3_server.endpoint
    listed = subprocess.run(
        [sys.executable, "-m", "cli.main", "models", "list", "--artifacts", root],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "*" in listed.stdout  # the champion, read from the store
