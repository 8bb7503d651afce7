"""Scoring jobs: which outputs each input file gets, planned before anything is written.

A request that cannot be scored as asked (no inputs, a glob that matches no file, a folder
as an input, two inputs that would write the same output, an output that would overwrite
an input) is a ``ScoringUsageError`` (exit code 2) raised before any file is touched.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PipelineError
from core.storage import Location, identity, is_remote, is_url, location, store_errors

FORMATS = ("csv", "parquet")


class ScoringUsageError(PipelineError):
    """Inputs and outputs that cannot be scored as asked (exit code 2)."""


@dataclass(frozen=True)
class Job:
    """One input file and where its predictions and rejects go."""

    input: str
    output: str
    rejects: str


def input_stem(path: Location) -> str:
    """``digits.csv.gz`` → ``digits``; ``digits.csv`` → ``digits``."""
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name


def expand_inputs(patterns: list[str]) -> list[Location]:
    """Paths and globs (local, or store URLs such as ``s3://bucket/in/*.csv``), in the order
    given. A path that does not exist is kept, so that scoring reports it as missing and
    scores the others; a glob that matches no file, or a local folder, can only be a
    mistake in the command (ScoringUsageError). A glob's local folders are left out."""
    paths: list[Location] = []
    seen: set[str] = set()
    for pattern in patterns:
        matches = [location(pattern)]
        if glob.has_magic(pattern):
            globbed = map(location, _glob(pattern, matches[0]))
            found = [p for p in globbed if not _is_local_folder(p)]
            # A file named like a pattern ("scan[1].csv") that matches nothing is itself.
            if not found and not _is_local_file(matches[0]):
                raise ScoringUsageError(f"{pattern}: no file matches this pattern")
            matches = found or matches
        for path in matches:
            if _is_local_folder(path):
                raise ScoringUsageError(
                    f"{path} is a folder, not a file; to score the files in it, give a "
                    f"pattern such as {path / '*.csv'}"
                )
            if identity(path) not in seen:
                seen.add(identity(path))
                paths.append(path)
    return paths


# A store is not asked: that would be one request per input, in the CLI and in the flow.
def _is_local_folder(path: Location) -> bool:
    return not is_remote(path) and path.is_dir()


def _is_local_file(path: Location) -> bool:
    return not is_remote(path) and path.is_file()


def _glob(pattern: str, base: Location) -> list[str]:
    if not is_url(pattern):
        return sorted(glob.glob(pattern))
    if not is_remote(base):  # file://
        return sorted(glob.glob(str(base)))
    with store_errors(base, "list"):
        found = base.fs.glob(base.path)
    return sorted(base.fs.unstrip_protocol(p) for p in found)


def _absolute(path: Location) -> Location:
    return path if is_remote(path) else Path(path).absolute()


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
        out = _absolute(location(output))
        planned = [(paths[0], out, out.with_name(out.stem + ".rejects.csv"))]
    else:
        folder = _absolute(location(output_dir))
        planned, seen = [], {}
        for path in paths:
            stem = input_stem(path)
            if stem in seen:
                raise ScoringUsageError(
                    f"{path} and {seen[stem]} would both write {stem}.predictions.{fmt}; "
                    "score them into different --output-dir folders"
                )
            seen[stem] = path
            out = (folder / stem).with_name(f"{stem}.predictions.{fmt}")
            planned.append((path, out, out.with_name(f"{stem}.rejects.csv")))
    _refuse_clashes(planned)
    return [Job(str(_absolute(path)), str(out), str(rejects)) for path, out, rejects in planned]


def _refuse_clashes(planned: list[tuple[Location, Location, Location]]) -> None:
    """Raise ScoringUsageError if a job's (input, predictions, rejects) would write over any
    input, or two writes collide.

    Paths are compared resolved (symlinks followed) and, for files that exist, by inode
    (hard links). A glob over a folder that already holds outputs, or an input named like
    another input's rejects file, is refused here, before any job could remove or replace it.
    """
    taken = {key: f"input {path}" for path, *_ in planned for key in _identities(path)}
    for source, *outputs in planned:
        for kind, path in zip(("predictions", "rejects"), outputs, strict=True):
            keys = _identities(path)
            for key in keys:
                if key in taken:
                    raise ScoringUsageError(
                        f"the {kind} of {_absolute(source)} would overwrite {taken[key]} "
                        f"(as {path}); nothing was written"
                    )
            taken.update(dict.fromkeys(keys, f"the {kind} of {_absolute(source)}"))


def _identities(path: Location) -> list[tuple[Any, ...]]:
    """What makes two paths one file: the resolved path (a store's: the URL), and (device,
    inode) if it exists locally."""
    keys: list[tuple[Any, ...]] = [("path", identity(path))]
    if is_remote(path):
        return keys
    try:
        st = path.stat()
    except OSError:
        return keys
    return [*keys, ("inode", st.st_dev, st.st_ino)]
