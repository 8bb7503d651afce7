"""The on-disk registry: versions, verified loading, and the champion gate."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from model.config import preset
from model.network import init_params
from tasks import registry
from tasks.registry import ModelError


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
