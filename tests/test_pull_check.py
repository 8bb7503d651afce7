"""The pull step of prefect.yaml: MNIST_PIPELINE_HOME must name a checkout of this project.

The worker end to end (a real server, `prefect deploy`, a process worker without the
variable) is in test_deployments.py; these check the step itself, without a backend.
"""

from pathlib import Path

import pytest
import yaml

from core.settings import SettingsError, is_checkout, pipeline_home
from flows.pull_check import enter_checkout
from tests.support import REPO

FIX = (
    f"start the worker with MNIST_PIPELINE_HOME={REPO} "
    "(the mnist-pipeline checkout its Python runs from)"
)


def problem(value: str) -> str:
    with pytest.raises(SettingsError) as raised:
        pipeline_home(value)
    return str(raised.value)


def fake_checkout(folder: Path, name: str = "mnist-pipeline") -> Path:
    (folder / "flows").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    for entry in ("training.py", "scoring.py"):
        (folder / "flows" / entry).write_text("")
    return folder


def test_prefect_yaml_pulls_through_the_check():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert config["pull"] == [
        {"flows.pull_check.enter_checkout": {"directory": "{{ $MNIST_PIPELINE_HOME }}"}}
    ]
    entrypoints = {d["entrypoint"].split(":")[0] for d in config["deployments"]}
    assert all((REPO / e).is_file() for e in entrypoints)


def test_this_repository_is_a_checkout_and_passes():
    assert is_checkout(REPO)
    assert pipeline_home(str(REPO)) == REPO


@pytest.mark.parametrize("value", ["", "   "])
def test_unset_says_what_to_set(value):
    assert problem(value) == f"MNIST_PIPELINE_HOME is not set on this worker: {FIX}"


def test_relative_path_is_refused(tmp_path, monkeypatch):
    fake_checkout(tmp_path / "co")
    monkeypatch.chdir(tmp_path)  # even where it would resolve: runs start elsewhere
    assert problem("co") == f"MNIST_PIPELINE_HOME=co is not an absolute path: {FIX}"


def not_a_checkout(folder: Path, kind: str) -> Path:
    if kind == "empty":
        folder.mkdir()
    elif kind == "other-project":
        fake_checkout(folder, name="other-project")
    elif kind == "no-entrypoint":
        fake_checkout(folder)
        (folder / "flows" / "scoring.py").unlink()
    elif kind == "bad-toml":
        folder.mkdir()
        (folder / "pyproject.toml").write_text("[project\n")
    return folder  # "missing": no folder at all


@pytest.mark.parametrize("kind", ["missing", "empty", "other-project", "no-entrypoint", "bad-toml"])
def test_a_folder_that_is_not_a_checkout_is_named(tmp_path, kind):
    folder = not_a_checkout(tmp_path / "home", kind)
    assert problem(str(folder)) == (
        f"MNIST_PIPELINE_HOME={folder} is not a checkout of mnist-pipeline: {FIX}"
    )


def test_enter_checkout_moves_the_run_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = fake_checkout(tmp_path / "checkout")
    assert enter_checkout(str(home)) == {"directory": str(home)}
    assert Path.cwd() == home


def test_enter_checkout_outside_a_flow_run_raises_the_line(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as raised:
        enter_checkout("")
    assert str(raised.value) == f"MNIST_PIPELINE_HOME is not set on this worker: {FIX}"
    assert Path.cwd() == tmp_path
