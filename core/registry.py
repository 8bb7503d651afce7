"""The model registry on disk: versioned bundles, manifests, verified loading, the champion.

``models/<version>/model.joblib`` holds the weights and everything needed to trust them;
``manifest.json`` beside it records the bundle's SHA-256, which catches accidents (a
truncated copy, a flipped bit). It cannot stop someone who can write the folder, since
they can rewrite the manifest too; what does is that bundles are read with
``core.safe_joblib.safe_load``, which never imports or calls anything but NumPy's array
builders. ``models/champion.json`` names the version that scoring uses by default. It is
data, checked like input: it must name a version of this registry by its plain name. On
disk it changes under a file lock, so two training runs finishing at once cannot
interleave their promotions.

On an object store (``core.storage``) there is no rename and no lock. A version's files
are uploaded one by one with ``manifest.json`` last, and a version exists only once its
manifest does, so an interrupted publish is invisible. The champion changes by
compare-and-swap: its ETag is read before the record, and the new record is written with
If-Match (If-None-Match when there is none yet); when another promotion landed in
between, the write is refused and the decision is taken again against the new champion.
A store without conditional writes fails the promotion with a StorageError rather than
risk a lost update.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import joblib

from core.errors import PipelineError
from core.files import (
    OutputWriteError,
    atomic_path,
    atomic_write_text,
    copy_file,
    fsync,
    seal,
    sha256_file,
    writing,
)
from core.safe_joblib import UnsafeFileError, safe_load
from core.storage import (
    Location,
    StorageError,
    conditional_put,
    etag,
    is_remote,
    location,
    store_errors,
)
from model.config import ModelConfig
from model.network import Params, check_params

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; promotions there are not serialized
    fcntl = None

BUNDLE = "model.joblib"
MANIFEST = "manifest.json"
CHAMPION = "champion.json"


class ModelError(PipelineError):
    """A model that cannot be used: missing, tampered, or incompatible."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    path: Location
    config: ModelConfig
    params: Params
    bundle: dict[str, Any]


