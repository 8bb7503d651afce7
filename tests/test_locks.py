"""The locks: one universal runtime lock with hashes, the dev tools apart, both in step with
pyproject.toml. `make lock` regenerates them (README, "The locks"); these catch a lock that
was edited by hand, compiled for one machine only, or left behind by pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from itertools import product

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEV_TOOLS = {"pytest", "ruff", "hypothesis", "iniconfig"}
# Every supported Python on the platforms the README promises.
ENVIRONMENTS = [
    {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": system,
        "platform_system": {"linux": "Linux", "darwin": "Darwin"}[system],
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    for version, system, machine in product(
        ["3.11", "3.12", "3.13"], ["linux", "darwin"], ["x86_64", "aarch64"]
    )
]


def pins(lock: str) -> list[tuple[str, str, str, int]]:
    """(name, version, marker, number of hashes) for each requirement of a lock file."""
    text = (REPO / lock).read_text()
    found = []
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.splitlines()[0]
        if first.startswith("#"):
            continue
        requirement = Requirement(first.rstrip(" \\"))
        (spec,) = requirement.specifier
        assert spec.operator == "==", first
        found.append(
            (
                canonicalize_name(requirement.name),
                spec.version,
                str(requirement.marker or ""),
                entry.count("--hash=sha256:"),
            )
        )
    return found


def applying(lock: str, env: dict[str, str]) -> dict[str, str]:
    """name -> version of the pins that an environment installs; at most one each."""
    chosen: dict[str, str] = {}
    for name, version, marker, _ in pins(lock):
        if not marker or Marker(marker).evaluate(env):
            assert name not in chosen, f"{lock}: two pins of {name} apply to {env}"
            chosen[name] = version
    return chosen


def declared(requirements: list[str]) -> dict[str, str]:
    parsed = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in parsed}


def test_python_311_and_newer_is_accepted():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_is_exact_and_hashed(lock):
    found = pins(lock)
    assert found
    assert [name for name, _, _, hashes in found if hashes == 0] == []


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_locks_say_how_they_are_made(lock):
    assert "#    make lock\n" in (REPO / lock).read_text()


def test_the_runtime_lock_holds_no_dev_tool():
    assert DEV_TOOLS & {name for name, *_ in pins("requirements.lock")} == set()


@pytest.mark.parametrize(
    "env",
    ENVIRONMENTS,
    ids=lambda e: f"{e['python_version']}-{e['sys_platform']}-{e['platform_machine']}",
)
def test_each_environment_gets_pyproject_versions_from_the_locks(env):
    runtime = applying("requirements.lock", env)
    dev = applying("requirements-dev.lock", env)
    for name, version in declared(PYPROJECT["project"]["dependencies"]).items():
        assert runtime.get(name) == version, name
    for name, version in declared(PYPROJECT["dependency-groups"]["dev"]).items():
        assert dev.get(name) == version, name
    shared = runtime.keys() & dev.keys()
    assert {n: runtime[n] for n in shared} == {n: dev[n] for n in shared}
