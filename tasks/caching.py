"""How the pipeline's tasks cache: on content and code, across runs and processes, never stale.

A key is the task's inputs (checksums, configs, the artifacts root), the task's own
source, and a digest of every ``.py`` file of the project packages the step can reach
(``CodeDigest``), so it never depends on a run id, and any edit to code a step could run
(even one it never calls, or a comment) makes that step and the steps after it run again.
Over-invalidating is cheap; a stale hit would hand back results the current code would
not produce. Results and cache records live under the artifacts root, which makes the
CLI, a serve process and a worker share one cache. A hit is only allowed while every
output file the task produced is still intact; otherwise the task runs again and
refreshes the cache record.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from tasks.files import is_intact

# The project packages each kind of step can import. Ingestion (download, convert)
# never imports model/, so an edit confined to model/ keeps it Cached;
# tests/test_caching.py checks both lists against what the modules really import.
INGEST_PACKAGES = ("tasks",)
MODEL_PACKAGES = ("model", "tasks")


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


@dataclass(kw_only=True)  # the base class's first field is key_storage
class CodeDigest(CachePolicy):
    """Cache-key part: the source of the project packages a step can reach."""

    packages: tuple[str, ...] = MODEL_PACKAGES

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str:
        return code_digest(self.packages)


# Training, evaluation, persisting and promotion: everything they compute goes through model/.
CONTENT = INPUTS + TASK_SOURCE + CodeDigest(packages=MODEL_PACKAGES)
# Download and convert. The mirror list is left out of the key: a verified file is the
# same whichever mirror served it, so switching mirrors must not trigger a download.
INGEST = (INPUTS - "mirrors") + TASK_SOURCE + CodeDigest(packages=INGEST_PACKAGES)


def cache_options(
    results_dir: Path, outputs: Iterable[Path], force: bool = False
) -> dict[str, Any]:
    """``Task.with_options`` keywords: persist to ``results_dir``; refresh if outputs changed."""
    return {
        "result_storage": Path(results_dir),
        "persist_result": True,
        "refresh_cache": force or not all(is_intact(p) for p in outputs),
    }