def new_version_name() -> str:
    """A name that sorts by creation time and stays unique within the same second."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond:06d}Z-{secrets.token_hex(2)}"


def publish(models_dir: Location, bundle: dict[str, Any], extra_files: dict[str, Location]) -> str:
    """Write a new version folder (bundle, manifest, extra files) atomically; return its name.

    On disk everything is assembled in a hidden folder and renamed into place, so a version
    folder that exists is complete; on a store the manifest is uploaded last. A write that
    fails is an OutputWriteError naming the version folder (or a file in it).
    """
    version = new_version_name()
    version_dir = models_dir / version
    bundle = {**bundle, "version": version}
    if is_remote(models_dir):
        _write_version(version_dir, bundle, extra_files)
    else:
        staging = models_dir / f".staging-{version}"
        try:
            with writing(version_dir):
                models_dir.mkdir(parents=True, exist_ok=True)
                staging.mkdir()
            _write_version(staging, bundle, extra_files)
            with writing(version_dir):
                os.rename(staging, version_dir)
        except OutputWriteError as err:  # the user never asked for the staging folder
            shown = err.dest.replace(str(staging), str(version_dir), 1)
            raise OutputWriteError(shown, err.reason, err.errno) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed
        with contextlib.suppress(OSError):  # makes the rename last; best effort
            fsync(models_dir)
    seal(version_dir / BUNDLE)
    return version


def _write_version(folder: Location, bundle: dict[str, Any], extra: dict[str, Location]) -> None:
    """Write the bundle, the ``extra`` files and, last, the manifest into ``folder``."""
    with atomic_path(folder / BUNDLE) as tmp:
        joblib.dump(bundle, tmp)
        files = {BUNDLE: sha256_file(tmp)}
    for name, source in extra.items():
        files[name] = copy_file(source, folder / name)
    # Last: on a store, until the manifest is there, the version does not exist for anyone.
    atomic_write_text(folder / MANIFEST, _manifest_text(bundle, dict(sorted(files.items()))))


def _manifest_text(bundle: dict[str, Any], files: dict[str, str]) -> str:
    data = bundle.get("data") or {}
    manifest = {
        "version": bundle["version"],
        "created": bundle["created"],
        "fingerprint": bundle["fingerprint"],
        "test_accuracy": bundle["metrics"]["test_accuracy"],
        # What the labeled gate compares (promote_if_not_worse), and the lineage.
        "labeled_holdout_accuracy": bundle["metrics"].get("labeled_holdout_accuracy"),
        "labeled_holdout": data.get("labeled_holdout"),
        "labeled_data": bundle.get("labeled_data", []),
        "files": files,
    }
    return json.dumps(manifest, indent=2) + "\n"


def read_manifest(version_dir: Location) -> dict[str, Any]:
    path = version_dir / MANIFEST
    try:
        with store_errors(path, "read"):
            manifest = json.loads(path.read_text())
        manifest["files"][BUNDLE]  # noqa: B018 (presence check)
    except FileNotFoundError:
        raise ModelError(f"{path}: no manifest; this is not a model folder") from None
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: manifest is unreadable or incomplete") from None
    if not _is_accuracy(manifest.get("test_accuracy")):
        raise ModelError(f"{path}: test_accuracy is missing or not a number in [0, 1]")
    if not (isinstance(manifest.get("version"), str) and isinstance(manifest.get("created"), str)):
        raise ModelError(f"{path}: version or created is missing or not a string")
    # Older manifests have no labeled keys: a model trained on MNIST alone.
    problem = _labeled_problem(
        manifest.get("labeled_data", []),
        manifest.get("labeled_holdout_accuracy"),
        manifest.get("labeled_holdout"),
    )
    if problem:
        raise ModelError(f"{path}: {problem}")
    return manifest


LINEAGE_COUNTS = ("rows", "accepted", "rejected", "held_out")


def _labeled_problem(labeled_data: Any, accuracy: Any, holdout: Any) -> str | None:
    """What is wrong with a model's labeled keys (``labeled_data``: a list of {source,
    sha256, rows, accepted, rejected, held_out} with accepted + rejected = rows and
    held_out <= accepted; ``labeled_holdout_accuracy`` and ``labeled_holdout``: None or
    a number in [0, 1]), in one phrase that names the key; None if nothing is."""
    if not isinstance(labeled_data, list):
        return f"'labeled_data' is {_describe(labeled_data)}, not a list"
    for n, entry in enumerate(labeled_data):
        where = f"'labeled_data[{n}]'"
        if not isinstance(entry, dict):
            return f"{where} is {_describe(entry)}, not a dict"
        if not isinstance(entry.get("source"), str):
            return f"{where}.source is missing or not a string"
        sha = entry.get("sha256")
        if not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            return f"{where}.sha256 is missing or not a SHA-256"
        for key in LINEAGE_COUNTS:
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{where}.{key} is {_describe(value)}, not a count"
        if entry["accepted"] + entry["rejected"] != entry["rows"] or (
            entry["held_out"] > entry["accepted"]
        ):
            return f"{where}: accepted + rejected is not rows, or more held out than accepted"
    for key, value in (("labeled_holdout_accuracy", accuracy), ("labeled_holdout", holdout)):
        if value is not None and not _is_accuracy(value):
            return f"'{key}' is {_describe(value)}, not null or a number in [0, 1]"
    return None


def find_published(models_dir: Location, fingerprint: str) -> Location | None:
    """The newest intact version trained from ``fingerprint`` (same data and config), if any."""
    for version_dir in sorted(_version_dirs(models_dir), reverse=True):
        with contextlib.suppress(ModelError):
            manifest = read_manifest(version_dir)
            bundle = version_dir / BUNDLE
            if manifest.get("fingerprint") == fingerprint and bundle.exists():
                if sha256_file(bundle) == manifest["files"][BUNDLE]:
                    return version_dir
    return None


def resolve(models_dir: Location, ref: str | None) -> Location:
    """The folder of model ``ref``: a version name, a folder or a model.joblib path (local or
    a store URL); else the champion."""
    if ref is None:
        champion = read_champion(models_dir)
        if champion is None:
            raise ModelError(
                f"no champion model in {models_dir}: run `mnist-pipeline train` first, "
                "or pass --model VERSION|PATH"
            )
        return models_dir / champion["version"]  # read_champion checked it is ours
    candidate = location(ref)
    if candidate.name == BUNDLE:
        candidate = candidate.parent
    if _is_version_dir(candidate):
        return candidate
    if is_version_name(ref) and _is_version_dir(models_dir / ref):
        return models_dir / ref
    raise ModelError(f"model {ref!r}: no such version in {models_dir} and no such folder")


def load(models_dir: Location, ref: str | None = None) -> LoadedModel:
    """Resolve, verify (SHA-256 before unpickling) and load a model, checking its shapes
    and every other key a command reads from it (ModelError, one line, otherwise)."""
    version_dir = resolve(models_dir, ref)
    manifest = read_manifest(version_dir)
    path = version_dir / BUNDLE
    if not path.exists():
        raise ModelError(f"{path}: model file is missing")
    if sha256_file(path) != manifest["files"][BUNDLE]:
        raise ModelError(
            f"{path}: SHA-256 does not match its manifest; the file was altered or corrupted, "
            "so it was not loaded. Retrain, or promote another version"
        )
    try:
        bundle = safe_load(path)
    except UnsafeFileError as err:
        raise ModelError(str(err)) from None
    try:
        config, params = _check_bundle(bundle, manifest)
    except ValueError as err:
        raise ModelError(f"{path}: incompatible model bundle: {err}") from None
    return LoadedModel(manifest["version"], path, config, params, bundle)


# Keys that every bundle has and that commands read; "classes" and "data" are checked
# when present (bundles published by hand, as in the benchmarks, may leave them out).
_BUNDLE_KEYS = ("params", "config", "metrics", "version", "created", "fingerprint")


def _check_bundle(bundle: Any, manifest: dict[str, Any]) -> tuple[ModelConfig, Params]:
    """The config and weights of ``bundle``, once every key that a command reads from it
    is checked, since the file is input like any other; else a one-line ValueError that
    names the key."""
    if not isinstance(bundle, dict):
        raise ValueError(f"it holds {_describe(bundle)}, not a dict")
    for key in _BUNDLE_KEYS:
        if key not in bundle:
            raise ValueError(f"{key!r} is missing")
    for key in ("version", "created", "fingerprint"):
        if not isinstance(bundle[key], str):
            raise ValueError(f"{key!r} is {_describe(bundle[key])}, not a string")
    if bundle["version"] != manifest["version"]:
        raise ValueError(f"'version' is {bundle['version']!r}; its manifest says "
                         f"{manifest['version']!r}")  # fmt: skip
    metrics = bundle["metrics"]
    if not isinstance(metrics, dict) or "test_accuracy" not in metrics:
        raise ValueError("'metrics.test_accuracy' is missing")
    for name, value in metrics.items():
        # Without labeled data (or with nothing held out) there is no labeled accuracy.
        if name == "labeled_holdout_accuracy" and value is None:
            continue
        if str(name).endswith("_accuracy") and not _is_accuracy(value):
            raise ValueError(f"'metrics.{name}' is {_describe(value)}, not a number in [0, 1]")
    # promote_if_not_worse decides by the manifest's copy, `models promote` by this one.
    if metrics["test_accuracy"] != manifest["test_accuracy"]:
        raise ValueError(f"'metrics.test_accuracy' is {metrics['test_accuracy']}; its "
                         f"manifest says {manifest['test_accuracy']}")  # fmt: skip
    _check_labeled(bundle, metrics, manifest)
    if not isinstance(bundle["config"], dict):
        raise ValueError(f"'config' is {_describe(bundle['config'])}, not a dict")
    try:
        config = ModelConfig.from_dict(bundle["config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"'config': {err}") from None
    try:
        params = [(layer[0], layer[1]) for layer in bundle["params"]]
        check_params(params, config)
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(f"'params': {err}") from None
    classes = bundle.get("classes", list(range(config.n_classes)))
    if not isinstance(classes, list) or classes != list(range(config.n_classes)):
        raise ValueError(f"'classes' is {_describe(classes)}, not 0 to {config.n_classes - 1}")
    data = bundle.get("data", {"source_sha256": {}})
    checksums = data.get("source_sha256") if isinstance(data, dict) else None
    if not isinstance(checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in checksums.items()
    ):
        raise ValueError("'data.source_sha256' is missing or not a dict of file checksums")
    return config, params


def _check_labeled(
    bundle: dict[str, Any], metrics: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """The labeled keys of a bundle (absent from bundles older than them): well formed,
    and what its manifest says, since the labeled gate decides by the manifest."""
    data = bundle.get("data") if isinstance(bundle.get("data"), dict) else {}
    labeled_data = bundle.get("labeled_data", [])
    problem = _labeled_problem(
        labeled_data, metrics.get("labeled_holdout_accuracy"), data.get("labeled_holdout")
    )
    if problem:
        raise ValueError(problem)
    per_file = metrics.get("labeled", {})
    if not isinstance(per_file, dict) or not all(
        isinstance(k, str) and (v is None or _is_accuracy(v)) for k, v in per_file.items()
    ):
        raise ValueError("'metrics.labeled' is not a dict of file: accuracy (or null)")
    rows = metrics.get("labeled_rows", 0)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"'metrics.labeled_rows' is {_describe(rows)}, not a count")
    for key, ours in (
        ("labeled_data", labeled_data),
        ("labeled_holdout_accuracy", metrics.get("labeled_holdout_accuracy")),
    ):
        if key in manifest and manifest[key] != ours:
            raise ValueError(f"'{key}' differs from its manifest's")


def _describe(value: Any) -> str:
    """A short one-line picture of a value from a file, for an error message."""
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def read_champion(models_dir: Location) -> dict[str, Any] | None:
    """The champion record, or None when there is none yet.

    Raises ModelError, naming the file and what is wrong, unless the record is a JSON
    object whose ``version`` is the plain name of a version folder of this registry and
    whose ``test_accuracy`` is a number in [0, 1].
    """
    path = models_dir / CHAMPION
    try:
        with store_errors(path, "read"):
            # On a store, one GET: a buffered read makes several, and fails (FileExpired)
            # when a concurrent promotion replaces the record between them.
            data = path.fs.cat_file(path.path) if is_remote(path) else path.read_bytes()
            record = json.loads(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        problem = "not valid JSON" if isinstance(err, ValueError) else err.strerror
        raise _broken_champion(path, problem) from None
    if not isinstance(record, dict):
        raise _broken_champion(path, "not a JSON object")
    version = record.get("version")
    if not is_version_name(version):
        raise _broken_champion(path, f"'version' is not a version name: {version!r}")
    if not _is_version_dir(models_dir / version):
        raise _broken_champion(path, f"names version {version}, which is not in {models_dir}")
    if not _is_accuracy(record.get("test_accuracy")):
        raise _broken_champion(path, "'test_accuracy' is missing or not a number in [0, 1]")
    return record


def _broken_champion(path: Location, problem: str) -> ModelError:
    return ModelError(f"{path}: {problem}; repair it with `mnist-pipeline models promote VERSION`")


def is_version_name(name: Any) -> bool:
    """A plain folder name: no path separator, not hidden, not ``.`` or ``..``."""
    return (
        isinstance(name, str)
        and name != ""
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


def _is_accuracy(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def champion_version(models_dir: Location) -> str | None:
    """The version ``champion.json`` names now, or None when there is no champion yet."""
    champion = read_champion(models_dir)
    return None if champion is None else champion["version"]


@contextlib.contextmanager
def champion_lock(models_dir: Location) -> Iterator[None]:
    """Serialize champion changes across processes on this machine (and NFS with locking).
    A no-op on a store, where promotions use conditional writes instead."""
    if fcntl is None or is_remote(models_dir):
        yield
        return
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".champion.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_champion(
    models_dir: Location,
    version: str,
    test_accuracy: float,
    reason: str,
    expected_etag: str | None | bool = False,
) -> bool:
    """Write the champion record; False if ``expected_etag`` (a store's compare-and-swap:
    None means "no record yet") no longer matches. Local writes always succeed."""
    record = {
        "version": version,
        "test_accuracy": test_accuracy,
        "promoted_at": datetime.now(UTC).isoformat(),
        "reason": reason,
    }
    path = models_dir / CHAMPION
    text = json.dumps(record, indent=2) + "\n"
    if is_remote(path) and expected_etag is not False:
        if not conditional_put(path, text.encode(), expected_etag):
            return False
    else:
        atomic_write_text(path, text)
    # For cache freshness only; on a store the record itself is the truth.
    seal(path)
    return True


_CAS_ATTEMPTS = 10
# The champion gates: MNIST's test set (the default), or the labeled data's holdout.
GATES = ("mnist", "labeled")
# The labeled gate's measure of a champion on this run's labeled holdout: given the
# champion's champion.json record, its accuracy there (None: no row to measure). Passed in
# (core.evaluation.champion_holdout_accuracy), so that the registry loads no model itself.
HoldoutMeasure = Callable[[dict[str, Any]], float | None]


def promote_if_not_worse(
    models_dir: Location,
    version: str,
    tolerance: float = 0.0,
    force: bool = False,
    gate: str = "mnist",
    champion_holdout_accuracy: HoldoutMeasure | None = None,
) -> dict[str, Any]:
    """Make ``version`` champion unless it is worse than the champion by ``gate``: its
    test accuracy (``mnist``) or its labeled holdout accuracy (``labeled``) below the
    champion's minus ``tolerance``; return the decision with its reason and its gate.

    The labeled gate takes the champion's recorded figure when it was measured on the same
    holdout; otherwise, when measuring it on this run's holdout is fair
    (``holdout_is_fair``), ``champion_holdout_accuracy`` measures it, under the champion
    lock, so the figure is always the current champion's; otherwise it does not promote.
    """
    if gate not in GATES:
        raise ValueError(f"unknown champion gate {gate!r}: expected mnist or labeled")
    manifest = read_manifest(models_dir / version)
    for _ in range(_CAS_ATTEMPTS):
        decision = _decide_and_write(
            models_dir, version, manifest, tolerance, force, gate, champion_holdout_accuracy
        )
        if decision is not None:
            return decision
    raise StorageError(
        f"{models_dir / CHAMPION}: changed by other runs {_CAS_ATTEMPTS} times while this "
        "one tried to promote; run again"
    )


def _decide_and_write(
    models_dir: Location,
    version: str,
    manifest: dict[str, Any],
    tolerance: float,
    force: bool,
    gate: str = "mnist",
    measure: HoldoutMeasure | None = None,
) -> dict[str, Any] | None:
    """One promotion attempt; None when a store's conditional write lost a race."""
    accuracy = manifest["test_accuracy"]
    with champion_lock(models_dir):
        # On a store the ETag is read first: a record written after it fails the write.
        tag = etag(models_dir / CHAMPION) if is_remote(models_dir) else False
        try:
            current = read_champion(models_dir)
        except ModelError:
            if not force:
                raise
            current = None  # a forced promotion also repairs a broken champion.json
        if force:
            promoted, reason = True, "promotion forced"
        elif current is None:
            promoted, reason = True, "first model: no champion yet"
        elif current["version"] == version:
            promoted, reason = True, "already the champion"
        elif gate == "labeled":
            promoted, reason = _labeled_gate(models_dir, manifest, current, tolerance, measure)
        else:
            promoted, reason = _mnist_gate(models_dir, manifest, current, tolerance)
        if promoted and (current is None or current["version"] != version):
            if not write_champion(models_dir, version, accuracy, reason, tag):
                return None
    return {
        "version": version,
        "promoted": promoted,
        "reason": reason,
        "gate": gate,
        "previous": current["version"] if current else None,
    }


