"""The issue's whole loop on real MNIST (issue 22): a champion of MNIST alone; 20,000
shifted digits arrive in an inbox; the nightly deployment, run with ``prefect deployment
run`` against a real server and a real ``serve`` process, retrains on them; accuracy on the
shifted holdout rises; the new version is promoted and scoring uses it; a second run with
the same inbox is all Cached.

The shifted digits come from MNIST's training images (benchmarks.shifted_digits), never
from its test set, which the leakage guard would refuse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.shifted_digits import generate
from core import registry
from core.labeled import holdout_data
from flows.deployments import TRAINING
from model.predict import predict_proba_pixels
from tests.conftest import run_cli
from tests.support import REAL_MNIST, REPO, copy_root, forget_deployment, stop_process_group

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("prefect_api")]

SHIFTED_ROWS = 20_000
HOLDOUT = 0.1  # the default --labeled-holdout


def deployment_run(**params: object) -> tuple[subprocess.CompletedProcess, str]:
    """``prefect deployment run mnist-training/nightly -p k=<json> … --watch``."""
    flags = [f"--param={k}={json.dumps(v)}" for k, v in params.items()]
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", TRAINING, *flags, "--watch"],
        cwd=REPO, env={**os.environ, "COLUMNS": "250"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout + done.stderr
    return done, found.group(1)


def task_states(flow_run_id: str) -> dict[str, str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name: run.state.name for run in runs}


def wait_for_nightly(proc: subprocess.Popen, log: Path) -> dict:
    """The nightly deployment's parameters, once ``serve`` has registered it."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                nightly = client.read_deployment_by_name(TRAINING)
                if nightly.parameters.get("labeled"):
                    return nightly.parameters
            except ObjectNotFound:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)


def accuracy_on(models: Path, version: str, X: np.ndarray, y: np.ndarray) -> float:
    """``version``'s accuracy on uint8 rows ``X``, computed here, apart from the pipeline's."""
    params = registry.load(models, version).params
    return float(np.mean(predict_proba_pixels(params, X).argmax(axis=1) == y))


def test_the_nightly_run_learns_new_digits_from_the_inbox(real_mnist_champion, tmp_path):

    real_root, _ = real_mnist_champion
    artifacts = copy_root(real_root, tmp_path / "artifacts")
    models = artifacts / "models"
    # 1. The champion was trained on MNIST alone.
    before = registry.champion_version(models)
    assert registry.load(models, before).bundle.get("labeled_data", []) == []

    # 2. 20,000 shifted digits arrive in the inbox.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    generate(inbox / "shifted.csv", SHIFTED_ROWS, seed=7, mnist_dir=REAL_MNIST)

    log = tmp_path / "serve.log"
    env = {**os.environ, "MNIST_MIRROR": str(REAL_MNIST)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
             "--poll-seconds", "1", "--labeled", str(inbox / "*.csv")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        assert wait_for_nightly(proc, log)["labeled"] == [str(inbox / "*.csv")]
        # 3. The nightly deployment retrains, on its own inbox (the parameter's default).
        # MNIST accuracy may dip a little as the model learns the shifted digits: the
        # labeled gate decides.
        done, run_id = deployment_run(promote_on="labeled")
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
        states = task_states(run_id)
        assert states["convert labeled shifted.csv"] == "Completed", states
        assert states["train"] == "Completed", states

        after = registry.champion_version(models)
        assert after != before, "the new version was not promoted"
        manifest = registry.read_manifest(models / after)
        (lineage,) = manifest["labeled_data"]
        assert lineage["rows"] == lineage["accepted"] == SHIFTED_ROWS
        assert lineage["rejected"] == 0
        assert 0.08 * SHIFTED_ROWS < lineage["held_out"] < 0.12 * SHIFTED_ROWS

        # 4. Accuracy on the shifted holdout rises, by a measured amount.
        record = {"path": str(artifacts / "data" / "labeled" / f"{lineage['sha256']}.parquet")}
        X, y = holdout_data(record, HOLDOUT)
        assert len(y) == lineage["held_out"]
        old, new = accuracy_on(models, before, X, y), accuracy_on(models, after, X, y)
        metrics = json.loads((models / after / "metrics.json").read_text())
        assert round(new, 4) == round(metrics["labeled_holdout_accuracy"], 4)
        old_test = registry.read_manifest(models / before)["test_accuracy"]
        print(  # noqa: T201 - the figures the issue asks for, in the test's output
            f"shifted holdout ({len(y)} rows): {old:.4f} -> {new:.4f}; "
            f"MNIST test: {old_test:.4f} -> {metrics['test_accuracy']:.4f}; "
            f"promoted by the labeled gate"
        )
        assert new - old >= 0.08, (old, new)
        assert metrics["test_accuracy"] > 0.85  # MNIST itself is still learned
        champion = json.loads((models / "champion.json").read_text())
        assert "labeled" in champion["reason"], champion

        # Scoring then uses the new champion: its accuracy on the held-out rows is the
        # new version's, not the old one's.
        table = np.column_stack([y, X])
        header = "label," + ",".join(f"pixel{k}" for k in range(784))
        np.savetxt(tmp_path / "holdout.csv", table, fmt="%d", delimiter=",", header=header,
                   comments="")  # fmt: skip
        scored = run_cli(
            "score", str(tmp_path / "holdout.csv"), "--output", str(tmp_path / "preds.csv"),
            "--artifacts", str(artifacts),
        )  # fmt: skip
        assert scored.returncode == 0, scored.stderr
        predicted = np.loadtxt(tmp_path / "preds.csv", delimiter=",", skiprows=1, usecols=1)
        assert round(float(np.mean(predicted == y)), 4) == round(new, 4)

        # 5. The same inbox again: every step Cached, no new version.
        versions = sorted(p.name for p in models.iterdir() if p.is_dir())
        done, run_id = deployment_run(promote_on="labeled")
        assert done.returncode == 0, done.stdout + done.stderr
        states = task_states(run_id)
        assert set(states.values()) == {"Cached"}, states
        assert sorted(p.name for p in models.iterdir() if p.is_dir()) == versions
    finally:
        stop_process_group(proc)
        forget_deployment(TRAINING)
