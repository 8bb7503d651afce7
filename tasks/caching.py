"""How the pipeline's tasks cache: on content, across runs and processes, never stale.

Keys are the task's inputs (checksums, configs, the artifacts root) plus the task's
source, so they never depend on a run id. Results and cache records live under the
artifacts root, which makes the CLI, a serve process and a worker share one cache.
A hit is only allowed while every output file the task produced is still intact;
otherwise the task runs again and refreshes the cache record.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE

from tasks.files import is_intact

CONTENT = INPUTS + TASK_SOURCE


def cache_options(
    results_dir: Path, outputs: Iterable[Path], force: bool = False
) -> dict[str, Any]:
    """``Task.with_options`` keywords: persist to ``results_dir``; refresh if outputs changed."""
    return {
        "result_storage": Path(results_dir),
        "persist_result": True,
        "refresh_cache": force or not all(is_intact(p) for p in outputs),
    }
