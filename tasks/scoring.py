"""Scoring tasks: locate and verify the model once, then score each CSV file with it.

The flow passes the model's *folder*, never its weights: each task loads the bundle
itself through ``registry.load``, which checks the SHA-256 before unpickling. So on a
cluster every worker reads the model from the shared artifacts path; only a path crosses
the scheduler.

A big plain CSV is scored in byte ranges instead (``core.scoring.chunks``): ``split_csv`` plans
them, ``score_chunk`` scores one range into hidden part files, and ``assemble_chunks`` joins
the parts into the same outputs ``score_csv`` would have written, byte for byte.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import glob
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core import registry
from core.errors import PipelineError
from core.scoring.chunks import ByteRange, part_paths, plan_ranges, remove_parts
from core.scoring.csv_input import PixelCsvReader
from core.scoring.score_file import (
    DEFAULT_CHUNK_ROWS,
    PartSummary,
    assemble_parts,
    score_file,
    score_part,
)
from model.predict import predict_proba_pixels

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


@task(cache_policy=NO_CACHE)
def locate_model(models_dir: Path, ref: str | None) -> dict[str, Any]:
    """Resolve the model to score with (the champion by default) and verify it loads."""
    loaded = registry.load(Path(models_dir), ref)
    get_run_logger().info(
        "scoring with model %s (test accuracy %.4f)",
        loaded.version, loaded.bundle["metrics"]["test_accuracy"],
    )  # fmt: skip
    return {"version": loaded.version, "path": str(loaded.path.parent)}


# Errors of shared (network) storage that are worth another try; anything else, such as a
# missing input or a full disk, fails the file at once.
_TRANSIENT_ERRNOS = {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.ECONNRESET}


def _transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: the task failed on a transient storage error."""
    try:
        state.result()
    except OSError as exc:
        return exc.errno in _TRANSIENT_ERRNOS
    except Exception:
        return False
    return False


_RETRY = {"retries": 2, "retry_delay_seconds": [1, 5], "retry_condition_fn": _transient_io_error}


def _predictor(model: dict[str, Any]) -> functools.partial:
    """predict_proba_pixels bound to the model's weights, loaded and verified from its path."""
    _reuse_freed_memory()
    loaded = registry.load(Path(model["path"]).parent, model["path"])
    return functools.partial(predict_proba_pixels, loaded.params)


@functools.cache
def _reuse_freed_memory() -> None:
    """Let glibc reuse freed blocks of up to 32 MiB instead of returning them to the OS.

    Scoring allocates ~50 MB of arrays per chunk of rows. Dask starts its workers with
    MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's mmap threshold at 128 KiB, so
    each of those arrays became a fresh mmap whose pages fault in: 7x the page faults and
    ~40% more CPU per file than in a plain process. These are glibc's own adaptive
    defaults' upper bounds; elsewhere (not glibc) this does nothing. Once per process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: its maximum on 64-bit
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: keep a chunk's worth of freed heap
    except (OSError, AttributeError):
        pass


# Scoring writes to the user's paths, which may have changed since any earlier run, so a
# cached no-op would be wrong: every run scores. A worker lost mid-task is not a task
# failure: Dask runs the task again on another worker, and the atomic writes make that safe.
@task(cache_policy=NO_CACHE, **_RETRY)
def score_csv(job: Job, model: dict[str, Any], fmt: str = "csv") -> dict[str, Any]:
    """Score one CSV file with the verified model; write predictions and rejects."""
    summary = score_file(
        Path(job.input), Path(job.output), Path(job.rejects), _predictor(model), fmt=fmt
    ).to_dict()
    get_run_logger().info(
        "%s: %d rows, %d scored, %d rejected",
        job.input, summary["rows"], summary["scored"], summary["rejected"],
    )  # fmt: skip
    return summary


@dataclass(frozen=True)
class Chunk:
    """One byte range of a big input, and the run token that names its part files."""

    job: Job
    token: str
    range: ByteRange

    def parts(self) -> tuple[Path, Path]:
        return part_paths(
            Path(self.job.output), Path(self.job.rejects), self.token, self.range.index
        )


@task(cache_policy=NO_CACHE, **_RETRY)
def split_csv(job: Job, chunk_bytes: int) -> list[Chunk]:
    """Cut one big plain CSV into line-aligned byte ranges of about ``chunk_bytes``."""
    with PixelCsvReader(Path(job.input)) as reader:  # checks line 1, finds the data
        data_start = reader.data_start
    # Ranges hold whole scorer chunks, so the parts hold the very tables of one pass.
    ranges = plan_ranges(Path(job.input), data_start, chunk_bytes, DEFAULT_CHUNK_ROWS)
    token = secrets.token_hex(4)
    get_run_logger().info("%s: %d ranges of about %d bytes", job.input, len(ranges), chunk_bytes)
    return [Chunk(job, token, r) for r in ranges]


@task(cache_policy=NO_CACHE, **_RETRY)
def score_chunk(chunk: Chunk, model: dict[str, Any], fmt: str = "csv") -> dict[str, Any]:
    """Score one byte range with the verified model into its part files."""
    output_part, rejects_part = chunk.parts()
    r = chunk.range
    summary = score_part(
        Path(chunk.job.input), output_part, rejects_part, _predictor(model),
        index=r.index, byte_range=(r.start, r.stop), first_row=r.first_row, fmt=fmt,
    ).to_dict()  # fmt: skip
    get_run_logger().info(
        "%s rows %d-%d: %d scored, %d rejected",
        chunk.job.input, r.first_row + 1, r.first_row + summary["rows"],
        summary["scored"], summary["rejected"],
    )  # fmt: skip
    return summary


@task(cache_policy=NO_CACHE, **_RETRY)
def assemble_chunks(
    job: Job, token: str, parts: list[dict[str, Any]], fmt: str = "csv"
) -> dict[str, Any]:
    """Join a file's parts, in order, into its predictions and rejects; remove the parts."""
    summary = assemble_parts(
        Path(job.input), Path(job.output), Path(job.rejects),
        [PartSummary(**p) for p in parts], fmt=fmt,
    ).to_dict()  # fmt: skip
    remove_parts(Path(job.output), Path(job.rejects), token)
    get_run_logger().info(
        "%s: %d rows from %d ranges, %d scored, %d rejected",
        job.input, summary["rows"], len(parts), summary["scored"], summary["rejected"],
    )  # fmt: skip
    return summary


@task(cache_policy=NO_CACHE)
def discard_chunks(job: Job, token: str) -> int:
    """Remove the parts of a file that could not be scored whole (no outputs are written)."""
    return remove_parts(Path(job.output), Path(job.rejects), token)
