"""Ingestion tasks: download one verified MNIST file, convert one split to Parquet.

The work is ``core.fetch`` (deadlines, verification, mirrors) and ``core.dataset``
(IDX to Parquet); these tasks add retries of transient faults, caching and logging.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from core.dataset import convert_idx
from core.fetch import TransientFetchError, fetch_from_mirrors, is_verified
from core.storage import location
from tasks import INGEST


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    return isinstance(state.result(raise_on_failure=False), TransientFetchError)


@task(
    cache_policy=INGEST,  # the mirror list is not part of the key (tasks)
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_if_transient,
)
def download(name: str, sha256: str, mirrors: tuple[str, ...], raw_dir: str) -> str:
    """Fetch one MNIST file from the first mirror that has a verified copy; its path."""
    logger = get_run_logger()
    dest = location(raw_dir) / f"{name}.gz"
    if is_verified(dest, sha256):
        logger.info("%s: verified copy already present", dest.name)
        return str(dest)
    mirror = fetch_from_mirrors(dest.name, sha256, mirrors, dest, logger)
    logger.info("%s: downloaded and verified from %s", dest.name, mirror)
    return str(dest)


@task(cache_policy=INGEST)
def convert(images_gz: str, labels_gz: str, dest: str, checksums: dict[str, str]) -> dict[str, Any]:
    """Parse one split's IDX files and write it as normalized Parquet: its path, rows
    and the file's SHA-256, which the steps that read it key their caches on."""
    dest = location(dest)
    split = convert_idx(location(images_gz), location(labels_gz), dest, checksums)
    get_run_logger().info("%s: %d rows written", dest.name, split["rows"])
    return split
