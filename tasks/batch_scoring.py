"""Scoring tasks: locate and verify the model once, then score each CSV file with it.

The flow passes the model's *folder*, never its weights: each task loads the bundle
itself through ``registry.load``, which checks the SHA-256 before unpickling.
"""

from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from model.predict import predict_proba
from tasks import registry
from tasks.errors import PipelineError
from tasks.score import score_file

FORMATS = ("csv", "parquet")


class ScoringUsageError(PipelineError):
    """Inputs and outputs that cannot be scored as asked (exit code 2)."""


@dataclass(frozen=True)
class Job:
    """One input file and where its predictions and rejects go."""

    input: str
    output: str
    rejects: str


def input_stem(path: Path) -> str:
    """``digits.csv.gz`` → ``digits``; ``digits.csv`` → ``digits``."""
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Paths and globs, in the order given; a pattern matching nothing is kept as a path, so
    that scoring reports it as missing."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else []
        for p in matches or [pattern]:
            if Path(p).resolve() not in [q.resolve() for q in paths]:
                paths.append(Path(p))
    return paths


def plan_jobs(inputs: list[str], output: str | None, output_dir: str | None, fmt: str) -> list[Job]:
    """Decide every output path up front, refusing ambiguous or colliding requests."""
    if fmt not in FORMATS:
        raise ScoringUsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if (output is None) == (output_dir is None):
        raise ScoringUsageError("give exactly one of --output FILE or --output-dir DIR")
    paths = expand_inputs(inputs)
    if not paths:
        raise ScoringUsageError("no input files given")
    if output is not None:
        if len(paths) > 1:
            raise ScoringUsageError(
                f"--output takes one input, got {len(paths)}; use --output-dir for several"
            )
        out = Path(output).absolute()
        rejects = out.with_name(out.stem + ".rejects.csv")
        return [Job(str(paths[0].absolute()), str(out), str(rejects))]
    jobs, seen = [], {}
    for path in paths:
        stem = input_stem(path)
        if stem in seen:
            raise ScoringUsageError(
                f"{path} and {seen[stem]} would both write {stem}.predictions.{fmt}; "
                "score them into different --output-dir folders"
            )
        seen[stem] = path
        base = Path(output_dir).absolute() / stem
        jobs.append(
            Job(
                str(path.absolute()),
                str(base.with_name(f"{stem}.predictions.{fmt}")),
                str(base.with_name(f"{stem}.rejects.csv")),
            )
        )
    return jobs


@task(cache_policy=NO_CACHE)
def locate_model(models_dir: Path, ref: str | None) -> dict[str, Any]:
    """Resolve the model to score with (the champion by default) and verify it loads."""
    loaded = registry.load(Path(models_dir), ref)
    get_run_logger().info(
        "scoring with model %s (test accuracy %.4f)",
        loaded.version, loaded.bundle["metrics"]["test_accuracy"],
    )  # fmt: skip
    return {"version": loaded.version, "path": str(loaded.path.parent)}


# Scoring writes to the user's paths, which may have changed since any earlier run, so a
# cached no-op would be wrong: every run scores.
@task(cache_policy=NO_CACHE)
def score_csv(job: Job, model: dict[str, Any], fmt: str = "csv") -> dict[str, Any]:
    """Score one CSV file with the verified model; write predictions and rejects."""
    loaded = registry.load(Path(model["path"]).parent, model["path"])
    predict = functools.partial(predict_proba, loaded.params)
    summary = score_file(
        Path(job.input), Path(job.output), Path(job.rejects), predict, fmt=fmt
    ).to_dict()
    get_run_logger().info(
        "%s: %d rows, %d scored, %d rejected",
        job.input, summary["rows"], summary["scored"], summary["rejected"],
    )  # fmt: skip
    return summary
