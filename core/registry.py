"""The model registry on disk: versioned bundles, manifests, verified loading, the champion.

``models/<version>/model.joblib`` holds the weights and everything needed to trust them;
``manifest.json`` beside it records the bundle's SHA-256, which catches accidents (a
truncated copy, a flipped bit). It cannot stop someone who can write the folder, since
they can rewrite the manifest too; what does is that bundles are read with
``core.safe_joblib.safe_load``, which never imports or calls anything but NumPy's array
builders. ``models/champion.json`` names the version that scoring uses by default. It is
data, checked like input: it must name a version of this registry by its plain name. It
changes under a file lock, so two training runs finishing at once cannot interleave their
promotions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from core.errors import PipelineError
from core.files import atomic_path, atomic_write_text, seal, sha256_file
from core.safe_joblib import UnsafeFileError, safe_load
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
    path: Path
    config: ModelConfig
    params: Params
    bundle: dict[str, Any]


def new_version_name() -> str:
    """A name that sorts by creation time and stays unique within the same second."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond:06d}Z-{secrets.token_hex(2)}"


def publish(models_dir: Path, bundle: dict[str, Any], extra_files: dict[str, Path]) -> str:
    """Write a new version folder (bundle, manifest, extra files) atomically; return its name.

    Everything is assembled in a hidden folder and renamed into place, so a version folder
    that exists is complete.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    version = new_version_name()
    staging = models_dir / f".staging-{version}"
    staging.mkdir()
    try:
        bundle = {**bundle, "version": version}
        with atomic_path(staging / BUNDLE) as tmp:
            joblib.dump(bundle, tmp)
        for name, source in extra_files.items():
            shutil.copyfile(source, staging / name)
        manifest = {
            "version": version,
            "created": bundle["created"],
            "fingerprint": bundle["fingerprint"],
            "test_accuracy": bundle["metrics"]["test_accuracy"],
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir())},
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        os.rename(staging, models_dir / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seal(models_dir / version / BUNDLE)
    return version


def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        manifest["files"][BUNDLE]  # noqa: B018 (presence check)
    except FileNotFoundError:
        raise ModelError(f"{path}: no manifest; this is not a model folder") from None
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: manifest is unreadable or incomplete") from None
    if not _is_accuracy(manifest.get("test_accuracy")):
        raise ModelError(f"{path}: test_accuracy is missing or not a number in [0, 1]")
    return manifest


def find_published(models_dir: Path, fingerprint: str) -> Path | None:
    """The newest intact version trained from ``fingerprint`` (same data and config), if any."""
    for version_dir in sorted(_version_dirs(models_dir), reverse=True):
        with contextlib.suppress(ModelError):
            manifest = read_manifest(version_dir)
            bundle = version_dir / BUNDLE
            if manifest.get("fingerprint") == fingerprint and bundle.is_file():
                if sha256_file(bundle) == manifest["files"][BUNDLE]:
                    return version_dir
    return None


def resolve(models_dir: Path, ref: str | None) -> Path:
    """The folder of model ``ref``: a version name, a folder or a model.joblib path; else the
    champion."""
    models_dir = Path(models_dir)
    if ref is None:
        champion = read_champion(models_dir)
        if champion is None:
            raise ModelError(
                f"no champion model in {models_dir}: run `mnist-pipeline train` first, "
                "or pass --model VERSION|PATH"
            )
        return models_dir / champion["version"]  # read_champion checked it is ours
    candidate = Path(ref).expanduser()
    if candidate.name == BUNDLE:
        candidate = candidate.parent
    if candidate.is_dir():
        return candidate
    if (models_dir / ref).is_dir():
        return models_dir / ref
    raise ModelError(f"model {ref!r}: no such version in {models_dir} and no such folder")


def load(models_dir: Path, ref: str | None = None) -> LoadedModel:
    """Resolve, verify (SHA-256 before unpickling) and load a model, checking its shapes."""
    version_dir = resolve(models_dir, ref)
    manifest = read_manifest(version_dir)
    path = version_dir / BUNDLE
    if not path.is_file():
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
        config = ModelConfig.from_dict(bundle["config"])
        params = [(layer[0], layer[1]) for layer in bundle["params"]]
        check_params(params, config)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ModelError(f"{path}: incompatible model bundle: {err}") from None
    return LoadedModel(manifest["version"], path, config, params, bundle)


def read_champion(models_dir: Path) -> dict[str, Any] | None:
    """The champion record, or None when there is none yet.

    Raises ModelError, naming the file and what is wrong, unless the record is a JSON
    object whose ``version`` is the plain name of a version folder of this registry and
    whose ``test_accuracy`` is a number in [0, 1].
    """
    path = Path(models_dir) / CHAMPION
    try:
        record = json.loads(path.read_text())
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
    if not (Path(models_dir) / version).is_dir():
        raise _broken_champion(path, f"names version {version}, which is not in {models_dir}")
    if not _is_accuracy(record.get("test_accuracy")):
        raise _broken_champion(path, "'test_accuracy' is missing or not a number in [0, 1]")
    return record


def _broken_champion(path: Path, problem: str) -> ModelError:
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


def champion_version(models_dir: Path) -> str | None:
    """The version ``champion.json`` names now, or None when there is no champion yet."""
    champion = read_champion(models_dir)
    return None if champion is None else champion["version"]


@contextlib.contextmanager
def champion_lock(models_dir: Path) -> Iterator[None]:
    """Serialize champion changes across processes on this machine (and NFS with locking)."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(Path(models_dir) / ".champion.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_champion(models_dir: Path, version: str, test_accuracy: float, reason: str) -> None:
    record = {
        "version": version,
        "test_accuracy": test_accuracy,
        "promoted_at": datetime.now(UTC).isoformat(),
        "reason": reason,
    }
    path = Path(models_dir) / CHAMPION
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    seal(path)


