"""Cache keys cover the code a step can reach: an edit anywhere in it is never a stale hit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.code_digest import INGEST_PACKAGES, MODEL_PACKAGES
from tests.support import REPO

PACKAGES = ("cli", "core", "flows", "model", "tasks")


def copy_source(dest: Path) -> Path:
    """The project's packages, copied to ``dest`` so that a test can edit them."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


def python(source: Path, code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports the packages from ``source``."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def project_packages_imported_by(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"root = {str(REPO)!r}\n"
        "def ours(f): return f.startswith(root + '/') and not f.startswith(sys.prefix)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n, m in list(sys.modules.items())\n"
        "    if ours(getattr(m, '__file__', None) or '')})))\n"
    )
    return set(json.loads(python(REPO, code)))


@pytest.mark.e2e  # fresh interpreters
def test_the_digested_packages_are_all_that_each_step_can_reach():
    ingest = project_packages_imported_by(["tasks.ingest"])
    assert ingest <= set(INGEST_PACKAGES)
    assert "model" not in ingest, "an edit in model/ must keep ingestion Cached"
    steps = project_packages_imported_by(["tasks.train", "tasks.evaluate", "tasks.publish"])
    assert steps <= set(MODEL_PACKAGES)


def digests(source: Path) -> dict[str, str]:
    code = (
        "import json\n"
        "from core.code_digest import code_digest, INGEST_PACKAGES, MODEL_PACKAGES\n"
        "print(json.dumps({'ingest': code_digest(INGEST_PACKAGES),"
        " 'model': code_digest(MODEL_PACKAGES)}))\n"
    )
    return json.loads(python(source, code))


@pytest.mark.e2e  # fresh interpreters
def test_digest_follows_the_source_not_its_location(tmp_path):
    a = copy_source(tmp_path / "a")
    b = copy_source(tmp_path / "b")
    assert digests(a) == digests(b) == digests(REPO), "same source, same key, wherever it lies"

    metrics = b / "model" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# a comment is an edit too\n")
    edited = digests(b)
    assert edited["model"] != digests(a)["model"]
    assert edited["ingest"] == digests(a)["ingest"], "model/ is not ingestion's code"

    (b / "core" / "idx.py").write_text((b / "core" / "idx.py").read_text() + "\n# edit\n")
    assert digests(b)["ingest"] != edited["ingest"]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_api")
def test_an_edit_to_code_a_step_calls_indirectly_reruns_it(tmp_path, mirror):
    """The issue's reproduction: train, make ``accuracy()`` (called by evaluate through
    model.metrics) return 0.123, train again: evaluate and what follows must run again."""
    source = copy_source(tmp_path / "src")
    command = [
        sys.executable, "-m", "cli.main", "train", "--epochs", "2",
        "--mirror", str(mirror[0]), "--checksums", str(mirror[1]),
        "--artifacts", str(tmp_path / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(source)}

    def train() -> tuple[dict[str, str], str]:
        done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        steps = dict(
            re.findall(r"^(\S+(?: \S+)?)\s+(Completed|Cached|Failed)\s", done.stdout, re.M)
        )
        return steps, re.search(r"test accuracy (\S+),", done.stdout).group(1)

    first, accuracy = train()
    assert set(first.values()) == {"Completed"} and accuracy != "0.1230"

    metrics = source / "model" / "metrics.py"
    text = metrics.read_text()
    edited = text.replace("return float(np.mean(y_true == y_pred))", "return 0.123")
    assert edited != text
    metrics.write_text(edited)

    second, accuracy = train()
    assert accuracy == "0.1230", "the edited code ran"
    for step in ("train", "evaluate", "persist", "promote"):
        assert second[step] == "Completed", second
    assert {s for step, s in second.items() if step.startswith(("download", "convert"))} == {
        "Cached"
    }, "an edit confined to model/ keeps ingestion Cached"
