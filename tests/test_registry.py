"""The on-disk registry: versions, verified loading, and the champion gate."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest

from core import registry
from core.registry import ModelError
from core.safe_joblib import UnsafeFileError, safe_load
from model.config import preset
from model.network import init_params


def bundle(accuracy: float, hidden=(10,), fingerprint="fp") -> dict:
    config = preset("default", hidden=hidden)
    return {
        "params": init_params(config, np.random.default_rng(0)),
        "config": config.to_dict(),
        "metrics": {"test_accuracy": accuracy},
        "fingerprint": fingerprint,
        "created": "2026-11-28T00:00:00+00:00",
    }


def test_publish_then_load_round_trips(tmp_path):
    version = registry.publish(tmp_path, bundle(0.9), {})
    loaded = registry.load(tmp_path, version)
    assert loaded.version == version
    assert loaded.config.hidden == (10,)
    np.testing.assert_array_equal(loaded.params[0][0], bundle(0.9)["params"][0][0])
    assert registry.find_published(tmp_path, "fp") == tmp_path / version
    assert registry.find_published(tmp_path, "other") is None


def test_versions_sort_by_time_and_are_unique():
    names = [registry.new_version_name() for _ in range(200)]
    assert len(set(names)) == 200
    assert [n[:22] for n in names] == sorted(n[:22] for n in names)


def test_tampered_bundle_is_refused_before_unpickling(tmp_path):
    version = registry.publish(tmp_path, bundle(0.9), {})
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / version / registry.BUNDLE).write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ModelError, match=r"model.joblib: SHA-256 does not match its manifest"):
        registry.load(tmp_path, version)
    assert not marker.exists(), "the tampered file must never be unpickled"


def test_incompatible_bundle_is_a_clear_error(tmp_path):
    broken = bundle(0.9)
    broken["config"]["hidden"] = [32]  # weights are for 10 hidden units
    version = registry.publish(tmp_path, broken, {})
    with pytest.raises(ModelError, match=r"incompatible model bundle: layer 0: W has shape"):
        registry.load(tmp_path, version)


def test_missing_champion_and_unknown_version(tmp_path):
    with pytest.raises(ModelError, match=r"no champion model .*run `mnist-pipeline train` first"):
        registry.load(tmp_path)
    with pytest.raises(ModelError, match=r"model 'nope': no such version"):
        registry.load(tmp_path, "nope")


def test_champion_gate(tmp_path):
    good = registry.publish(tmp_path, bundle(0.95), {})
    first = registry.promote_if_not_worse(tmp_path, good)
    assert first["promoted"] and first["reason"] == "first model: no champion yet"

    worse = registry.publish(tmp_path, bundle(0.90), {})
    decision = registry.promote_if_not_worse(tmp_path, worse)
    assert not decision["promoted"] and "is lower than champion" in decision["reason"]
    assert registry.read_champion(tmp_path)["version"] == good

    assert registry.promote_if_not_worse(tmp_path, worse, tolerance=0.06)["promoted"]
    assert registry.read_champion(tmp_path)["version"] == worse

    registry.promote(tmp_path, good)  # rollback
    assert registry.read_champion(tmp_path)["version"] == good
    forced = registry.promote_if_not_worse(tmp_path, worse, force=True)
    assert forced["promoted"] and forced["reason"] == "promotion forced"

    rows = registry.list_versions(tmp_path)
    assert [r["version"] for r in rows] == sorted([good, worse])
    assert [r["champion"] for r in rows] == [False, True]
    assert json.loads((tmp_path / "champion.json").read_text())["version"] == worse


class Exploit:
    """A pickle that runs code when loaded: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def replace_bundle_and_manifest(version_dir: Path, payload: bytes) -> None:
    """What someone who can write the folder can do: swap the file, fix up its hash."""
    (version_dir / registry.BUNDLE).write_bytes(payload)
    manifest = json.loads((version_dir / registry.MANIFEST).read_text())
    manifest["files"][registry.BUNDLE] = hashlib.sha256(payload).hexdigest()
    (version_dir / registry.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda exploit: exploit,
        lambda exploit: {"params": [], "config": {"evil": [exploit]}},
        # joblib reads an object array's items with a nested unpickler: held to the same list
        lambda exploit: {"params": np.array([exploit, 1], dtype=object)},
    ],
    ids=["bare", "nested", "object-array"],
)
def test_a_malicious_bundle_with_a_matching_manifest_never_runs(tmp_path, wrap):
    version = registry.publish(tmp_path, bundle(0.9), {})
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    joblib.dump(wrap(Exploit(marker)), buffer)
    replace_bundle_and_manifest(tmp_path / version, buffer.getvalue())
    with pytest.raises(ModelError, match=r"model.joblib: refused to load: .* pathlib.*touch"):
        registry.load(tmp_path, version)
    assert not marker.exists(), "no code from the file may run"


