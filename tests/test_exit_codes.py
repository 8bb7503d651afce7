"""Issue 20, item 8: ``score``'s exit code says what happened.

2: the command cannot be what the user meant (a pattern that matches no file, a folder as
an input), refused before anything runs; 1: no input produced any output; 3: some rows or
files were rejected and the rest was written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.scoring.jobs import ScoringUsageError, expand_inputs
from tests.conftest import run_cli
from tests.support import TEST_HEADER, copy_root, image, line


@pytest.fixture(scope="module")
def trained(champion_root, tmp_path_factory):
    """An artifacts root with a champion trained on synthetic digits (the session's, copied)."""
    return copy_root(champion_root, tmp_path_factory.mktemp("exit-codes")) / "artifacts"


def digits_csv(path: Path, n: int = 3) -> Path:
    path.write_text("\n".join([TEST_HEADER] + [line(image(i)) for i in range(n)]) + "\n")
    return path


def score(trained: Path, out: Path, *inputs: str):
    return run_cli("score", *inputs, "--output-dir", str(out), "--artifacts", str(trained))


def errors(stderr: str) -> list[str]:
    """The command's own error lines (Prefect's log lines are not the command's)."""
    return [x for x in stderr.splitlines() if x.startswith("mnist-pipeline score: error:")]


# ----------------------------------------------------------------------------- 2: unusable


def test_a_pattern_that_matches_no_file_exits_2_before_anything_runs(trained, tmp_path):
    digits_csv(tmp_path / "digits.csv")
    pattern = str(tmp_path / "*.csv.gz")
    done = score(trained, tmp_path / "out", str(tmp_path / "digits.csv"), pattern)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"mnist-pipeline score: error: {pattern}: no file matches this pattern"
    ]
    assert not (tmp_path / "out").exists()


def test_a_folder_as_an_input_exits_2_before_anything_runs(trained, tmp_path):
    (tmp_path / "inputs").mkdir()
    digits_csv(tmp_path / "inputs" / "digits.csv")
    done = score(trained, tmp_path / "out", str(tmp_path / "inputs"))
    assert done.returncode == 2, done.stdout + done.stderr
    [message] = done.stderr.strip().splitlines()
    assert message.startswith(f"mnist-pipeline score: error: {tmp_path / 'inputs'} is a folder")
    assert str(tmp_path / "inputs" / "*.csv") in message  # what to type instead
    assert not (tmp_path / "out").exists()


def test_a_patterns_folders_are_left_out_and_a_pattern_of_folders_only_is_refused(tmp_path):
    (tmp_path / "a.csv").mkdir()  # a folder that the pattern matches too
    digits_csv(tmp_path / "b.csv")
    assert expand_inputs([str(tmp_path / "*.csv")]) == [tmp_path / "b.csv"]
    with pytest.raises(ScoringUsageError, match="no file matches"):
        expand_inputs([str(tmp_path / "a.*")])


def test_a_file_named_like_a_pattern_is_that_file(tmp_path):
    digits_csv(tmp_path / "scan[1].csv")  # the pattern "scan[1].csv" matches scan1.csv only
    assert expand_inputs([str(tmp_path / "scan[1].csv")]) == [tmp_path / "scan[1].csv"]


def test_a_missing_plain_path_is_still_reported_when_scoring_not_refused(tmp_path):
    assert expand_inputs([str(tmp_path / "later.csv")]) == [tmp_path / "later.csv"]


# ----------------------------------------------------------------------------- 1 or 3


@pytest.mark.parametrize(
    ("inputs", "reasons"),
    [
        (["missing.csv"], ["missing.csv: file not found"]),
        (["empty.csv"], ["empty.csv: is empty"]),
        (["missing.csv", "empty.csv"], ["missing.csv: file not found", "empty.csv: is empty"]),
    ],
)
def test_no_input_scored_exits_1(trained, tmp_path, inputs, reasons):
    (tmp_path / "empty.csv").write_bytes(b"")
    done = score(trained, tmp_path / "out", *(str(tmp_path / name) for name in inputs))
    assert done.returncode == 1, done.stdout + done.stderr
    assert errors(done.stderr) == [
        f"mnist-pipeline score: error: {tmp_path / reason}" for reason in reasons
    ]
    assert f"0 of 0 rows scored, 0 rejected, {len(inputs)} file(s) failed" in done.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_missing_store_object_alone_exits_1(trained, tmp_path, s3_bucket):
    absent = f"{s3_bucket}/in/absent.csv"
    done = score(trained, tmp_path / "out", absent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert errors(done.stderr) == [f"mnist-pipeline score: error: {absent}: file not found"]
    assert "Traceback" not in done.stderr


def test_a_failed_input_beside_a_scored_one_still_exits_3(trained, tmp_path):
    digits_csv(tmp_path / "good.csv")
    done = score(trained, tmp_path / "out", str(tmp_path / "good.csv"),
                 str(tmp_path / "missing.csv"))  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert (tmp_path / "out" / "good.predictions.csv").exists()
    assert "3 of 3 rows scored, 0 rejected, 1 file(s) failed" in done.stdout


def test_a_store_pattern_that_matches_no_object_is_refused(s3_bucket):
    with pytest.raises(ScoringUsageError, match="no file matches"):
        expand_inputs([f"{s3_bucket}/in/*.csv"])