def _mnist_gate(
    models_dir: Location, manifest: dict[str, Any], current: dict[str, Any], tolerance: float
) -> tuple[bool, str]:
    """The default gate: test accuracy against the champion's; the labeled holdout's
    figures follow when there are any, for information."""
    accuracy, theirs, name = manifest["test_accuracy"], current["test_accuracy"], current["version"]
    promoted = accuracy >= theirs - tolerance
    reason = (
        f"test accuracy {accuracy:.4f} is {'not ' if promoted else ''}lower than champion "
        f"{name}'s {theirs:.4f} (MNIST gate, tolerance {tolerance})"
    )
    other = _champion_manifest(models_dir, current)
    ours, theirs = manifest.get("labeled_holdout_accuracy"), other.get("labeled_holdout_accuracy")
    if ours is not None:
        said = "none" if theirs is None else f"{theirs:.4f}"
        same = "" if _same_holdout(manifest, other) else " on another holdout"
        reason += f"; labeled holdout accuracy {ours:.4f}, champion's {said}{same}"
    return promoted, reason if promoted else f"{reason}; kept but not promoted"


def _labeled_gate(
    models_dir: Location,
    manifest: dict[str, Any],
    current: dict[str, Any],
    tolerance: float,
    measure: HoldoutMeasure | None = None,
) -> tuple[bool, str]:
    """``--promote-on labeled``: labeled holdout accuracy against the champion's, as
    recorded when it was measured on the same holdout (the same files, the same fraction),
    else as ``measure`` measures it now on this run's holdout when that is fair."""
    name = current["version"]
    ours = manifest.get("labeled_holdout_accuracy")
    refused = "--force-promote promotes it anyway"
    if ours is None:
        return False, (
            "labeled gate: this model has no labeled holdout accuracy (no labeled data, or "
            f"none held out) to compare with the champion's; {refused}"
        )
    try:
        other = read_manifest(models_dir / name)
    except ModelError as err:
        return False, f"labeled gate: champion {name} cannot be read ({err}); {refused}"
    theirs, measured = other.get("labeled_holdout_accuracy"), ""
    if theirs is None or not _same_holdout(manifest, other):
        why = _unfair(other, manifest.get("labeled_holdout"))
        try:
            theirs = None if why or measure is None else measure(current)
        except ModelError as err:  # the champion's files, not this run's: refuse, not fail
            return False, f"labeled gate: champion {name} cannot be measured ({err}); {refused}"
        if theirs is None:
            return False, (
                "labeled gate: the champion was not measured on the same labeled holdout"
                f"{why}, so the two cannot be compared; {refused}"
            )
        measured = "measured on this run's holdout; "
    promoted = ours >= theirs - tolerance
    reason = (
        f"labeled holdout accuracy {ours:.4f} is {'not ' if promoted else ''}lower than "
        f"champion {name}'s {theirs:.4f} ({measured}labeled gate, tolerance {tolerance}); "
        f"test accuracy {manifest['test_accuracy']:.4f}, champion's "
        f"{current['test_accuracy']:.4f}"
    )
    return promoted, reason if promoted else f"{reason}; kept but not promoted"


