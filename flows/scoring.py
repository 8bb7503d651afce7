"""The ``mnist-scoring`` flow: CSV files ─► validated rows ─► predictions and rejects.

One task per input file; a plain file bigger than ``chunk_bytes`` is cut into byte ranges,
one task each, then joined, so that one huge file also spreads over the workers. The
outputs are the same bytes whichever runner ran the tasks (see ``flows.runners``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from core.errors import PipelineError
from core.scoring.chunks import DEFAULT_CHUNK_BYTES, splittable
from core.settings import Settings
from flows import freeze_heap_once
from flows.deployments import DEFAULT_SCORING_TIMEOUT, ENV_SCORING_TIMEOUT, run_timeout
from flows.runners import outcome, run_on_runner, wants_dask_subflow
from tasks.scoring import (
    Job,
    assemble_chunks,
    discard_chunks,
    locate_model,
    plan_jobs,
    score_chunk,
    score_csv,
    split_csv,
)


class ScoringFailed(PipelineError):
    """Some input files could not be scored; the others' outputs are written.

    Raised at the end of the flow, so that its run ends Failed with a message naming the
    failed files; ``summary`` is what the flow would have returned.
    """

    def __init__(self, summary: dict[str, Any]) -> None:
        failed = [f["file"] for f in summary["files"] if "error" in f]
        super().__init__(
            f"{len(failed)} of {len(summary['files'])} input file(s) failed: {', '.join(failed)}"
        )
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:  # pickled with its summary (Dask, results)
        return (type(self), (self.summary,))


@flow(
    name="mnist-scoring",
    task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2),
    timeout_seconds=run_timeout(ENV_SCORING_TIMEOUT, DEFAULT_SCORING_TIMEOUT),
)
def scoring_flow(
    inputs: list[str],
    output_dir: str | None = None,
    output: str | None = None,
    model: str | None = None,
    artifacts: str | None = None,
    format: str = "csv",  # noqa: A002 (the public parameter name)
    dask_address: str | None = None,
    dask_local: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any]:
    """Score CSV files of digits with a saved model (the champion unless ``model`` is given).

    A file that cannot be read is reported and skipped; the others are still scored, and
    then the run fails (``ScoringFailed``, which carries the summary). Rejected rows alone
    do not fail it: they are counted in the summary artifact.
    ``dask_address`` (an existing cluster) or ``dask_local`` (N local workers) run the tasks
    on Dask; plain files over ``chunk_bytes`` are scored in ranges of about that size.
    """
    if wants_dask_subflow(dask_address, dask_local):
        return run_on_runner(
            scoring_flow, dask_address, dask_local, inputs=inputs, output_dir=output_dir,
            output=output, model=model, artifacts=artifacts, format=format,
            chunk_bytes=chunk_bytes,
        )  # fmt: skip
    freeze_heap_once()
    settings = Settings.from_env(artifacts=artifacts)
    jobs = plan_jobs(inputs, output, output_dir, format)
    chosen = locate_model(settings.models_dir, model)
    big = [job for job in jobs if splittable(Path(job.input), chunk_bytes)]
    # Plans first, so that workers cut the big files while others score the small ones.
    plans = {job: split_csv.submit(job, chunk_bytes) for job in big}
    whole = {job: score_csv.submit(job, chosen, format) for job in jobs if job not in plans}
    ranges = _submit_ranges(plans, chosen, format)
    results = {job: outcome(future) for job, future in whole.items()}
    results.update(_join_ranges(ranges, format))
    files = []
    for job in jobs:
        result = results[job]
        if isinstance(result, BaseException):
            files.append({"file": job.input, "error": str(result)})
        else:
            files.append(result)
    create_table_artifact(
        [_table_row(f) for f in files],
        key="mnist-scoring-summary",
        description=f"scored with model {chosen['version']}",
    )
    labelled = [f for f in files if f.get("confusion_matrix") is not None]
    if labelled:
        create_markdown_artifact(
            _confusion_report(labelled),
            key="mnist-scoring-confusion",
            description=f"labelled inputs scored with model {chosen['version']}",
        )
    summary = {
        "model": chosen["version"],
        "files": files,
        "rows": sum(f.get("rows", 0) for f in files),
        "scored": sum(f.get("scored", 0) for f in files),
        "rejected": sum(f.get("rejected", 0) for f in files),
        "failed_files": sum(1 for f in files if "error" in f),
    }
    if summary["failed_files"]:
        # Not a Completed run: the UI and automations must see that files were left out.
        raise ScoringFailed(summary)
    return summary


def _submit_ranges(
    plans: dict[Job, PrefectFuture], model: dict[str, Any], fmt: str
) -> dict[Job, Any]:
    """Submit a task per byte range of each planned file: (chunks, futures), or the
    exception that planning failed with."""
    ranges: dict[Job, Any] = {}
    for job, plan in plans.items():
        chunks = outcome(plan)
        if isinstance(chunks, BaseException):
            ranges[job] = chunks
        else:
            ranges[job] = (
                chunks,
                score_chunk.map(chunks, model=unmapped(model), fmt=unmapped(fmt)),
            )
    return ranges


def _join_ranges(ranges: dict[Job, Any], fmt: str) -> dict[Job, Any]:
    """Join each file's parts once all its ranges are scored: its summary, or the first
    exception (a failed file keeps no parts)."""
    results: dict[Job, Any] = {}
    joined = {}
    for job, submitted in ranges.items():
        if isinstance(submitted, BaseException):
            results[job] = submitted
            continue
        chunks, futures = submitted
        token = chunks[0].token
        parts = [outcome(f) for f in futures]
        failed = [p for p in parts if isinstance(p, BaseException)]
        if failed:
            results[job] = failed[0]  # the first range to fail, as a whole-file read would
            outcome(discard_chunks.submit(job, token))
        else:
            joined[job] = (token, assemble_chunks.submit(job, token, parts, fmt))
    for job, (token, future) in joined.items():
        results[job] = outcome(future)
        if isinstance(results[job], BaseException):
            outcome(discard_chunks.submit(job, token))
    return results


def _table_row(summary: dict[str, Any]) -> dict[str, Any]:
    if "error" in summary:
        return {"file": summary["file"], "rows": None, "scored": None, "rejected": None,
                "label_counts": None, "accuracy": None, "rejects": None,
                "error": summary["error"]}  # fmt: skip
    return {
        "file": summary["file"],
        "rows": summary["rows"],
        "scored": summary["scored"],
        "rejected": summary["rejected"],
        "label_counts": " ".join(f"{k}:{v}" for k, v in summary["label_counts"].items()),
        "accuracy": summary["accuracy"],
        "rejects": summary["rejects"],  # the rejects file, when rows were rejected
        "error": None,
    }


def confusion_lines(matrix: list[list[int]]) -> list[str]:
    """A confusion matrix as fixed-width text: a header of predicted digits, then one row
    per true digit."""
    width = max(3, *(len(str(n)) for row in matrix for n in row))
    lines = ["true\\pred  " + " ".join(f"{k:>{width}}" for k in range(len(matrix)))]
    for true, row in enumerate(matrix):
        lines.append(f"{true:>9}  " + " ".join(f"{n:>{width}}" for n in row))
    return lines


def _confusion_report(files: list[dict[str, Any]]) -> str:
    """Markdown: accuracy and confusion matrix of each file that carried labels."""
    parts = ["# Scoring: labelled inputs", ""]
    for f in files:
        parts += [f"## {f['file']}", "", f"accuracy {f['accuracy']:.4f} on {f['scored']} rows", ""]
        parts += ["```", *confusion_lines(f["confusion_matrix"]), "```", ""]
    return "\n".join(parts)