def test_safe_load_keeps_arrays_scalars_and_plain_values(tmp_path):
    value = {
        "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(0, dtype=np.int64)],
        "scalars": (np.float64(0.5), np.int64(3), np.bool_(True)),
        "plain": {"s": "x", "i": 1, "f": 2.5, "b": False, "n": None, "bytes": b"\x00"},
    }
    joblib.dump(value, tmp_path / "v.joblib")
    loaded = safe_load(tmp_path / "v.joblib")
    np.testing.assert_array_equal(loaded["arrays"][0], value["arrays"][0])
    assert loaded["arrays"][0].dtype == np.float32
    assert loaded["scalars"] == value["scalars"] and loaded["plain"] == value["plain"]


def test_safe_load_refuses_what_is_not_a_joblib_file(tmp_path):
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle at all")
    with pytest.raises(UnsafeFileError, match=r"junk.joblib: not a readable joblib file"):
        safe_load(tmp_path / "junk.joblib")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON"),
        ("[]", "not a JSON object"),
        ("{}", "'version' is not a version name: None"),
        ('{"version": null}', "'version' is not a version name: None"),
        ('{"version": "/some/other/folder"}', "'version' is not a version name"),
        ('{"version": ".."}', "'version' is not a version name"),
        ('{"version": "nope", "test_accuracy": 0.9}', "names version nope, which is not in"),
        ("VERSION", "'test_accuracy' is missing or not a number"),
    ],
)
def test_a_malformed_champion_is_one_clear_error(tmp_path, content, problem):
    version = registry.publish(tmp_path, bundle(0.9), {})
    (tmp_path / registry.CHAMPION).write_text(
        content.replace("VERSION", json.dumps({"version": version}))
    )
    for read in (registry.read_champion, registry.load, registry.champion_version):
        with pytest.raises(ModelError) as caught:
            read(tmp_path)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / registry.CHAMPION}: ") and "\n" not in message
        assert problem in message and "models promote VERSION" in message
    with pytest.raises(ModelError, match="champion.json"):
        registry.promote_if_not_worse(tmp_path, version)
    # Listing still works, and promoting a version is the repair.
    assert [r["version"] for r in registry.list_versions(tmp_path)] == [version]
    registry.promote(tmp_path, version)
    assert registry.champion_version(tmp_path) == version


def test_a_champion_outside_the_registry_is_never_loaded(tmp_path):
    elsewhere = registry.publish(tmp_path / "other", bundle(0.9), {})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / registry.CHAMPION).write_text(
        json.dumps({"version": str(tmp_path / "other" / elsewhere), "test_accuracy": 0.9})
    )
    with pytest.raises(ModelError, match="'version' is not a version name"):
        registry.load(tmp_path / "models")


def test_only_versions_of_this_registry_can_be_promoted(tmp_path):
    mine = registry.publish(tmp_path / "models", bundle(0.9), {})
    registry.promote(tmp_path / "models", mine)
    theirs = registry.publish(tmp_path / "other", bundle(0.99), {})
    for ref in (str(tmp_path / "other" / theirs), theirs, f"../other/{theirs}", ".."):
        with pytest.raises(ModelError, match=r"is not a version in .*models list"):
            registry.promote(tmp_path / "models", ref)
    assert registry.champion_version(tmp_path / "models") == mine


def test_a_forced_promotion_repairs_a_broken_champion(tmp_path):
    version = registry.publish(tmp_path, bundle(0.9), {})
    (tmp_path / registry.CHAMPION).write_text("{}")
    decision = registry.promote_if_not_worse(tmp_path, version, force=True)
    assert decision["promoted"] and registry.champion_version(tmp_path) == version