def holdout_is_fair(champion: dict[str, Any], holdout: float | None) -> bool:
    """Whether a champion (its manifest) can be measured fairly on the labeled holdout of
    a run that holds out ``holdout`` of each file's rows: no row that run holds out was
    in the champion's training data."""
    return not _unfair(champion, holdout)


def _unfair(champion: dict[str, Any], holdout: float | None) -> str:
    """Why measuring ``champion`` on a run's holdout at fraction ``holdout`` would not be
    fair, as a clause for the refusal line; "" when it would be.

    A row is held out when a number drawn from its pixels alone is below the fraction
    (core.labeled.holdout_mask), whatever file it is in. So a champion that held out at
    least ``holdout`` trained only on rows at or above its fraction, none of which this
    run holds out; and one that learned no labeled row is fair too. Any other champion
    is not, even one that shares no file with the run by SHA-256: a file grown or
    corrected in place is a new file that holds the champion's rows.
    """
    learned = sum(d["accepted"] - d["held_out"] for d in champion.get("labeled_data") or [])
    theirs = champion.get("labeled_holdout")
    if not learned or (holdout is not None and theirs is not None and theirs >= holdout):
        return ""
    return (
        f", and it learned from labeled rows that this run holds out (it held out "
        f"{theirs if theirs is not None else 'an unknown share'} of each file's rows, this "
        f"run {holdout})"
    )


