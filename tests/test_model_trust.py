"""The registry's trust boundary through the CLI: a model file never runs code nor crashes
the command, its metadata is checked like its weights, and champion.json names only
versions of its own registry. Each failure is one line, exit 2, and nothing is written."""

from __future__ import annotations

import io
import json
import os
import shutil

import joblib
import pytest

from core import registry
from core.safe_joblib import safe_load
from tests.conftest import run_cli
from tests.support import copy_root, synthetic_digits
from tests.test_registry import replace_bundle_and_manifest
from tests.test_safe_joblib import ForgedArray

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def root(champion_root, tmp_path):
    """A private copy of the session's trained root (a mirror and an artifacts root with one
    champion trained on synthetic digits), free to be tampered with."""
    return copy_root(champion_root, tmp_path / "root")


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


def rewrite_bundle(version_dir, change):
    """Replace the version's model.joblib by ``change(its bundle)``, manifest fixed up."""
    buffer = io.BytesIO()
    joblib.dump(change(safe_load(version_dir / registry.BUNDLE)), buffer)
    replace_bundle_and_manifest(version_dir, buffer.getvalue())


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
    replace_bundle_and_manifest(version_dir, buffer.getvalue())

    csv = digits_csv(tmp_path / "d.csv")
    artifacts = str(root / "artifacts")
    for model in ([], ["--model", str(version_dir)], ["--model", version_dir.name]):
        done = run_cli("score", str(csv), "--output", str(tmp_path / "p.csv"),
                       "--artifacts", artifacts, *model)  # fmt: skip
        assert_one_line_error(done, str(version_dir / registry.BUNDLE), "system")
        assert not marker.exists(), "the command in the file must never run"
    assert not (tmp_path / "p.csv").exists()


def with_forged_dtype(bundle):
    bundle["config"]["seed"] = ForgedArray()  # an array whose element is a pointer: b"A" * 8
    return bundle


def test_a_model_with_a_forged_dtype_is_refused_without_crashing(root, tmp_path):
    """The model names only NumPy's allowed array builders, yet used to crash both commands
    (SIGSEGV, exit 139): reading an element followed a pointer taken from the file."""
    version_dir = champion_dir(root)
    rewrite_bundle(version_dir, with_forged_dtype)
    artifacts = str(root / "artifacts")
    champion = (root / "artifacts" / "models" / registry.CHAMPION).read_bytes()

    scored = run_cli("score", str(digits_csv(tmp_path / "d.csv")), "--output",
                     str(tmp_path / "p.csv"), "--artifacts", artifacts,
                     "--model", str(version_dir))  # fmt: skip
    promoted = run_cli("models", "promote", version_dir.name, "--artifacts", artifacts)
    for done in (scored, promoted):
        assert_one_line_error(done, str(version_dir / registry.BUNDLE), "dtype")
    assert not (tmp_path / "p.csv").exists()
    assert (root / "artifacts" / "models" / registry.CHAMPION).read_bytes() == champion


def without_metrics(bundle):
    del bundle["metrics"]
    return bundle


def with_accuracy_high(bundle):
    bundle["metrics"]["test_accuracy"] = "high"
    return bundle


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (without_metrics, "'metrics' is missing"),
        (with_accuracy_high, "'metrics.test_accuracy' is 'high', not a number in [0, 1]"),
    ],
)
def test_a_bundle_with_bad_metadata_is_one_line_and_never_promoted(root, tmp_path, change, problem):
    version_dir = champion_dir(root)
    rewrite_bundle(version_dir, change)
    artifacts = str(root / "artifacts")
    champion = root / "artifacts" / "models" / registry.CHAMPION
    before = champion.read_bytes()

    scored = run_cli("score", str(digits_csv(tmp_path / "d.csv")),
                     "--output", str(tmp_path / "p.csv"), "--artifacts", artifacts)  # fmt: skip
    promoted = run_cli("models", "promote", version_dir.name, "--artifacts", artifacts)
    for done in (scored, promoted):
        assert_one_line_error(done, str(version_dir / registry.BUNDLE), problem)
    assert champion.read_bytes() == before, "a refused promotion writes nothing"
    assert not (tmp_path / "p.csv").exists()
    listed = run_cli("models", "list", "--artifacts", artifacts)
    assert listed.returncode == 0, listed.stderr
    assert f"* {version_dir.name}" in listed.stdout


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
