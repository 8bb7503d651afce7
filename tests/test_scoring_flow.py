"""The mnist-scoring flow and `mnist-pipeline score`, end to end with a trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flows.scoring import scoring_flow
from tests.conftest import run_cli
from tests.support import REAL_MNIST, copy_root, synthetic_digits

HEADER = ",".join(f"pixel{k}" for k in range(784))


@pytest.fixture(scope="module")
def trained(champion_root, tmp_path_factory):
    """An artifacts root with a champion trained on synthetic digits (the session's, copied)."""
    return copy_root(champion_root, tmp_path_factory.mktemp("scoring")) / "artifacts"


def kaggle_csv(path, n, seed, labels=False, extra_lines=()):
    images, y = synthetic_digits(n, seed)
    rows = images.reshape(n, 784)
    with open(path, "w") as f:
        f.write(("label," if labels else "") + HEADER + "\n")
        for label, row in zip(y, rows, strict=True):
            f.write((f"{label}," if labels else "") + ",".join(map(str, row)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return y


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scores_a_kaggle_test_file(trained, tmp_path):
    truth = kaggle_csv(tmp_path / "test.csv", 50, seed=7)
    done = run_cli("score", str(tmp_path / "test.csv"), "--output-dir", str(tmp_path / "out"),
                   "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_rows(tmp_path / "out" / "test.predictions.csv")
    assert list(rows[0]) == ["ImageId", "Label", "Confidence"]
    assert [int(r["ImageId"]) for r in rows] == list(range(1, 51))
    predicted = np.array([int(r["Label"]) for r in rows])
    assert (predicted == truth).mean() > 0.8  # chance is 0.1
    assert all(0 < float(r["Confidence"]) <= 1 for r in rows)
    assert not (tmp_path / "out" / "test.rejects.csv").exists()
    assert "true\\pred" not in done.stdout, "no labels, no confusion matrix"


def test_labelled_file_prints_accuracy_and_its_confusion_matrix(trained, tmp_path):
    truth = kaggle_csv(tmp_path / "train.csv", 40, seed=11, labels=True)
    done = run_cli("score", str(tmp_path / "train.csv"), "--output", str(tmp_path / "p.csv"),
                   "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_rows(tmp_path / "p.csv")
    assert [int(r["TrueLabel"]) for r in rows] == truth.tolist()
    predicted = np.array([int(r["Label"]) for r in rows])
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (truth, predicted), 1)
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "true\\pred" in line)
    printed = [[int(n) for n in line.split()[1:]] for line in lines[header + 1 : header + 11]]
    assert printed == expected.tolist()
    assert f"accuracy {(predicted == truth).mean():.4f}" in done.stdout


def test_bad_rows_and_a_missing_file_exit_3_and_the_rest_is_scored(trained, tmp_path):
    kaggle_csv(tmp_path / "good.csv", 10, seed=1, labels=True)
    bad_row = "3," + ",".join(["0"] * 783) + ",300"
    kaggle_csv(tmp_path / "dirty.csv", 5, seed=2, labels=True, extra_lines=[bad_row, "1,2"])
    done = run_cli(
        "score", str(tmp_path / "good.csv"), str(tmp_path / "dirty.csv"),
        str(tmp_path / "missing.csv"), "--output-dir", str(tmp_path / "out"),
        "--artifacts", str(trained),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"mnist-pipeline score: error: {tmp_path / 'missing.csv'}" in done.stderr
    good = read_rows(tmp_path / "out" / "good.predictions.csv")
    assert len(good) == 10 and "TrueLabel" in good[0]
    dirty = read_rows(tmp_path / "out" / "dirty.predictions.csv")
    rejects = read_rows(tmp_path / "out" / "dirty.rejects.csv")
    assert len(dirty) == 5
    assert [(r["ImageId"], r["Line"]) for r in rejects] == [("6", "7"), ("7", "8")]
    assert rejects[0]["Reason"] == "pixel783: 300 is outside 0-255"
    assert rejects[1]["Reason"] == "expected 785 fields, got 2"
    assert "11/12 rows" not in done.stdout  # per-file lines, not a merged count
    assert "5/7 rows scored, 2 rejected" in done.stdout


def test_single_output_file_and_parquet(trained, tmp_path):
    kaggle_csv(tmp_path / "digits.csv", 8, seed=3)
    out = tmp_path / "preds.parquet"
    done = run_cli("score", str(tmp_path / "digits.csv"), "--output", str(out),
                   "--format", "parquet", "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 0, done.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.column_names[:3] == ["ImageId", "Label", "Confidence"]
    assert table.num_rows == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a.csv", "b.csv", "--output", "x.csv"], "--output takes one input, got 2"),
        (["a.csv", "--output-dir", "o", "--model", "nope"], "model 'nope': no such version"),
        (["a.csv", "--output-dir", "o", "--format", "xlsx"], "invalid choice: 'xlsx'"),
        (["a.csv"], "one of the arguments --output --output-dir is required"),
    ],
)
def test_unusable_invocations_exit_2(trained, tmp_path, args, message):
    done = run_cli("score", *args, "--artifacts", str(trained))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_flow_scores_many_files_concurrently_and_summarizes(trained, tmp_path):
    for k in range(4):
        kaggle_csv(tmp_path / f"part{k}.csv", 20, seed=k, labels=True)
    result = scoring_flow(
        inputs=[str(tmp_path / "part*.csv")], output_dir=str(tmp_path / "out"),
        artifacts=str(trained),
    )  # fmt: skip
    assert result["rows"] == 80 and result["scored"] == 80 and result["failed_files"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"part{k}.predictions.csv" for k in range(4)
    ]
    champion = json.loads((trained / "models" / "champion.json").read_text())
    assert result["model"] == champion["version"]
    for summary in result["files"]:
        matrix = np.array(summary["confusion_matrix"])
        assert matrix.sum() == 20 and np.trace(matrix) / 20 == summary["accuracy"]
    assert "part3.csv" in latest_artifact("mnist-scoring-confusion")


# ----------------------------------------------------------------------------- inputs are safe
# Issue 13: scoring never harms an input. Every output path is checked against every input
# before anything is written; a clash is one line naming both, exit 2, and no change.


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_input_named_like_another_inputs_rejects_is_refused(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    kaggle_csv(folder / "a.csv", 5, seed=1)
    kaggle_csv(folder / "a.rejects.csv", 5, seed=2)  # a real input that happens to be named so
    before = snapshot(folder)
    done = run_cli("score", str(folder / "a.csv"), str(folder / "a.rejects.csv"),
                   "--output-dir", str(folder), "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    [message] = done.stderr.strip().splitlines()
    assert str(folder / "a.csv") in message and f"input {folder / 'a.rejects.csv'}" in message
    assert snapshot(folder) == before  # a.rejects.csv is still there, and nothing was added


def test_a_glob_run_again_over_its_own_outputs_is_refused(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    kaggle_csv(folder / "a.csv", 5, seed=1, extra_lines=["1,2"])
    args = ["score", str(folder / "*.csv"), "--output-dir", str(folder), "--artifacts",
            str(trained)]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 3, first.stderr  # one rejected row: a.rejects.csv is written
    assert sorted(snapshot(folder)) == ["a.csv", "a.predictions.csv", "a.rejects.csv"]
    before = snapshot(folder)
    again = run_cli(*args)
    assert again.returncode == 2
    [message] = again.stderr.strip().splitlines()
    assert "would overwrite input" in message and str(folder / "a.predictions.csv") in message
    assert snapshot(folder) == before


def test_output_equal_to_the_input_exits_2(trained, tmp_path):
    kaggle_csv(tmp_path / "a.csv", 3, seed=1)
    before = snapshot(tmp_path)
    done = run_cli("score", str(tmp_path / "a.csv"), "--output", str(tmp_path / "a.csv"),
                   "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "would overwrite input" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(tmp_path) == before


def test_plan_jobs_sees_through_symlinks_and_hard_links(tmp_path):
    from core.scoring.jobs import ScoringUsageError, plan_jobs

    kaggle_csv(tmp_path / "a.csv", 2, seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.predictions.csv").symlink_to(tmp_path / "a.csv")
    with pytest.raises(ScoringUsageError, match="would overwrite input"):
        plan_jobs([str(tmp_path / "a.csv")], None, str(tmp_path / "out"), "csv")
    (tmp_path / "out" / "a.predictions.csv").unlink()
    (tmp_path / "b.csv").hardlink_to(tmp_path / "a.csv")
    with pytest.raises(ScoringUsageError, match="would overwrite input"):
        plan_jobs([str(tmp_path / "a.csv")], str(tmp_path / "b.csv"), None, "csv")
    jobs = plan_jobs([str(tmp_path / "a.csv")], None, str(tmp_path / "out"), "csv")
    assert [Path(j.output).name for j in jobs] == ["a.predictions.csv"]


def test_a_line_over_1_mib_in_the_middle_is_one_rejected_row(trained, tmp_path):
    src = tmp_path / "big.csv"
    kaggle_csv(src, 100, seed=4)
    lines = src.read_bytes().split(b"\n")
    lines[50] = b"0," * 700_000  # data row 50: 1.4 MB
    src.write_bytes(b"\n".join(lines))
    done = run_cli("score", str(src), "--output", str(tmp_path / "p.csv"),
                   "--artifacts", str(trained))  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "99/100 rows scored, 1 rejected" in done.stdout
    [reject] = read_rows(tmp_path / "p.rejects.csv")
    assert (reject["ImageId"], reject["Line"]) == ("50", "51")
    assert reject["Reason"] == "line is 1400000 bytes long; the limit is 1048576 (1 MiB)"


def latest_artifact(key):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort="CREATED_DESC", limit=1,
        )  # fmt: skip
    assert found, f"no artifact {key!r}"
    return found[0].data


@pytest.mark.realdata
def test_real_test_set_scores_to_the_reported_accuracy_exactly(real_mnist_champion, tmp_path):
    from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz

    artifacts, trained = real_mnist_champion
    images = read_idx_gz(REAL_MNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx_gz(REAL_MNIST / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    table = np.column_stack([labels, images.reshape(-1, 784)])
    np.savetxt(tmp_path / "train.csv", table, fmt="%d", delimiter=",",
               header="label," + HEADER, comments="")  # fmt: skip
    result = scoring_flow(
        inputs=[str(tmp_path / "train.csv")], output=str(tmp_path / "preds.csv"),
        artifacts=str(artifacts),
    )  # fmt: skip
    summary = result["files"][0]
    assert summary["rows"] == summary["scored"] == 10000
    assert summary["accuracy"] == trained["test_accuracy"]
    metrics = json.loads((Path(trained["model"]).parent / "metrics.json").read_text())
    assert summary["confusion_matrix"] == metrics["confusion_matrix"]


def test_a_failed_file_fails_the_run_naming_it_and_the_rest_is_written(trained, tmp_path):
    from prefect import get_client

    from flows.scoring import ScoringFailed

    kaggle_csv(tmp_path / "good.csv", 10, seed=1)
    missing = tmp_path / "missing.csv"
    state = scoring_flow(
        inputs=[str(tmp_path / "good.csv"), str(missing)], output_dir=str(tmp_path / "out"),
        artifacts=str(trained), return_state=True,
    )  # fmt: skip
    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(state.state_details.flow_run_id).state
    assert recorded.is_failed()
    assert "1 of 2 input file(s) failed" in recorded.message and str(missing) in recorded.message
    assert str(tmp_path / "good.csv") not in recorded.message
    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, ScoringFailed)
    assert failed.summary["failed_files"] == 1 and failed.summary["scored"] == 10
    assert len(read_rows(tmp_path / "out" / "good.predictions.csv")) == 10
    assert "missing.csv" in latest_artifact("mnist-scoring-summary")


def test_rejected_rows_alone_leave_the_run_completed_and_are_in_its_artifact(trained, tmp_path):
    kaggle_csv(tmp_path / "dirty.csv", 5, seed=2, extra_lines=["1,2"])
    state = scoring_flow(
        inputs=[str(tmp_path / "dirty.csv")], output_dir=str(tmp_path / "out"),
        artifacts=str(trained), return_state=True,
    )  # fmt: skip
    assert state.is_completed()
    assert state.result()["rejected"] == 1
    table = json.loads(latest_artifact("mnist-scoring-summary"))
    (row,) = table
    assert row["rejected"] == 1 and row["rejects"] == str(tmp_path / "out" / "dirty.rejects.csv")


def test_on_dask_a_failed_file_also_fails_the_run_with_the_summary(trained, tmp_path):
    from flows.runners import run_on_runner
    from flows.scoring import ScoringFailed

    kaggle_csv(tmp_path / "good.csv", 10, seed=1)
    with pytest.raises(ScoringFailed, match="missing.csv") as caught:
        run_on_runner(
            scoring_flow, dask_local=1, inputs=[str(tmp_path / "good.csv"),
            str(tmp_path / "missing.csv")], output_dir=str(tmp_path / "out"),
            artifacts=str(trained),
        )  # fmt: skip
    assert caught.value.summary["scored"] == 10 and caught.value.summary["failed_files"] == 1
    assert len(read_rows(tmp_path / "out" / "good.predictions.csv")) == 10


def test_the_run_tells_what_happened_task_names_summary_rejects_and_a_warning(trained, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    kaggle_csv(tmp_path / "clean.csv", 6, seed=1, labels=True)
    bad = ["3," + ",".join(["0"] * 783) + ",300"] + [f"{k},1" for k in range(24)]
    kaggle_csv(tmp_path / "bad_rows.csv", 4, seed=2, labels=True, extra_lines=bad)
    kaggle_csv(tmp_path / "nolabels.csv", 3, seed=3)
    state = scoring_flow(
        inputs=[str(tmp_path / n) for n in ("clean.csv", "bad_rows.csv", "nolabels.csv")],
        output_dir=str(tmp_path / "out"), artifacts=str(trained), return_state=True,
    )  # fmt: skip
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    APILogHandler().flush()  # send the buffered logs before reading them
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        run_name = client.read_flow_run(run_id).name
    champion = json.loads((trained / "models" / "champion.json").read_text())["version"]
    assert run_name == f"score-3 files-{champion}"
    names = {t.name for t in tasks}
    assert {"score clean.csv", "score bad_rows.csv", "score nolabels.csv"} <= names
    by_key = {a.key: a for a in artifacts}
    assert all(a.key for a in artifacts), [a.type for a in artifacts if not a.key]
    table = json.loads(by_key["mnist-scoring-summary"].data)
    assert [Path(r["file"]).name for r in table] == ["clean.csv", "bad_rows.csv", "nolabels.csv"]
    digits = [f"digit {d}" for d in range(10)]
    for row in table:
        assert list(row) == ["file", "rows", "scored", "rejected", "output", "rejects",
                             *digits, "accuracy"]  # fmt: skip
        assert sum(row[d] for d in digits) == row["scored"]
    clean, dirty, plain = table
    assert (dirty["rows"], dirty["scored"], dirty["rejected"]) == (29, 4, 25)
    assert dirty["rejects"] == str(tmp_path / "out" / "bad_rows.rejects.csv")
    assert dirty["output"] == str(tmp_path / "out" / "bad_rows.predictions.csv")
    assert clean["rejects"] is None and clean["accuracy"] is not None
    assert plain["accuracy"] is None
    report = by_key["mnist-scoring-rejects"].data
    assert "bad_rows.csv" in report and "clean.csv" not in report
    assert "| ImageId | line | reason |" in report
    assert "| 5 | 6 | pixel783: 300 is outside 0-255 |" in report
    assert "| 24 | 25 | expected 785 fields, got 2 |" in report
    assert "| 25 | 26 |" not in report, "only the first 20"
    assert "... and 5 more" in report
    warnings = [log.message for log in logs if log.level == 30]
    assert any(str(tmp_path / "out" / "bad_rows.rejects.csv") in m for m in warnings), warnings
    # Where each output went, one INFO line each, for `--watch` and the UI.
    infos = {log.message for log in logs if log.level == 20}
    out = tmp_path / "out"
    for name in ("clean", "bad_rows", "nolabels"):
        source = tmp_path / f"{name}.csv"
        assert f"{source}: predictions written to {out / name}.predictions.csv" in infos, infos
    assert (
        f"{tmp_path / 'bad_rows.csv'}: rejects written to {out / 'bad_rows.rejects.csv'}" in infos
    )
    assert not any("clean.csv: rejects" in m for m in infos)


def test_without_labels_or_rejects_no_accuracy_column_and_no_rejects_report(trained, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    kaggle_csv(tmp_path / "a.csv", 3, seed=1)
    state = scoring_flow(inputs=[str(tmp_path / "a.csv")], output_dir=str(tmp_path / "out"),
                         artifacts=str(trained), return_state=True)  # fmt: skip
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert sorted(a.key for a in artifacts) == ["mnist-scoring-summary"]
    (row,) = json.loads(artifacts[0].data)
    assert "accuracy" not in row and "error" not in row and row["rejected"] == 0


def test_a_labelled_file_with_every_row_rejected_is_reported_not_a_crash(trained, tmp_path):
    """Regression: the labelled-inputs report formatted the accuracy of a file that had
    none (no row scored), and the flow died with a TypeError."""
    with open(tmp_path / "all_bad.csv", "w") as f:
        f.write("label," + HEADER + "\n1,2,3\n4,5\n")
    done = run_cli(
        "score", str(tmp_path / "all_bad.csv"), "--output-dir", str(tmp_path / "out"),
        "--artifacts", str(trained),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(read_rows(tmp_path / "out" / "all_bad.rejects.csv")) == 2
    assert "0/2 rows scored, 2 rejected" in done.stdout
