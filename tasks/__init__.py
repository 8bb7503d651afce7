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

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import RemoteFileSystem, WritableFileSystem
from prefect.utilities.asyncutils import run_sync_in_worker_thread

from core.code_digest import INGEST_PACKAGES, MODEL_PACKAGES, code_digest
from core.files import is_intact
from core.storage import Location, bucket_of, is_remote, location


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
    results_dir: Location, outputs: Iterable[Location], force: bool = False
) -> dict[str, Any]:
    """``Task.with_options`` keywords: persist to ``results_dir``; refresh if outputs changed."""
    return {
        "result_storage": result_storage(results_dir),
        "persist_result": True,
        "refresh_cache": force or not all(is_intact(p) for p in outputs),
    }


class StoreResults(RemoteFileSystem):
    """Prefect's ``RemoteFileSystem``, except that writing never creates a bucket.

    Prefect's ``write_path`` first calls the store's ``makedirs`` on the key's "folder",
    and on s3fs and gcsfs that creates the bucket when it is missing: a run into a
    mistyped ``s3://`` root would fail, yet leave a new bucket behind for the next run to
    write into. A bucket store has no folders to make, so here a write only puts the key,
    and a missing bucket stays missing (the write fails with FileNotFoundError).
    """

    _block_type_name = "MNIST Result Storage"

    def _write(self, path: str, content: bytes) -> str:
        path = self._resolve_path(path)
        if bucket_of(location(self.basepath)) is None:  # a store with real folders
            self.filesystem.makedirs(path[: path.rindex("/")], exist_ok=True)
        with self.filesystem.open(path, "wb") as file:
            file.write(content)
        return path

    # Both are overridden: the base class's write_path dispatches to its own awrite_path.
    async def awrite_path(self, path: str, content: bytes) -> str:
        return await run_sync_in_worker_thread(self._write, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)


def result_storage(results_dir: Location) -> Path | WritableFileSystem:
    """Where Prefect keeps results and cache records: the folder itself, or for a store URL
    a ``StoreResults`` block on it.

    Prefect 3 refuses result storage that is not saved server-side, so the block is saved
    under a name derived from the URL (the same root always gets the same block; saving
    again overwrites it with the same contents).
    """
    if not is_remote(results_dir):
        return Path(results_dir)
    url = str(results_dir)
    # Listings uncached: a cache record another process wrote must be seen.
    block = StoreResults(basepath=url, settings={"use_listings_cache": False})
    name = "mnist-results-" + hashlib.sha256(url.encode()).hexdigest()[:12]
    try:
        block.save(name, overwrite=True)
    except ObjectAlreadyExists:  # another run saved it between our check and our write
        block = StoreResults.load(name)
    return block
