"""The ``mnist-ingest`` flow: mirror ─► verified raw .gz files ─► train/test Parquet;
and the user's labeled files ─► one Parquet file each, named by content (for training)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from core.files import sidecar
from core.labeled import expand_sources, file_sha256
from core.lineage import rejects_names
from core.settings import Settings
from core.storage import location
from flows import report, results_in_order, submit_cached
from tasks import ingest
from tasks.labeled import convert_labeled_file

SPLITS = {"train": "train", "test": "t10k"}


def submit_ingestion(settings: Settings, force: bool = False) -> dict[str, PrefectFuture]:
    """Submit the download and convert steps; return their futures by step name."""
    download = ingest.download.with_options(
        retries=len(settings.retry_delays), retry_delay_seconds=list(settings.retry_delays)
    )
    futures: dict[str, PrefectFuture] = {}
    for name, digest in settings.checksums.items():
        futures[f"download {name}"] = submit_cached(
            download,
            settings,
            [settings.raw_dir / f"{name}.gz"],
            force,
            step=f"download {name}",
            name=name,
            sha256=digest,
            mirrors=settings.mirrors,
            raw_dir=str(settings.raw_dir),
        )
    converts: list[PrefectFuture] = []
    for split in SPLITS:
        source = split_source(settings, split)
        images, labels = source["source_sha256"]
        # One conversion at a time: run side by side on two cores they slowed each other
        # ~2x. Train comes first because training needs only it, and then runs while the
        # test split is converted.
        future = submit_cached(
            ingest.convert,
            settings,
            [location(source["path"])],
            force,
            step=f"convert {split}",
            wait_for=converts[-1:],
            images_gz=futures[f"download {images}"],
            labels_gz=futures[f"download {labels}"],
            dest=source["path"],
            checksums=source["source_sha256"],
        )
        futures[f"convert {split}"] = future
        converts.append(future)
    return futures


@dataclass(frozen=True)
class LabeledFile:
    """One of the user's labeled files: where it is, its content's SHA-256, and its step."""

    source: str
    sha256: str
    step: str  # "convert labeled <file name>"


def labeled_files(entries: Sequence[str]) -> list[LabeledFile]:
    """The files that ``entries`` (paths, globs, store URLs) name, each hashed, in path
    order. A file whose bytes another one already has is left out: its rows would count
    twice. LabeledDataError (one line) for an entry that matches no file."""
    files: list[LabeledFile] = []
    seen: set[str] = set()
    steps: set[str] = set()
    for source in expand_sources(entries):
        sha256 = file_sha256(source)
        if sha256 in seen:
            continue
        seen.add(sha256)
        # Two files of one name (from two folders) are told apart: "a.csv (2)".
        step, n = f"convert labeled {source.name}", 1
        while step in steps:
            n += 1
            step = f"convert labeled {source.name} ({n})"
        steps.add(step)
        files.append(LabeledFile(str(source), sha256, step))
    return files


def submit_labeled(
    settings: Settings,
    files: Sequence[LabeledFile],
    test: PrefectFuture,
    max_reject_fraction: float,
    rejects_dir: Any,
    force: bool = False,
) -> dict[str, PrefectFuture]:
    """Submit one conversion step per labeled file, after the test split's (the leakage
    guard reads it); return their futures by step name. Each is Cached while its
    Parquet file is intact: a file already converted is never parsed again."""
    out_dir = settings.data_dir / "labeled"
    # Where a refused file's rejects are copied: as training names them (shift1.csv ->
    # shift1.rejects.csv), from the files as they are named now.
    names = rejects_names(
        [{"source": f.source, "sha256": f.sha256, "rejects": True} for f in files]
    )
    futures: dict[str, PrefectFuture] = {}
    for f in files:
        outputs = [out_dir / f"{f.sha256}.parquet"]
        rejects = out_dir / f"{f.sha256}.rejects.csv"
        if sidecar(rejects).exists():  # it had rejects: they must still be there too
            outputs.append(rejects)
        futures[f.step] = submit_cached(
            convert_labeled_file,
            settings,
            outputs,
            force,
            step=f.step,
            source=f.source,
            sha256=f.sha256,
            test=test,
            max_reject_fraction=max_reject_fraction,
            out_dir=str(out_dir),
            rejects_copy=str(rejects_dir / names[f.sha256]),
        )
    return futures


def split_source(settings: Settings, split: str) -> dict[str, Any]:
    """Where a split is converted to (its Parquet path) and the checksums of the two IDX
    files it is converted from (images first)."""
    prefix = SPLITS[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    return {
        "path": str(settings.data_dir / f"{split}.parquet"),
        "source_sha256": {name: settings.checksums[name] for name in names},
    }


@flow(name="mnist-ingest", log_prints=False)
def ingest_flow(
    mirror: str | list[str] | None = None,
    artifacts: str | None = None,
    checksums_file: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Download MNIST, verify it, and normalize it to Parquet under the artifacts root."""
    settings = Settings.from_env(artifacts=artifacts, mirror=mirror, checksums_file=checksums_file)
    futures = submit_ingestion(settings, force)
    steps = report(futures)
    results = results_in_order(futures)
    return {"steps": steps, "train": results["convert train"], "test": results["convert test"]}
