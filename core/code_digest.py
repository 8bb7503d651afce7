"""A digest of the project's source, for cache keys that never outlive the code."""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path

# The project packages each kind of step can import. Ingestion (download, convert)
# never imports model/, so an edit confined to model/ keeps it Cached;
# tests/test_caching.py checks both lists against what the modules really import.
INGEST_PACKAGES = ("core", "tasks")
MODEL_PACKAGES = ("core", "model", "tasks")


@functools.cache
def code_digest(packages: tuple[str, ...]) -> str:
    """SHA-256 over the relative path and bytes of every ``.py`` file of ``packages``.

    Paths are taken relative to each package, so an editable checkout and an installed
    wheel of the same source give the same digest. Computed once per process: the code a
    process runs is the code it imported, and serve and workers start each flow run in a
    process of its own.
    """
    digest = hashlib.sha256()
    for package in packages:
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()
