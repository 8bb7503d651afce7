"""Importing the project: no import cycle, and no MNIST_* setting read at import time.

A setting read at import broke every command that imported its module: a bad
MNIST_TRAINING_TIMEOUT stopped `train --help`, and flows.deployments and flows.training
imported each other for the timeout constants.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support import REPO

PACKAGES = ("core", "flows", "tasks", "cli", "model")


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (a package by its own)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (in functions too, and
    each one's parent packages, which Python imports first)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                package = name.split(".")[: len(name.split(".")) - node.level + 1]
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if m in modules and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path for each import cycle found by a depth-first search, e.g. [a, b, a]."""
    found, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                found.append([*path[path.index(dependency) :], dependency])
            elif dependency not in state:
                visit(dependency, [*path, dependency])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_project_has_no_import_cycle():
    modules = project_modules()
    assert {"core.settings", "flows.training", "flows.deployments", "cli.main"} <= set(modules)
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "flows.training" in graph["flows.deployments"]  # imported inside a function
    assert cycles(graph) == []


_IMPORT_ALL = """
import importlib, os, sys

class NoSettingsAtImport(type(os.environ)):
    def __getitem__(self, key):
        if key.startswith("MNIST_"):
            raise AssertionError(f"{key} read at import time")
        return super().__getitem__(key)

os.environ.__class__ = NoSettingsAtImport
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def test_importing_any_module_reads_no_setting():
    names = [name for name in project_modules() if not name.endswith("__main__")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *names],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


BAD_TIMEOUT = {"MNIST_TRAINING_TIMEOUT": "abc"}


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["train", "--help"]])
def test_a_bad_time_limit_does_not_stop_help(args):
    done = run_cli(*args, env=BAD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mnist-pipeline")


def test_a_bad_time_limit_stops_the_command_that_runs_that_flow(tmp_path):
    done = run_cli("train", "--artifacts", str(tmp_path), env=BAD_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr == (
        "mnist-pipeline train: error: MNIST_TRAINING_TIMEOUT='abc': expected seconds "
        "(0 for no limit), e.g. 3600\n"
    )
    assert not list(tmp_path.iterdir()), "nothing started"


def test_a_flows_time_limit_is_read_when_a_run_starts(monkeypatch):
    # Prefect reads timeout_seconds as a run starts; the CLI's with_options (a task
    # runner) keeps the limit in force then.
    from flows.scoring import scoring_flow
    from flows.training import training_flow

    monkeypatch.setenv("MNIST_TRAINING_TIMEOUT", "90")
    assert training_flow.timeout_seconds == 90.0
    monkeypatch.setenv("MNIST_SCORING_TIMEOUT", "7")
    assert scoring_flow.with_options(retries=0).timeout_seconds == 7.0
    monkeypatch.setenv("MNIST_SCORING_TIMEOUT", "0")
    assert scoring_flow.timeout_seconds is None