def promote_if_not_worse(
    models_dir: Path, version: str, tolerance: float = 0.0, force: bool = False
) -> dict[str, Any]:
    """Make ``version`` champion unless its test accuracy is below the champion's minus
    ``tolerance``; return the decision with its reason."""
    accuracy = read_manifest(Path(models_dir) / version)["test_accuracy"]
    with champion_lock(models_dir):
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
        elif accuracy >= current["test_accuracy"] - tolerance:
            promoted = True
            reason = (
                f"test accuracy {accuracy:.4f} is not lower than champion "
                f"{current['version']}'s {current['test_accuracy']:.4f} (tolerance {tolerance})"
            )
        else:
            promoted = False
            reason = (
                f"test accuracy {accuracy:.4f} is lower than champion "
                f"{current['version']}'s {current['test_accuracy']:.4f} (tolerance {tolerance}); "
                "kept but not promoted"
            )
        if promoted and (current is None or current["version"] != version):
            write_champion(models_dir, version, accuracy, reason)
    return {
        "version": version,
        "promoted": promoted,
        "reason": reason,
        "previous": current["version"] if current else None,
    }


def promote(models_dir: Path, version: str) -> dict[str, Any]:
    """Make ``version`` the champion unconditionally (rollback, or the repair of a broken
    ``champion.json``); it must be a version of this registry and load cleanly."""
    if not is_version_name(version) or not (Path(models_dir) / version).is_dir():
        raise ModelError(
            f"{version!r} is not a version in {models_dir}: promote takes a name that "
            "`mnist-pipeline models list` shows (a model folder elsewhere can be used "
            "with `score --model PATH`, but not promoted)"
        )
    loaded = load(models_dir, version)
    with champion_lock(models_dir):
        write_champion(
            models_dir,
            loaded.version,
            loaded.bundle["metrics"]["test_accuracy"],
            "manual promotion",
        )
    return {"version": loaded.version, "promoted": True, "reason": "manual promotion"}


def list_versions(models_dir: Path) -> list[dict[str, Any]]:
    """Every version, oldest first: version, created, test accuracy, champion mark.

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
                "champion": bool(champion and champion["version"] == version_dir.name),
            }
        )
    return rows


def _version_dirs(models_dir: Path) -> list[Path]:
    if not Path(models_dir).is_dir():
        return []
    return [p for p in Path(models_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
