"""The ``mnist-scoring`` flow: CSV files ─► validated rows ─► predictions and rejects."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, unmapped
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.batch_scoring import locate_model, plan_jobs, score_csv
from tasks.settings import Settings


@flow(name="mnist-scoring", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2))
def scoring_flow(
    inputs: list[str],
    output_dir: str | None = None,
    output: str | None = None,
    model: str | None = None,
    artifacts: str | None = None,
    format: str = "csv",  # noqa: A002 (the public parameter name)
) -> dict[str, Any]:
    """Score CSV files of digits with a saved model (the champion unless ``model`` is given).

    A file that cannot be read is reported and skipped; the others are still scored.
    """
    settings = Settings.from_env(artifacts=artifacts)
    jobs = plan_jobs(inputs, output, output_dir, format)
    chosen = locate_model(settings.models_dir, model)
    futures = score_csv.map(jobs, model=unmapped(chosen), fmt=unmapped(format))
    wait(list(futures))
    files = []
    for job, future in zip(jobs, futures, strict=True):
        result = future.state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            files.append({"file": job.input, "error": str(result)})
        else:
            files.append(result)
    create_table_artifact(
        [_table_row(f) for f in files],
        key="mnist-scoring-summary",
        description=f"scored with model {chosen['version']}",
    )
    return {
        "model": chosen["version"],
        "files": files,
        "rows": sum(f.get("rows", 0) for f in files),
        "scored": sum(f.get("scored", 0) for f in files),
        "rejected": sum(f.get("rejected", 0) for f in files),
        "failed_files": sum(1 for f in files if "error" in f),
    }


def _table_row(summary: dict[str, Any]) -> dict[str, Any]:
    if "error" in summary:
        return {"file": summary["file"], "rows": None, "scored": None, "rejected": None,
                "label_counts": None, "accuracy": None, "error": summary["error"]}  # fmt: skip
    return {
        "file": summary["file"],
        "rows": summary["rows"],
        "scored": summary["scored"],
        "rejected": summary["rejected"],
        "label_counts": " ".join(f"{k}:{v}" for k, v in summary["label_counts"].items()),
        "accuracy": summary["accuracy"],
        "error": None,
    }
