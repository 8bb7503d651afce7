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
from tests.support import free_port, seed_database, synthetic_digits, wait_healthy, write_mirror
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
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    checksums = write_mirror(tmp_path / "mirror")
    port = free_port()
    artifacts = tmp_path / "artifacts"
    seed_database(artifacts / ".prefect" / "prefect.db")
    stack = Spawned(
        [sys.executable, "-m", "cli.main", "stack", "--port", str(port),
         "--artifacts", str(artifacts)],
        env={}, log=tmp_path / "stack.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(f"{api}/health", timeout=180, proc=stack.proc)
        # The UI calls the API on the stack's own port, and shows no promotions (it reads
        # that from the server's settings).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings") as answer:
            assert json.load(answer)["api_url"] == api
        with urllib.request.urlopen(f"{api}/admin/settings") as answer:
            assert json.load(answer)["server"]["ui"]["show_promotional_content"] is False
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
        # Without labels, the summary has no accuracy column.
        csv_file(tmp_path / "nolabels.csv", 4, seed=3, labels=False)
        plain = run_cli(
            "score", str(tmp_path / "nolabels.csv"), "--output-dir", str(tmp_path / "out"),
            "--artifacts", str(artifacts), env=env,
        )  # fmt: skip
        assert plain.returncode == 0, plain.stderr

        with temporary_settings(updates={PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                # The CLI's runs, which no deployment made (the stack's nightly schedule
                # adds Scheduled runs of its deployments).
                runs = [r for r in client.read_flow_runs() if r.deployment_id is None]
                flows = {f.id: f.name for f in client.read_flows()}

                def artifact(run, key):
                    return client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            key=ArtifactFilterKey(any_=[key]),
                            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                        )
                    )

                training = [r for r in runs if flows[r.flow_id] == "mnist-training"]
                scoring = sorted(
                    (r for r in runs if flows[r.flow_id] == "mnist-scoring"),
                    key=lambda r: r.created,
                )
                assert len(training) == 1 and len(scoring) == 2, [r.name for r in runs]
                report = artifact(training[0], "mnist-training-report")
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[scoring[0].id]))
                )
                summary = artifact(scoring[0], "mnist-scoring-summary")
                rejects = artifact(scoring[0], "mnist-scoring-rejects")
                plain_summary = artifact(scoring[1], "mnist-scoring-summary")
                plain_rejects = artifact(scoring[1], "mnist-scoring-rejects")
    finally:
        stack.stop()
        left = wait_until_gone(stack)
        stack.kill()  # only if something is left
    assert left == [], stack.output()

    # Training: the run's name, the report's configuration and its plots, inline.
    assert re.fullmatch(r"train-default-[0-9a-f]{8}", training[0].name)
    assert len(report) == 1
    text = report[0].data
    assert len(text.encode()) < 1_000_000
    configuration = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for setting in ("preset", "hidden", "epochs", "batch_size", "learning_rate",
                    "lr_schedule", "momentum", "seed", "validation_fraction",
                    "data train-images-idx3-ubyte", "code digest"):  # fmt: skip
        assert f"| {setting}" in configuration, (setting, configuration)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 3
    assert all(base64.b64decode(image, validate=True).startswith(PNG) for image in images)
    # Scoring: the run's name, one task run per file, the summary's columns, the reasons.
    champion = json.loads((artifacts / "models" / "champion.json").read_text())["version"]
    assert [r.name for r in scoring] == [f"score-2 files-{champion}", f"score-1 files-{champion}"]
    assert {t.name for t in tasks} >= {"score clean.csv", "score bad_rows.csv"}
    table = json.loads(summary[0].data)
    assert len(table) == 2
    digits = {f"digit {d}" for d in range(10)}
    assert set(table[0]) >= {"file", "rows", "scored", "rejected", "output", "rejects",
                             "accuracy", *digits}  # fmt: skip
    bad_row = next(r for r in table if r["file"].endswith("bad_rows.csv"))
    assert (bad_row["rows"], bad_row["scored"], bad_row["rejected"]) == (7, 5, 2)
    assert bad_row["rejects"].endswith("bad_rows.rejects.csv")
    assert sum(bad_row[d] for d in digits) == 5
    assert len(rejects) == 1
    assert "pixel783: 300 is outside 0-255" in rejects[0].data
    assert "expected 785 fields, got 3" in rejects[0].data
    # Unlabelled input: no accuracy column, and no rejects artifact.
    (plain_row,) = json.loads(plain_summary[0].data)
    assert "accuracy" not in plain_row and (plain_row["rows"], plain_row["rejected"]) == (4, 0)
    assert plain_rejects == []
