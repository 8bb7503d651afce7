"""Prefect tasks, one verb each, and the cache policy they share.

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

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from core.code_digest import INGEST_PACKAGES, MODEL_PACKAGES, code_digest
from core.files import is_intact


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