def _champion_manifest(models_dir: Location, current: dict[str, Any]) -> dict[str, Any]:
    """The champion's manifest, or {} when it cannot be read (then it has no labeled
    figures to compare with, and the MNIST gate still decides by champion.json)."""
    try:
        return read_manifest(models_dir / current["version"])
    except ModelError:
        return {}


def _same_holdout(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two models' labeled holdout accuracies were measured on the same rows: the
    same set of labeled files (by SHA-256) and the same holdout fraction."""
    files = [{d["sha256"] for d in m.get("labeled_data") or []} for m in (a, b)]
    return (
        bool(files[0])
        and files[0] == files[1]
        and (a.get("labeled_holdout") == b.get("labeled_holdout"))
    )


def promote(models_dir: Location, version: str) -> dict[str, Any]:
    """Make ``version`` the champion unconditionally (rollback, or the repair of a broken
    ``champion.json``); it must be a version of this registry and load cleanly."""
    if not is_version_name(version) or not _is_version_dir(models_dir / version):
        raise ModelError(
            f"{version!r} is not a version in {models_dir}: promote takes a name that "
            "`mnist-pipeline models list` shows (a model folder elsewhere can be used "
            "with `score --model PATH`, but not promoted)"
        )
    loaded = load(models_dir, version)  # checks the bundle, so the record written is sound
    with champion_lock(models_dir):
        # The folder's name, not the manifest's: champion.json must name a folder here.
        write_champion(
            models_dir, version, loaded.bundle["metrics"]["test_accuracy"], "manual promotion"
        )
    return {"version": version, "promoted": True, "reason": "manual promotion"}


def list_versions(models_dir: Location) -> list[dict[str, Any]]:
    """Every version, oldest first: version, created, test accuracy, labeled rows learned
    from, champion mark.

    A broken ``champion.json`` marks no version; ``champion_version`` reports it.
    """
    try:
        champion = read_champion(models_dir)
    except ModelError:
        champion = None
    rows = []
    for version_dir in sorted(_version_dirs(models_dir)):
        try:
            manifest = read_manifest(version_dir)
        except ModelError:
            continue
        rows.append(
            {
                "version": version_dir.name,
                "created": manifest["created"],
                "test_accuracy": manifest["test_accuracy"],
                # Labeled rows it learned from: accepted, less those held out to measure it.
                "labeled_rows": sum(
                    d["accepted"] - d["held_out"] for d in manifest.get("labeled_data", [])
                ),
                "champion": bool(champion and champion["version"] == version_dir.name),
            }
        )
    return rows


def _version_dirs(models_dir: Location) -> list[Location]:
    with store_errors(models_dir, "list"):
        if not models_dir.is_dir():
            return []
        return [
            p for p in models_dir.iterdir() if not p.name.startswith(".") and _is_version_dir(p)
        ]


def _is_version_dir(path: Location) -> bool:
    """A folder on disk; on a store, a prefix holding a manifest (written last)."""
    with store_errors(path, "stat"):
        return (path / MANIFEST).exists() if is_remote(path) else path.is_dir()
