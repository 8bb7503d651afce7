"""The registry on an object store (a real S3 API: moto's server on loopback): versions
appear only once complete, loading verifies, and the champion changes by compare-and-swap."""

from __future__ import annotations

import json
import threading

import pytest

from core import registry
from core.registry import ModelError
from core.storage import etag, location
from tests.test_registry import bundle


@pytest.fixture
def models(s3_bucket):
    return location(f"{s3_bucket}/root/models")


def test_publish_load_list_and_resolve_by_name_and_url(models):
    version = registry.publish(models, bundle(0.9), {})
    loaded = registry.load(models, version)
    assert loaded.version == version and str(loaded.path) == f"{models}/{version}/model.joblib"
    assert registry.load(models, f"{models}/{version}").version == version
    assert registry.load(models, f"{models}/{version}/model.joblib").version == version
    assert [r["version"] for r in registry.list_versions(models)] == [version]
    assert registry.find_published(models, "fp") is not None


def test_an_interrupted_publish_leaves_no_version(models, tmp_path):
    """The bundle is uploaded, then an extra file cannot be read: no manifest, no version."""
    with pytest.raises(FileNotFoundError):
        registry.publish(models, bundle(0.9), {"metrics.json": location(tmp_path / "absent")})
    assert list(models.iterdir()), "the bundle was uploaded before the failure"
    assert registry.list_versions(models) == []
    with pytest.raises(ModelError, match="no champion"):
        registry.load(models)


def test_a_tampered_bundle_on_the_store_is_refused_naming_its_url(models):
    version = registry.publish(models, bundle(0.9), {})
    path = models / version / "model.joblib"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelError, match=rf"^{path}: SHA-256 does not match its manifest"):
        registry.load(models, version)


def test_champion_gate_on_the_store(models):
    good = registry.publish(models, bundle(0.95), {})
    assert registry.promote_if_not_worse(models, good)["promoted"]
    worse = registry.publish(models, bundle(0.90), {})
    decision = registry.promote_if_not_worse(models, worse)
    assert not decision["promoted"] and registry.champion_version(models) == good
    better = registry.publish(models, bundle(0.97), {})
    assert registry.promote_if_not_worse(models, better)["promoted"]
    assert registry.champion_version(models) == better
    registry.promote(models, good)  # rollback
    assert registry.champion_version(models) == good


def test_a_write_based_on_a_stale_read_is_refused(models):
    first = registry.publish(models, bundle(0.9), {})
    registry.promote_if_not_worse(models, first)
    tag = etag(models / "champion.json")
    winner = registry.publish(models, bundle(0.99), {})
    registry.promote_if_not_worse(models, winner)  # lands between our read and our write
    loser = registry.publish(models, bundle(0.95), {})
    assert not registry.write_champion(models, loser, 0.95, "stale decision", tag)
    assert registry.champion_version(models) == winner
    # Deciding again against the real champion: 0.95 < 0.99, so it is kept, not promoted.
    assert not registry.promote_if_not_worse(models, loser)["promoted"]


def test_concurrent_promotions_end_with_the_best_model(models):
    """Each promotion reads the champion, compares, and writes. Without compare-and-swap a
    slower, worse promotion that read an old champion could overwrite a better one."""
    accuracies = [0.91, 0.97, 0.93, 0.95, 0.92, 0.96]
    versions = [registry.publish(models, bundle(a), {}) for a in accuracies]
    barrier = threading.Barrier(len(versions))
    errors = []

    def promote(version):
        barrier.wait()
        try:
            registry.promote_if_not_worse(models, version)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    champion = json.loads((models / "champion.json").read_text())
    assert champion["version"] == versions[accuracies.index(max(accuracies))]
    assert champion["test_accuracy"] == max(accuracies)
