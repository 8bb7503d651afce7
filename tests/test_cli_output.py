"""What a user reads at the end of a command: the summary comes last, names the absolute
artifacts root, and says what the champion gate did; `make stack` ends cleanly on Ctrl-C."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, home_env


@pytest.mark.e2e
def test_the_summary_is_the_last_thing_printed_and_names_the_absolute_root(
    mirror: tuple[Path, Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    # stdout and stderr into one pipe, as a terminal shows them; a relative root, from
    # a folder that is not the checkout.
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "train", "--epochs", "1",
         "--mirror", str(mirror[0]), "--checksums", str(mirror[1]), "--artifacts", "arts"],
        cwd=workdir, env={**home_env(tmp_path / "home"), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    # Prefect's "Stopping temporary server" used to come after the summary.
    assert lines[-1].startswith("promoted: ") and lines[-1].endswith(
        " is the champion (first model: no champion yet)"
    ), lines[-4:]
    assert f"artifacts: {(workdir / 'arts').resolve()}" in lines[-5:]
    # With no API URL anywhere, the command ran on an embedded server of its own, whose
    # database it created in the root.
    assert "Starting temporary server" in done.stdout
    assert (workdir / "arts" / ".prefect" / "prefect.db").is_file()
    assert "Traceback" not in done.stdout


def test_models_list_names_the_folder_it_found_empty(tmp_path: Path, prefect_api: str) -> None:
    from tests.conftest import run_cli

    done = run_cli("models", "list", "--artifacts", str(tmp_path / "empty"))
    assert done.returncode == 0, done.stderr
    expected = f"no models yet in {tmp_path / 'empty' / 'models'}: run `mnist-pipeline train`"
    assert done.stdout.strip() == expected


@pytest.mark.parametrize(("code", "make_exit"), [(0, 0), (130, 0), (143, 0), (1, 2)])
def test_make_stack_takes_a_stop_by_signal_as_a_normal_end(
    tmp_path: Path, code: int, make_exit: int
) -> None:
    """The recipe itself, with a stand-in for the stack that exits as a stopped stack
    does (130 after Ctrl-C, 143 after SIGTERM): make must not report "Error 130"."""
    fake = tmp_path / "mnist-pipeline"
    fake.write_text(f"#!/bin/sh\nexit {code}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(
        # -o: treat the setup stamp as up to date; BIN: the stand-in's folder.
        ["make", "--no-print-directory", "-o", ".venv/.installed", "stack", f"BIN={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == make_exit, done.stderr
    assert ("Error" in done.stderr) == (make_exit != 0), done.stderr
