"""Issue 20, item 7: an output that cannot be written is one line naming it, and exit 1.

A full disk and a read-only folder are real where a tmpfs can be mounted (tests run as
root, whom chmod does not stop; a read-only mount does); elsewhere the fault is injected
at the write boundary. Every mount is undone when its test ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import registry
from core.errors import PipelineError
from core.files import atomic_path, atomic_write_text
from core.scoring.score_file import score_file
from tests.conftest import run_cli
from tests.support import TEST_HEADER, copy_root, image, line, linear_softmax

N_ROWS = 2000  # ~30 kB of predictions: more than the small disk holds
SMALL_DISK = "16k"


@contextlib.contextmanager
def tmpfs(folder: Path, read_only: bool = False) -> Iterator[Path]:
    """``folder`` as a new tmpfs of SMALL_DISK; skipped where mounting is impossible,
    except on CI, where it must work."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(folder)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode:
        why = f"cannot mount a tmpfs: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[Path]:
    """``folder`` on a small tmpfs with no space left in it."""
    with tmpfs(folder) as disk:
        with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while f.write(b"x" * 4096):  # until ENOSPC
                pass
        yield disk


def digits_csv(path: Path, n: int) -> Path:
    path.write_text("\n".join([TEST_HEADER] + [line(image(i)) for i in range(n)]) + "\n")
    return path


# ----------------------------------------------------------------------------- in-process


def test_scoring_onto_a_full_disk_names_the_output_and_counts_the_rows_read(tmp_path):
    src = digits_csv(tmp_path / "digits.csv", N_ROWS)
    with tmpfs(tmp_path / "out") as out:
        output = out / "digits.predictions.csv"
        with pytest.raises(PipelineError) as caught:
            score_file(src, output, out / "digits.rejects.csv", linear_softmax)
        assert str(caught.value) == f"{output}: could not write: no space left on the device"
        assert caught.value.rows_read == N_ROWS
        assert os.listdir(out) == []  # the temporary is gone


def test_scoring_when_the_rename_fails_keeps_the_previous_output(tmp_path, monkeypatch):
    src = digits_csv(tmp_path / "digits.csv", 5)
    output = tmp_path / "out.csv"
    output.write_text("previous,run\n")

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(PipelineError) as caught:
        score_file(src, output, tmp_path / "rejects.csv", linear_softmax, chunk_rows=2)
    assert str(caught.value) == f"{output}: could not write: no space left on the device"
    assert caught.value.rows_read == 5
    assert output.read_text() == "previous,run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.csv", "out.csv"]


def test_the_scoring_error_crosses_processes_with_its_count():
    from core.scoring.score_file import ScoringOutputError

    error = ScoringOutputError("/out/a.csv", "permission denied", errno.EACCES, 42)
    copy = pickle.loads(pickle.dumps(error))  # Dask workers and Prefect results pickle it
    assert type(copy) is ScoringOutputError and str(copy) == str(error)
    assert (copy.errno, copy.rows_read) == (errno.EACCES, 42)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_only_a_transient_write_error_is_retried(code):
    from core.files import OutputWriteError
    from tasks.scoring import _transient_io_error

    class FailedState:
        def result(self):
            raise OutputWriteError("/out/a.csv", os.strerror(code), code)

    assert _transient_io_error(None, None, FailedState()) is (code == errno.EIO)


def write_model(folder: Path) -> None:
    with atomic_path(folder / "model.joblib") as tmp:
        joblib.dump({"weights": np.zeros(4096)}, tmp)


def write_parquet(folder: Path) -> None:
    with atomic_path(folder / "train.parquet") as tmp:
        pq.write_table(pa.table({"label": np.arange(4096)}), tmp)


def write_champion(folder: Path) -> None:
    registry.write_champion(folder, "20240101-000000-abcdef", 0.9, "test")


def write_report(folder: Path) -> None:
    atomic_write_text(folder / "report.md", "# report\n")


# (what writes, the output it writes)
WRITERS = [
    (write_model, "model.joblib"),
    (write_parquet, "train.parquet"),
    (write_champion, "champion.json"),
    (write_report, "report.md"),
]


@pytest.mark.parametrize(("write", "name"), WRITERS, ids=[name for _, name in WRITERS])
def test_every_atomic_write_onto_a_full_disk_names_its_output(tmp_path, write, name):
    with full_disk(tmp_path / "disk") as disk:
        with pytest.raises(PipelineError) as caught:
            write(disk)
        assert str(caught.value) == f"{disk / name}: could not write: no space left on the device"
        assert os.listdir(disk) == ["filler"]


@pytest.mark.parametrize(("write", "name"), WRITERS, ids=[name for _, name in WRITERS])
def test_every_atomic_write_into_a_read_only_folder_names_its_output(tmp_path, write, name):
    with tmpfs(tmp_path / "disk", read_only=True) as disk:
        with pytest.raises(PipelineError) as caught:
            write(disk)
    assert str(caught.value) == f"{disk / name}: could not write: read-only file system"


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def trained(champion_root, tmp_path_factory):
    """An artifacts root with a champion trained on synthetic digits (the session's, copied)."""
    return copy_root(champion_root, tmp_path_factory.mktemp("write-errors")) / "artifacts"


def errors(stderr: str) -> list[str]:
    """The command's own error lines (Prefect's log lines are not the command's)."""
    return [x for x in stderr.splitlines() if x.startswith("mnist-pipeline score: error:")]


def test_score_onto_a_full_disk_is_one_line_naming_the_output_and_exit_1(trained, tmp_path):
    src = digits_csv(tmp_path / "digits.csv", N_ROWS)
    with tmpfs(tmp_path / "out") as out:
        done = run_cli("score", str(src), "--output-dir", str(out), "--artifacts", str(trained))
        leftovers = os.listdir(out)
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = errors(done.stderr)
    output = out / "digits.predictions.csv"
    assert error == (
        f"mnist-pipeline score: error: {output}: could not write: no space left on the device"
    )
    assert f"0 of {N_ROWS} rows scored, 0 rejected, 1 file(s) failed" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert leftovers == []


def test_score_into_a_read_only_folder_names_the_output_not_the_temporary(trained, tmp_path):
    src = digits_csv(tmp_path / "digits.csv", 5)
    with tmpfs(tmp_path / "out", read_only=True) as out:
        done = run_cli("score", str(src), "--output-dir", str(out), "--artifacts", str(trained))
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = errors(done.stderr)
    output = out / "digits.predictions.csv"
    assert error == f"mnist-pipeline score: error: {output}: could not write: read-only file system"
    assert "Traceback" not in done.stderr
    assert ".digits.predictions.csv." not in done.stderr  # the temporary's name, nowhere
