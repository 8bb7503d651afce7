"""The on-disk registry: versions, verified loading, and the champion gate."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
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
        "classes": list(range(10)),
        "data": {"source_sha256": {"train-images-idx3-ubyte": "ab" * 32}},
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
    with pytest.raises(
        ModelError, match=r"incompatible model bundle: 'params': layer 0: W has shape"
    ):
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
    ("wrap", "refusal"),
    [
        (lambda exploit: exploit, "pathlib.*touch"),
        (lambda exploit: {"params": [], "config": {"evil": [exploit]}}, "pathlib.*touch"),
        # an object array is refused by its dtype, before joblib reads any of its items
        (lambda exploit: {"params": np.array([exploit, 1], dtype=object)}, "dtype [|]O"),
    ],
    ids=["bare", "nested", "object-array"],
)
def test_a_malicious_bundle_with_a_matching_manifest_never_runs(tmp_path, wrap, refusal):
    version = registry.publish(tmp_path, bundle(0.9), {})
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    joblib.dump(wrap(Exploit(marker)), buffer)
    replace_bundle_and_manifest(tmp_path / version, buffer.getvalue())
    with pytest.raises(ModelError, match=rf"model.joblib: refused to load: .*{refusal}"):
        registry.load(tmp_path, version)
    assert not marker.exists(), "no code from the file may run"


def edit(key: str, value) -> Callable[[dict], dict]:
    """A change to a bundle: set ``key`` ("a" or "a.b") to ``value``, or delete it (DELETE)."""

    def change(saved: dict) -> dict:
        *path, last = key.split(".")
        target = saved
        for part in path:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
        return saved

    return change


DELETE = object()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (edit("metrics", DELETE), "'metrics' is missing"),
        (edit("metrics", [0.9]), "'metrics.test_accuracy' is missing"),
        (edit("metrics.test_accuracy", "high"), "'metrics.test_accuracy' is 'high', not a num"),
        (edit("metrics.test_accuracy", True), "'metrics.test_accuracy' is True, not a number"),
        (edit("metrics.test_accuracy", float("nan")), "'metrics.test_accuracy' is nan, not"),
        (edit("metrics.test_accuracy", 1.5), "'metrics.test_accuracy' is 1.5, not a number"),
        (edit("metrics.test_accuracy", 0.5), "'metrics.test_accuracy' is 0.5; its manifest"),
        (edit("metrics.validation_accuracy", -0.1), "'metrics.validation_accuracy' is -0.1"),
        (edit("config", DELETE), "'config' is missing"),
        (edit("config", "x" * 100), "'config' is 'xxxxxxxx"),
        (edit("config.hidden", ["ten"]), "'config': hidden must be an integer"),
        (edit("params", DELETE), "'params' is missing"),
        (edit("params", "junk"), "'params': "),
        (edit("version", DELETE), "'version' is missing"),
        (edit("version", 3), "'version' is 3, not a string"),
        (edit("version", "another"), "'version' is 'another'; its manifest says"),
        (edit("created", None), "'created' is None, not a string"),
        (edit("fingerprint", ["fp"]), "'fingerprint' is a list, not a string"),
        (edit("classes", [1, 2]), "'classes' is a list, not 0 to 9"),
        (edit("data", "x"), "'data.source_sha256' is missing or not a dict"),
        (edit("data.source_sha256", {"f": 1}), "'data.source_sha256' is missing or not a dict"),
        (lambda saved: [saved], "it holds a list, not a dict"),
    ],
)
def test_every_key_a_command_reads_is_checked_and_nothing_is_written(tmp_path, change, problem):
    champion = registry.publish(tmp_path, bundle(0.9), {})
    registry.promote(tmp_path, champion)
    record = (tmp_path / registry.CHAMPION).read_bytes()
    version = registry.publish(tmp_path, bundle(0.9), {})
    path = tmp_path / version / registry.BUNDLE
    buffer = io.BytesIO()
    joblib.dump(change(safe_load(path)), buffer)
    replace_bundle_and_manifest(tmp_path / version, buffer.getvalue())

    for attempt in (registry.load, registry.promote):
        with pytest.raises(ModelError) as caught:
            attempt(tmp_path, version)
        message = str(caught.value)
        assert message.startswith(f"{path}: incompatible model bundle: "), message
        assert problem in message and "\n" not in message, message
    assert (tmp_path / registry.CHAMPION).read_bytes() == record
    assert [r["version"] for r in registry.list_versions(tmp_path)] == [champion, version]


def test_a_manifest_without_version_or_created_is_one_clear_error(tmp_path):
    version = registry.publish(tmp_path, bundle(0.9), {})
    manifest_path = tmp_path / version / registry.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "created": 5}))
    with pytest.raises(ModelError, match=r"manifest.json: version or created is missing"):
        registry.load(tmp_path, version)
    assert registry.list_versions(tmp_path) == []


def test_promote_names_the_folder_even_when_its_manifest_names_another(tmp_path):
    original = registry.publish(tmp_path, bundle(0.9), {})
    shutil.copytree(tmp_path / original, tmp_path / "copy")  # same manifest and bundle
    registry.promote(tmp_path, "copy")
    assert registry.champion_version(tmp_path) == "copy"


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


# ----------------------------------------------------------------------------- write errors
# Issue 21, item 3: a publish that cannot write is the one-line OutputWriteError of every
# output (exit 1, no traceback), naming the version folder, never the hidden staging one.


def refused(code: int):
    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    return refuse


def published_error(models: Path) -> str:
    """The error of a publish into ``models`` that fails, with the version folder's name
    replaced by VERSION, once checked to be a one-line user error that left nothing."""
    from cli.console import USER_ERRORS
    from core.files import OutputWriteError

    with pytest.raises(OutputWriteError) as caught:
        registry.publish(models, bundle(0.9), {})
    assert isinstance(caught.value, USER_ERRORS) and not isinstance(caught.value, ModelError)
    assert os.listdir(models) == [] and registry.list_versions(models) == []
    [line] = str(caught.value).splitlines()
    version = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}"  # new_version_name's
    return re.sub(rf"^{re.escape(str(models))}/{version}", "VERSION", line)


def test_a_read_only_models_folder_names_the_version_not_the_staging_folder(tmp_path, monkeypatch):
    # Tests run as root, whom chmod does not stop: the refusal is injected where the
    # staging folder is made.
    real_mkdir, refuse = os.mkdir, refused(errno.EACCES)
    monkeypatch.setattr(
        os, "mkdir", lambda p, *a: (refuse if ".staging-" in str(p) else real_mkdir)(p, *a)
    )
    assert published_error(tmp_path) == "VERSION: could not write: permission denied"


def test_a_version_that_cannot_be_renamed_into_place_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "rename", refused(errno.EROFS))
    assert published_error(tmp_path) == "VERSION: could not write: read-only file system"


def test_a_file_of_the_version_that_cannot_be_written_is_named_in_the_version(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(os, "replace", refused(errno.ENOSPC))
    assert published_error(tmp_path) == (
        "VERSION/model.joblib: could not write: no space left on the device"
    )


# ----------------------------------------------------------------------------- the labeled gate
# Issue 22: `--promote-on labeled` against a champion measured on another holdout. The
# measure is the callback the promote step passes (core.evaluation's, tested with real
# models in test_labeled_flow.py); here plain functions stand for it.


def labeled_bundle(
    accuracy: float, labeled_accuracy=None, files: tuple[str, ...] = (), holdout=None
) -> dict:
    """A bundle as the training flow publishes it: learned from labeled ``files`` (each 10
    rows: 9 accepted, 2 of them held out), ``holdout`` of each held out."""
    lineage = [
        {"source": f"/in/{name}", "sha256": name[0] * 64, "rows": 10, "accepted": 9,
         "rejected": 1, "held_out": 2}
        for name in files
    ]  # fmt: skip
    made = bundle(accuracy)
    made["metrics"] = {
        "test_accuracy": accuracy, "labeled_holdout_accuracy": labeled_accuracy,
        "labeled_rows": 7 * len(files), "labeled": {d["source"]: labeled_accuracy for d in lineage},
    }  # fmt: skip
    if files:
        made["data"]["labeled_holdout"] = holdout
    made["labeled_data"] = lineage
    return made


def champion_manifest(files: tuple[str, ...] = (), holdout=None, learned: bool = True) -> dict:
    manifest = {"labeled_holdout": holdout, "labeled_data": []}
    for name in files:
        held_out = 2 if learned else 9
        manifest["labeled_data"].append(
            {"sha256": name[0] * 64, "accepted": 9, "held_out": held_out}
        )
    return manifest


@pytest.mark.parametrize(
    "champion, holdout, fair",
    [
        (champion_manifest(), 0.1, True),  # MNIST alone: it never saw a labeled row
        (champion_manifest(("a.csv",), 0.1), 0.1, True),  # same share: same rows held out
        (champion_manifest(("a.csv",), 0.2), 0.1, True),  # it held out more than we do
        (champion_manifest(("a.csv",), 0.1), 0.2, False),  # it trained on some of ours
        # No file in common by SHA-256 does not make it fair: a file grown in place is a
        # new file that holds the champion's rows (test_the_fairness_rule_holds_row_by_row).
        (champion_manifest(("z.csv",), 0.1), 0.2, False),
        (champion_manifest(("a.csv",), None), 0.1, False),  # a share nobody recorded
        (champion_manifest(("a.csv",), 0.1, learned=False), 0.5, True),  # learned no row
    ],
)
def test_the_fairness_rule(champion, holdout, fair):
    assert registry.holdout_is_fair(champion, holdout) is fair


def test_the_fairness_rule_holds_row_by_row():
    """Checked on real row keys: a file grows (a new SHA-256, the old rows in it); for
    every pair of shares, the rule calls the comparison fair exactly when no row the new
    run holds out was trained on by the champion, which learned from the old file."""
    from core.labeled import holdout_mask, row_keys

    rng = np.random.default_rng(0)
    old = rng.integers(0, 256, size=(400, 784), dtype=np.uint8)
    grown = np.concatenate([old, rng.integers(0, 256, size=(200, 784), dtype=np.uint8)])
    old_keys, grown_keys = row_keys(old), row_keys(grown)
    shares = (0.05, 0.1, 0.2, 0.5)
    for theirs in shares:
        trained = set(old_keys[~holdout_mask(old_keys, theirs)].tolist())
        for ours in shares:
            held_out = set(grown_keys[holdout_mask(grown_keys, ours)].tolist())
            champion = champion_manifest(("old.csv",), theirs)
            assert registry.holdout_is_fair(champion, ours) is (not trained & held_out), (
                theirs, ours,
            )  # fmt: skip


def test_the_labeled_gate_measures_a_champion_of_mnist_alone(tmp_path):
    champion = registry.publish(tmp_path, labeled_bundle(0.93), {})
    registry.promote_if_not_worse(tmp_path, champion)
    new = registry.publish(tmp_path, labeled_bundle(0.91, 0.55, ("a.csv",), 0.1), {})
    asked = []

    def measure(figure):
        def measured(record):
            asked.append(record["version"])
            return figure

        return measured

    worse = registry.promote_if_not_worse(
        tmp_path, new, gate="labeled", champion_holdout_accuracy=measure(0.6)
    )
    assert not worse["promoted"] and asked == [champion]
    assert worse["reason"] == (
        f"labeled holdout accuracy 0.5500 is lower than champion {champion}'s 0.6000 "
        "(measured on this run's holdout; labeled gate, tolerance 0.0); test accuracy "
        "0.9100, champion's 0.9300; kept but not promoted"
    )
    assert registry.promote_if_not_worse(
        tmp_path, new, tolerance=0.1, gate="labeled", champion_holdout_accuracy=measure(0.6)
    )["promoted"]
    registry.promote(tmp_path, champion)
    better = registry.promote_if_not_worse(
        tmp_path, new, gate="labeled", champion_holdout_accuracy=measure(0.3921)
    )
    assert better["promoted"] and registry.champion_version(tmp_path) == new
    assert better["reason"] == (
        f"labeled holdout accuracy 0.5500 is not lower than champion {champion}'s 0.3921 "
        "(measured on this run's holdout; labeled gate, tolerance 0.0); test accuracy "
        "0.9100, champion's 0.9300"
    )
    assert json.loads((tmp_path / registry.CHAMPION).read_text())["reason"] == better["reason"]


def test_the_labeled_gate_does_not_measure_when_it_need_not_or_must_not(tmp_path):
    champion = registry.publish(tmp_path, labeled_bundle(0.93, 0.5, ("a.csv",), 0.1), {})
    registry.promote_if_not_worse(tmp_path, champion)
    asked = []

    def measure(record):
        asked.append(record["version"])
        return 0.0

    def gate(files, holdout, measure=measure):
        new = registry.publish(tmp_path, labeled_bundle(0.9, 0.6, files, holdout), {})
        return registry.promote_if_not_worse(
            tmp_path, new, gate="labeled", champion_holdout_accuracy=measure
        )

    # The same holdout: the champion's recorded figure, in the same-holdout wording.
    same = gate(("a.csv",), 0.1)
    assert same["promoted"] and asked == []
    assert same["reason"].startswith(
        f"labeled holdout accuracy 0.6000 is not lower than champion {champion}'s 0.5000 "
        "(labeled gate, tolerance 0.0)"
    )
    # It trained on rows this run holds out: refused in one line, never measured.
    registry.promote(tmp_path, champion)
    unfair = gate(("a.csv", "b.csv"), 0.2)
    assert not unfair["promoted"] and asked == []
    assert unfair["reason"] == (
        "labeled gate: the champion was not measured on the same labeled holdout, and it "
        "learned from labeled rows that this run holds out (it held out 0.1 of each file's "
        "rows, this run 0.2), so the two cannot be compared; --force-promote promotes it anyway"
    )
    # Other files, a share no larger than the champion's: measured.
    other = gate(("a.csv", "b.csv"), 0.1)
    assert other["promoted"] and asked == [champion]
    assert "(measured on this run's holdout; labeled gate" in other["reason"]
    # No measure given (a caller without the run's files): the plain refusal.
    registry.promote(tmp_path, champion)
    alone = gate(("b.csv",), 0.1, measure=None)
    assert not alone["promoted"]
    assert alone["reason"] == (
        "labeled gate: the champion was not measured on the same labeled holdout, so the two "
        "cannot be compared; --force-promote promotes it anyway"
    )


def test_a_champion_that_cannot_be_measured_is_kept_in_one_line(tmp_path):
    champion = registry.publish(tmp_path, labeled_bundle(0.93), {})
    registry.promote_if_not_worse(tmp_path, champion)
    path = tmp_path / champion / registry.BUNDLE
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    new = registry.publish(tmp_path, labeled_bundle(0.9, 0.6, ("a.csv",), 0.1), {})

    def measure(record):
        return registry.load(tmp_path, record["version"]).params and 0.1

    decision = registry.promote_if_not_worse(
        tmp_path, new, gate="labeled", champion_holdout_accuracy=measure
    )
    assert not decision["promoted"] and registry.champion_version(tmp_path) == champion
    reason = decision["reason"]
    assert reason.startswith(f"labeled gate: champion {champion} cannot be measured ({path}: ")
    assert "SHA-256 does not match" in reason and "\n" not in reason
    assert reason.endswith("; --force-promote promotes it anyway")
    forced = registry.promote_if_not_worse(
        tmp_path, new, force=True, gate="labeled", champion_holdout_accuracy=measure
    )
    assert forced["promoted"] and registry.champion_version(tmp_path) == new


def test_the_measure_is_of_whichever_champion_is_current(s3_bucket):
    """On a store, a promotion that lands while this one measures makes its write fail;
    the decision is taken again, measuring the new champion."""
    from core.storage import location

    models = location(f"{s3_bucket}/root/models")
    first = registry.publish(models, labeled_bundle(0.93), {})
    registry.promote_if_not_worse(models, first)
    winner = registry.publish(models, labeled_bundle(0.94), {})
    new = registry.publish(models, labeled_bundle(0.9, 0.6, ("a.csv",), 0.1), {})
    figures = {first: 0.2, winner: 0.7}
    asked = []

    def measure(record):
        asked.append(record["version"])
        if len(asked) == 1:  # another run promotes while this one measures
            registry.promote(models, winner)
        return figures[record["version"]]

    decision = registry.promote_if_not_worse(
        models, new, gate="labeled", champion_holdout_accuracy=measure
    )
    assert asked == [first, winner]
    assert not decision["promoted"] and decision["previous"] == winner
    assert f"lower than champion {winner}'s 0.7000 (measured" in decision["reason"]
    assert registry.champion_version(models) == winner
