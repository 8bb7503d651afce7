"""The registry's trust boundary through the CLI: a model file never runs code, and
champion.json names only versions of its own registry. Each failure is one line, exit 2."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

import joblib
import pytest

from core import registry
from tests.conftest import run_cli
from tests.support import synthetic_digits, train_champion

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, prefect_api):
    """A mirror and an artifacts root with one champion trained on synthetic digits."""
    return train_champion(tmp_path_factory.mktemp("trust"), epochs=2)


@pytest.fixture
def root(trained_once, tmp_path):
    """A private copy of the trained root, free to be tampered with."""
    shutil.copytree(trained_once, tmp_path / "root")
    return tmp_path / "root"


def champion_dir(root):
    models = root / "artifacts" / "models"
    return models / json.loads((models / registry.CHAMPION).read_text())["version"]


def digits_csv(path):
    images, _ = synthetic_digits(5, seed=3)
    lines = [",".join(map(str, row)) for row in images.reshape(5, 784)]
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class RunsAShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_malicious_model_with_a_matching_manifest_is_refused_unrun(root, tmp_path):
    version_dir = champion_dir(root)
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    joblib.dump({"params": RunsAShellCommand(f"touch {marker}")}, buffer)
    (version_dir / registry.BUNDLE).write_bytes(buffer.getvalue())
    manifest = json.loads((version_dir / registry.MANIFEST).read_text())
    manifest["files"][registry.BUNDLE] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (version_dir / registry.MANIFEST).write_text(json.dumps(manifest))

    csv = digits_csv(tmp_path / "d.csv")
    artifacts = str(root / "artifacts")
    for model in ([], ["--model", str(version_dir)], ["--model", version_dir.name]):
        done = run_cli("score", str(csv), "--output", str(tmp_path / "p.csv"),
                       "--artifacts", artifacts, *model)  # fmt: skip
        assert_one_line_error(done, str(version_dir / registry.BUNDLE), "system")
        assert not marker.exists(), "the command in the file must never run"
    assert not (tmp_path / "p.csv").exists()


def test_a_broken_champion_is_one_line_everywhere_and_promote_repairs_it(root, tmp_path):
    artifacts = root / "artifacts"
    champion = artifacts / "models" / registry.CHAMPION
    version = champion_dir(root).name
    champion.write_text("{}")
    csv = digits_csv(tmp_path / "d.csv")

    scored = run_cli("score", str(csv), "--output", str(tmp_path / "p.csv"),
                     "--artifacts", str(artifacts))  # fmt: skip
    assert_one_line_error(scored, str(champion), "'version' is not a version name")

    listed = run_cli("models", "list", "--artifacts", str(artifacts))
    assert_one_line_error(listed, str(champion), "models promote VERSION")
    assert version in listed.stdout, "the versions are still listed"

    trained = run_cli("train", "--epochs", "2", "--mirror", str(root / "mirror"),
                      "--checksums", str(root / "mirror" / "SHA256SUMS.raw"),
                      "--artifacts", str(artifacts))  # fmt: skip
    assert_one_line_error(trained, str(champion))

    repaired = run_cli("models", "promote", version, "--artifacts", str(artifacts))
    assert repaired.returncode == 0, repaired.stderr
    listed = run_cli("models", "list", "--artifacts", str(artifacts))
    assert listed.returncode == 0, listed.stderr
    assert f"* {version}" in listed.stdout


def test_a_champion_without_its_metrics_stops_the_promote_step_in_one_line(root):
    artifacts = root / "artifacts"
    champion = artifacts / "models" / registry.CHAMPION
    champion.write_text(json.dumps({"version": champion_dir(root).name}))
    done = run_cli("train", "--epochs", "3", "--mirror", str(root / "mirror"),
                   "--checksums", str(root / "mirror" / "SHA256SUMS.raw"),
                   "--artifacts", str(artifacts))  # fmt: skip
    assert_one_line_error(done, str(champion), "'test_accuracy' is missing")


def test_promoting_a_folder_from_another_registry_is_refused(root, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(root / "artifacts" / "models", other)
    before = (root / "artifacts" / "models" / registry.CHAMPION).read_text()
    stranger = other / champion_dir(root).name
    done = run_cli("models", "promote", str(stranger), "--artifacts", str(root / "artifacts"))
    assert_one_line_error(done, "is not a version in", "models list")
    assert (root / "artifacts" / "models" / registry.CHAMPION).read_text() == before
