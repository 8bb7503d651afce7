"""Scoring jobs: which outputs each input file gets, planned before anything is written.

A request that cannot be scored as asked (no inputs, two inputs that would write the same
output, an output that would overwrite an input) is a ``ScoringUsageError`` (exit code 2)
raised before any file is touched.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PipelineError

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
    """Decide every output path up front, refusing ambiguous or colliding requests.

    Nothing is written yet, so a refusal (ScoringUsageError) leaves every file as it was.
    """
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
        jobs = [Job(str(paths[0].absolute()), str(out), str(rejects))]
        _refuse_clashes(jobs, paths)
        return jobs
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
    _refuse_clashes(jobs, paths)
    return jobs


def _refuse_clashes(jobs: list[Job], inputs: list[Path]) -> None:
    """Raise ScoringUsageError if a job would write over any input, or two writes collide.

    Paths are compared resolved (symlinks followed) and, for files that exist, by inode
    (hard links). A glob over a folder that already holds outputs, or an input named like
    another input's rejects file, is refused here, before any job could remove or replace it.
    """
    taken = {key: f"input {path}" for path in inputs for key in _identities(path)}
    for job in jobs:
        for kind, path in (("predictions", job.output), ("rejects", job.rejects)):
            for key in _identities(Path(path)):
                if key in taken:
                    raise ScoringUsageError(
                        f"the {kind} of {job.input} would overwrite {taken[key]} "
                        f"(as {path}); nothing was written"
                    )
            for key in _identities(Path(path)):
                taken[key] = f"the {kind} of {job.input}"


def _identities(path: Path) -> list[tuple[Any, ...]]:
    """What makes two paths one file: the resolved path, and (device, inode) if it exists."""
    keys: list[tuple[Any, ...]] = [("path", str(path.resolve()))]
    try:
        st = path.stat()
    except OSError:
        return keys
    return [*keys, ("inode", st.st_dev, st.st_ino)]
