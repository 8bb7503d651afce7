"""The labeled-data task: one of the user's labeled files ─► its valid rows as Parquet,
named by the file's SHA-256, and its rejected rows as a rejects file.

The work is ``core.labeled`` (scoring's row validation, the leakage guard, the Parquet
writer); this task adds the cache, keyed on the file's content rather than its path, the
copy of a refused file's rejects beside the training run, and logging.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from core.code_digest import INGEST_PACKAGES
from core.files import copy_file, is_intact, seal
from core.labeled import LabeledDataError, convert_labeled
from core.scoring.summary import REJECTS_SHOWN, rejects_report
from core.storage import location, store_errors
from tasks import CodeDigest

# Keyed on the file's SHA-256, the test split (the leakage guard reads it), the reject
# limit, the output folder and the code, but not the file's path: a file renamed or moved
# in the inbox is the same data, and is not parsed again. Where a refused file's rejects
# are copied is not part of what is computed either.
LABELED = (INPUTS - "source" - "rejects_copy") + TASK_SOURCE + CodeDigest(packages=INGEST_PACKAGES)


@task(cache_policy=LABELED)
def convert_labeled_file(
    source: str,
    sha256: str,
    test: dict[str, Any],
    max_reject_fraction: float,
    out_dir: str,
    rejects_copy: str,
) -> dict[str, Any]:
    """Validate one labeled file (CSV or Parquet) row by row and write its accepted rows
    as ``out_dir/<sha256>.parquet``; its record (counts, paths) is what training reads.

    ``test`` is the convert step's record of MNIST's test split: a row identical to a
    test image is rejected. A file refused whole fails the step with one line; when rows
    were over the limit, its rejects are copied to ``rejects_copy`` first.
    """
    logger = get_run_logger()
    try:
        record = convert_labeled(
            location(source),
            sha256,
            location(out_dir),
            location(test["path"]),
            max_reject_fraction,
        )
    except LabeledDataError as err:
        raise _refused(
            err, location(out_dir) / f"{sha256}.rejects.csv", source, rejects_copy
        ) from None
    # Sealed, so that a cache hit is trusted only while the files are intact (tasks).
    for path in (record["path"], record["rejects"]):
        if path and not is_intact(location(path)):
            seal(location(path))
    logger.info(
        "%s: %d rows, %d accepted, %d rejected (%d identical to an MNIST test image)",
        source, record["rows"], record["accepted"], record["rejected"], record["leaked"],
    )  # fmt: skip
    return record


def _refused(err: LabeledDataError, rejects: Any, source: str, copy: str) -> LabeledDataError:
    """The error to fail with: ``err``, naming the copy of the file's rejects beside the
    training run when there are rejects to copy (and publishing them as an artifact)."""
    try:
        with store_errors(rejects, "read"):
            if not rejects.exists():
                return err
            copy_file(rejects, location(copy))
            with rejects.open("rb") as f:
                rejected = sum(1 for _ in f) - 1  # less the header
    except OSError:
        return err  # the original error says what matters
    publish_rejects(
        [{"file": source, "rejected": rejected, "rejects": copy}],
        f"rows of {source}, refused: too many rejected",
    )
    return type(err)(str(err).replace(str(rejects), copy))


def publish_rejects(kept: list[dict[str, Any]], description: str) -> None:
    """The ``mnist-training-rejects`` markdown artifact, as scoring's
    ``mnist-scoring-rejects``: each file's first rejected rows (``file``, ``rejected``,
    ``rejects`` as ``core.training.keep_rejects`` gives them), and a WARNING naming its
    rejects file. Nothing when no row was rejected."""
    if not kept:
        return
    logger = get_run_logger()
    for f in kept:
        logger.warning("%s: %d row(s) rejected, see %s", f["file"], f["rejected"], f["rejects"])
    # Scoring's report, under a title that says whose rows these are.
    report = rejects_report(kept).replace(
        "# Scoring: rejected rows", "# Training: rejected labeled rows", 1
    )
    create_markdown_artifact(
        report,
        key="mnist-training-rejects",
        description=f"{description}, first {REJECTS_SHOWN} of each file",
    )
