"""What the Prefect UI shows (issue 16), end to end: start `mnist-pipeline stack` on a free
port, train and score through the CLI against it, and check through its API what the UI
would render: the UI's settings, the report's embedded plots and Configuration section,
run and task-run names, the scoring summary's columns and the reject reasons."""

from __future__ import annotations

import base64
import json
import re
import sys
import urllib.request

import pytest

from tests.conftest import run_cli
from tests.support import free_port, synthetic_digits, wait_healthy, write_mirror
from tests.test_deployments import Spawned, wait_until_gone

pytestmark = pytest.mark.e2e

HEADER = ",".join(f"pixel{k}" for k in range(784))
PNG = b"\x89PNG\r\n\x1a\n"


def csv_file(path, n, seed, labels, extra=()):
    images, y = synthetic_digits(n, seed)
    with open(path, "w") as f:
        f.write(("label," if labels else "") + HEADER + "\n")
        for label, row in zip(y, images.reshape(n, 784), strict=True):
            f.write((f"{label}," if labels else "") + ",".join(map(str, row)) + "\n")
        for line in extra:
            f.write(line + "\n")


def test_the_ui_tells_what_was_trained_and_scored(tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    checksums = write_mirror(tmp_path / "mirror")
    port = free_port()
    artifacts = tmp_path / "artifacts"
    stack = Spawned(
        [sys.executable, "-m", "cli.main", "stack", "--port", str(port),
         "--artifacts", str(artifacts)],
        env={}, log=tmp_path / "stack.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(f"{api}/health", timeout=180, proc=stack.proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings") as answer:
            assert json.load(answer)["api_url"] == api
        env = {"PREFECT_API_URL": api}
        trained = run_cli(
            "train", "--epochs", "2", "--mirror", str(tmp_path / "mirror"),
            "--checksums", str(checksums), "--artifacts", str(artifacts), env=env,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr
        csv_file(tmp_path / "clean.csv", 8, seed=1, labels=True)
        bad = ["3," + ",".join(["0"] * 783) + ",300", "7,1,2"]
        csv_file(tmp_path / "bad_rows.csv", 5, seed=2, labels=True, extra=bad)
        scored = run_cli(
            "score", str(tmp_path / "clean.csv"), str(tmp_path / "bad_rows.csv"),
            "--output-dir", str(tmp_path / "out"), "--artifacts", str(artifacts), env=env,
        )  # fmt: skip
        assert scored.returncode == 3, scored.stderr

        with temporary_settings(updates={PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                # The CLI's runs: finished (the nightly schedule adds Scheduled ones).
                runs = [r for r in client.read_flow_runs() if r.state and r.state.is_final()]
                flows = {f.id: f.name for f in client.read_flows()}
                by_flow = {flows[r.flow_id]: r for r in runs}
                report = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=["mnist-training-report"])
                    )
                )[0]
                scoring_run = by_flow["mnist-scoring"]
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[scoring_run.id]))
                )
                summary, rejects = (
                    client.read_artifacts(
                        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
                    )[0]
                    for key in ("mnist-scoring-summary", "mnist-scoring-rejects")
                )
    finally:
        stack.stop()
    assert wait_until_gone(stack) == []

    # Training: the run's name, the report's configuration and its plots, inline.
    assert re.fullmatch(r"train-default-[0-9a-f]{8}", by_flow["mnist-training"].name)
    text = report.data
    assert len(text.encode()) < 1_000_000
    assert "## Configuration" in text and "preset" in text and "learning_rate" in text
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(PNG) for image in images)
    # Scoring: the run's name, one task run per file, the summary's columns, the reasons.
    champion = json.loads((artifacts / "models" / "champion.json").read_text())["version"]
    assert scoring_run.name == f"score-2 files-{champion}"
    assert {"score clean.csv", "score bad_rows.csv"} <= {t.name for t in tasks}
    table = json.loads(summary.data)
    assert len(table) == 2
    columns = set(table[0])
    assert {"rows", "scored", "rejected", "output", "rejects", "accuracy"} <= columns
    assert {str(d) for d in range(10)} <= columns
    bad_row = next(r for r in table if r["file"].endswith("bad_rows.csv"))
    assert (bad_row["rows"], bad_row["scored"], bad_row["rejected"]) == (7, 5, 2)
    assert "pixel783: 300 is outside 0-255" in rejects.data
    assert "expected 785 fields, got 3" in rejects.data
