"""What a training run records of the user's labeled data: each file's lineage (the
``labeled_data`` of a model's manifest and bundle), and its rejected rows copied beside
the run, ``training/<run>/rejects/<file stem>.rejects.csv``, named as scoring names its
rejects. Prefect-free; reaches no model code, so a conversion step can use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.files import copy_file, seal
from core.scoring.jobs import input_stem
from core.storage import Location, location

REJECTS_DIR = "rejects"

# What the lineage records of each labeled file (manifest.json's and model.joblib's
# ``labeled_data``), in this order.
LINEAGE_KEYS = ("source", "sha256", "rows", "accepted", "rejected", "held_out")


def labeled_lineage(
    labeled: Sequence[dict[str, Any]], held_out: dict[str, int]
) -> list[dict[str, Any]]:
    """``labeled_data``: one entry per labeled file a model learned from (its URL or path,
    SHA-256, rows, accepted, rejected and held out), from the files' conversion records
    and evaluation's {SHA-256: rows held out}; in the order of their sources."""
    entries = [
        {**{key: record[key] for key in LINEAGE_KEYS[:-1]}, "held_out": held_out[record["sha256"]]}
        for record in labeled
    ]
    return sorted(entries, key=lambda entry: entry["source"])


def rejects_names(labeled: Sequence[dict[str, Any]]) -> dict[str, str]:
    """{SHA-256: rejects file name} for the labeled files with rejected rows, named as
    scoring names them: ``shift1.csv`` gives ``shift1.rejects.csv``. Two files of the same
    name (from two folders) get ``shift1.rejects.csv`` and ``shift1-2.rejects.csv``, in
    the order given."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for record in labeled:
        if not record.get("rejects"):
            continue
        stem = input_stem(location(record["source"]))
        name, n = f"{stem}.rejects.csv", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.rejects.csv"
        taken.add(name)
        names[record["sha256"]] = name
    return names


def keep_rejects(
    labeled: Sequence[dict[str, Any]], rejects_dir: Location, names: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Copy each labeled file's rejects (``ImageId,Line,Reason``) beside the training run,
    into ``rejects_dir`` under ``rejects_names``' name, sealed; one record per file with
    rejected rows: its ``file`` (source), ``rejected`` count and ``rejects`` (the copy),
    as ``core.scoring.summary.rejects_report`` reads them."""
    names = rejects_names(labeled) if names is None else names
    kept = []
    for record in labeled:
        if record["sha256"] not in names:
            continue
        copy = rejects_dir / names[record["sha256"]]
        copy_file(location(record["rejects"]), copy)
        seal(copy)
        kept.append(
            {"file": record["source"], "rejected": record["rejected"], "rejects": str(copy)}
        )
    return kept
