"""The ``mnist-scoring`` flow: CSV files ─► validated rows ─► predictions and rejects.

One task per input file, all submitted at once, so files score in parallel on threads or
on Dask workers. The outputs are the same bytes whichever runner ran the tasks (see
``flows.runners``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from core.errors import PipelineError
from core.scoring.jobs import plan_jobs
from core.scoring.score_file import ScoringOutputError
from core.scoring.summary import REJECTS_SHOWN, confusion_report, rejects_report, summary_table
from core.settings import Settings, scoring_timeout
from flows import name_this_run
from flows.limits import timed_flow
from flows.runners import outcome, rerun_on_dask, wants_dask_subflow
from tasks.scoring import locate_model, score_csv


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


@timed_flow(
    scoring_timeout,
    name="mnist-scoring",
    task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2),
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
) -> dict[str, Any]:
    """Score CSV files of digits with a saved model (the champion unless ``model`` is given).

    A file that cannot be read is reported and skipped; the others are still scored, and
    then the run fails (``ScoringFailed``, which carries the summary). Rejected rows alone
    do not fail it: they are counted in the summary artifact.
    ``dask_address`` (an existing cluster) or ``dask_local`` (N local workers) run the tasks
    on Dask.
    """
    if wants_dask_subflow(dask_address, dask_local):
        return rerun_on_dask()
    settings = Settings.from_env(artifacts=artifacts)
    jobs = plan_jobs(inputs, output, output_dir, format)
    chosen = locate_model(str(settings.models_dir), model)
    name_this_run(f"score-{len(jobs)} files-{chosen['version']}")
    futures = [_named(job).submit(job, chosen, format) for job in jobs]
    files = [_file_outcome(job, outcome(future)) for job, future in zip(jobs, futures, strict=True)]
    create_table_artifact(
        summary_table(files),
        key="mnist-scoring-summary",
        description=f"scored with model {chosen['version']}",
    )
    with_rejects = [f for f in files if f.get("rejects")]
    if with_rejects:
        create_markdown_artifact(
            rejects_report(with_rejects),
            key="mnist-scoring-rejects",
            description=f"rejected rows, first {REJECTS_SHOWN} of each file",
        )
    # A labelled file whose every row was rejected has no accuracy to report.
    labelled = [f for f in files if f.get("confusion_matrix") is not None and f.get("scored")]
    if labelled:
        create_markdown_artifact(
            confusion_report(labelled),
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


def _file_outcome(job: Any, result: Any) -> dict[str, Any]:
    """The task's summary of the file, or its error; an output that could not be written
    still counts the rows read before (they were read, none of them scored)."""
    if not isinstance(result, BaseException):
        return result
    failed = {"file": job.input, "error": str(result)}
    if isinstance(result, ScoringOutputError):
        failed["rows"] = result.rows_read
    return failed


def _named(job: Any) -> Any:
    """score_csv whose run is named ``score <file name>`` (braces escaped: Prefect formats
    a string task_run_name with the task's parameters)."""
    name = f"score {Path(job.input).name}".replace("{", "{{").replace("}", "}}")
    return score_csv.with_options(task_run_name=name)
