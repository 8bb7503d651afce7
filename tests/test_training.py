"""The mnist-training flow end to end, under a real Prefect server, on synthetic IDX data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import promotion_line
from core import dataset, registry
from core import evaluation as core_evaluation
from core import training as core_training
from core.files import is_intact
from flows.training import training_flow
from tests.conftest import run_cli
from tests.support import REPO, seed_database

pytestmark = pytest.mark.usefixtures("prefect_api")

METRIC_KEYS = {
    "test_accuracy", "test_log_loss", "per_class", "confusion_matrix",
    "validation_accuracy", "train_seconds",
}  # fmt: skip


def train(artifacts, mirror, **kw):
    return training_flow(
        mirror=str(mirror[0]), checksums_file=str(mirror[1]), artifacts=str(artifacts), **kw
    )


def states(result):
    return {s["step"]: s["state"] for s in result["steps"]}


def test_trains_persists_promotes_then_is_fully_cached(mirror, artifacts, monkeypatch):
    """Also, on the same runs: data reaches train and evaluate only as the convert step's
    record (each reads the Parquet file it names, once the file is written and sealed),
    and a deleted model version is rebuilt, not trusted."""
    read = {}

    def noted_read(path):
        read[Path(path).name] = is_intact(Path(path))
        return dataset.read_split(path)

    monkeypatch.setattr(core_training, "read_split", noted_read)
    monkeypatch.setattr(core_evaluation, "read_split", noted_read)
    first = train(artifacts, mirror, epochs=4)
    assert read == {"train.parquet": True, "test.parquet": True}
    assert set(states(first).values()) == {"Completed"}
    assert first["test_accuracy"] > 0.9, "synthetic digits are easy"
    version_dir = artifacts / "models" / first["version"]
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["test_accuracy"] == first["test_accuracy"]
    for name in ("confusion_matrix.png", "learning_curve.png", "misclassified.png"):
        assert (version_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert "promoted: first model" in (version_dir / "report.md").read_text()
    assert registry.read_champion(artifacts / "models")["version"] == first["version"]
    loaded = registry.load(artifacts / "models")
    assert loaded.bundle["data"]["source_sha256"]
    assert {"numpy", "prefect", "python"} <= set(loaded.bundle["packages"])
    assert len(loaded.bundle["curve"]) == 4

    second = train(artifacts, mirror, epochs=4)
    assert set(states(second).values()) == {"Cached"}
    assert second["version"] == first["version"]
    unchanged = f"champion: {first['version']} (unchanged; promote step Cached)"
    assert promotion_line(second) == unchanged
    assert len(registry.list_versions(artifacts / "models")) == 1

    third = train(artifacts, mirror, epochs=5)
    steps = states(third)
    assert {steps[s] for s in steps if s.startswith(("download", "convert"))} == {"Cached"}
    assert {steps[s] for s in ("train", "evaluate", "persist", "promote")} == {"Completed"}
    assert third["version"] != first["version"]

    # A deleted model version is rebuilt, not trusted: its fit is still Cached.
    (artifacts / "models" / first["version"] / "model.joblib").unlink()
    again = train(artifacts, mirror, epochs=4)
    assert states(again)["persist"] == "Completed" and states(again)["train"] == "Cached"
    assert again["version"] != first["version"]


def test_worse_model_is_kept_but_not_promoted(mirror, artifacts):
    good = train(artifacts, mirror, epochs=3)
    worse = train(artifacts, mirror, epochs=1, learning_rate=1e-5)
    assert worse["test_accuracy"] < good["test_accuracy"]
    assert not worse["promotion"]["promoted"]
    assert "is lower than champion" in worse["promotion"]["reason"]
    # The closing line says what happened (the champion kept) before why.
    assert promotion_line(worse).startswith(
        f"not promoted: champion {good['version']} kept (test accuracy "
    )
    report = (artifacts / "models" / worse["version"] / "report.md").read_text()
    assert "not promoted" in report
    assert registry.read_champion(artifacts / "models")["version"] == good["version"]

    forced = train(artifacts, mirror, epochs=1, learning_rate=1e-5, force_promote=True)
    assert forced["promotion"]["promoted"]
    assert registry.read_champion(artifacts / "models")["version"] == worse["version"]
    assert promotion_line(forced) == (
        f"promoted: {forced['version']} is the champion (promotion forced)"
    )

    # The good model again: every step Cached, its promotion decided long ago. The CLI
    # must say where it stands now, not repeat "promoted" from its first run.
    again = train(artifacts, mirror, epochs=3)
    assert set(states(again).values()) == {"Cached"} and again["promotion"]["promoted"]
    assert again["champion"] == worse["version"]
    assert promotion_line(again) == (
        f"not champion: the champion is {worse['version']} "
        "(promote step Cached; this model was promoted when first trained)"
    )


def test_cli_train_list_promote_and_tampering(mirror, artifacts):
    common = ["--mirror", str(mirror[0]), "--checksums", str(mirror[1])]
    done = run_cli(
        "train", *common, "--artifacts", str(artifacts), "--epochs", "2", "--early-stopping", "1"
    )
    assert done.returncode == 0, done.stderr
    for line in ("download train-images-idx3-ubyte", "train ", "promote ", "model:", "report:"):
        assert line in done.stdout
    assert "Traceback" not in done.stdout + done.stderr

    listing = run_cli("models", "list", "--artifacts", str(artifacts))
    assert listing.returncode == 0
    version = registry.list_versions(artifacts / "models")[0]["version"]
    assert f"* {version}" in listing.stdout
    assert registry.load(artifacts / "models").bundle["config"]["early_stopping_patience"] == 1

    bundle = artifacts / "models" / version / "model.joblib"
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"\x00")
    refused = run_cli("models", "promote", version, "--artifacts", str(artifacts))
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "SHA-256 does not match its manifest" in refused.stderr

    bad = run_cli("train", "--epochs", "0", "--artifacts", str(artifacts))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "mnist-pipeline train: error: epochs must be >= 1, got 0"


def test_cli_reports_a_failed_download_in_one_line(tmp_path, artifacts):
    missing = tmp_path / "no-such-mirror"
    done = run_cli("ingest", "--mirror", str(missing), "--artifacts", str(artifacts))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mnist-pipeline ingest: error: ")
    assert "every mirror failed" in last and str(missing) in last


def test_a_failed_run_on_the_embedded_server_ends_in_one_line(tmp_path, artifacts):
    # As a user runs it: no PREFECT_API_URL, so the CLI starts Prefect's embedded server
    # (and turns heartbeats off). The root cause, not "upstream did not complete", and no
    # tracebacks from the server's shutdown.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    seed_database(artifacts / ".prefect" / "prefect.db")
    missing = tmp_path / "no-such-mirror"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "train", "--mirror", str(missing),
         "--artifacts", str(artifacts)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    expected = (
        "mnist-pipeline train: error: train-images-idx3-ubyte.gz: every mirror failed: "
        f"{missing}/train-images-idx3-ubyte.gz: no such file"
    )
    assert expected in done.stderr.splitlines()


def test_a_diverging_learning_rate_is_one_line(mirror, artifacts):
    done = run_cli(
        "train", "--mirror", str(mirror[0]), "--checksums", str(mirror[1]),
        "--artifacts", str(artifacts), "--epochs", "2", "--learning-rate", "1e30",
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert error.startswith("mnist-pipeline train: error: training diverged in epoch 1 ")
    assert error.endswith("; lower learning_rate (now 1e+30)")


def test_a_missing_checksums_file_is_a_usage_error(tmp_path, artifacts):
    missing = tmp_path / "no-such-SHA256SUMS"
    done = run_cli("train", "--checksums", str(missing), "--artifacts", str(artifacts))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"mnist-pipeline train: error: checksums file {missing}: "
        "cannot read it (No such file or directory)"
    )
    assert not artifacts.exists() or not list(artifacts.rglob("*.parquet"))


def test_killed_run_resumes_from_what_was_finished(mirror, artifacts):
    args = [
        sys.executable, "-m", "cli.main", "train", "--mirror", str(mirror[0]),
        "--checksums", str(mirror[1]), "--artifacts", str(artifacts),
        "--epochs", "400", "--batch-size", "4",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    test_converted = training = False
    for line in proc.stdout:
        # Killed mid-training, once the test split (converted alongside) is finished too.
        test_converted |= "'convert test' - Finished in state Completed" in line
        training |= "/400 " in line
        if (test_converted and training) or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (artifacts / "data" / "train.parquet").exists()
    assert not list((artifacts / "training").glob("*/fit.joblib"))
    assert not list(artifacts.rglob("*.tmp"))

    resumed = train(artifacts, mirror, epochs=3)
    steps = states(resumed)
    assert {steps[s] for s in steps if s.startswith(("download", "convert"))} == {"Cached"}
    assert steps["train"] == "Completed"


def test_two_runs_at_once_do_not_corrupt_each_other(mirror, artifacts):
    common = ["--mirror", str(mirror[0]), "--checksums", str(mirror[1])]
    run_cli("ingest", *common, "--artifacts", str(artifacts))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "train",
                *common,
                "--artifacts",
                str(artifacts),
                "--epochs",
                "2",
                "--seed",
                str(seed),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for seed in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    versions = registry.list_versions(artifacts / "models")
    assert len(versions) == 2
    champion = registry.read_champion(artifacts / "models")
    assert champion["version"] in {v["version"] for v in versions}
    for v in versions:
        registry.load(artifacts / "models", v["version"])  # both intact


@pytest.mark.realdata
def test_default_preset_on_real_mnist(real_mnist_champion):
    _, result = real_mnist_champion
    assert result["test_accuracy"] >= 0.93


def test_the_run_is_named_for_what_it_trains_and_its_report_shows_it(mirror, artifacts):
    """Issue 16: `train-<preset>-<fingerprint>`, and a report artifact with the resolved
    configuration and its plots embedded (the Prefect UI cannot load files beside it)."""
    import base64
    import re

    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
    )

    train(artifacts, mirror, epochs=2, seed=5)
    (run_dir,) = (artifacts / "training").iterdir()
    name = f"train-default-{run_dir.name[:8]}"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
        assert runs, f"no flow run named {name}"
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id for run in runs]),
                key=ArtifactFilterKey(any_=["mnist-training-report"]),
            )
        )
    report = reports[0].data
    assert "## Configuration" in report and "| preset | default |" in report
    assert "| seed | 5 |" in report and "| code digest |" in report
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report)
    assert len(images) == 3
    assert all(base64.b64decode(data)[:4] == b"\x89PNG" for data in images)
