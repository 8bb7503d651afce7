"""What a scoring run tells its user: the summary table, the rejected rows and the
confusion matrices, as Prefect artifacts (tables, Markdown) and console lines.
Prefect-free: ``flows.scoring`` publishes them."""

from __future__ import annotations

import csv
import io
from itertools import islice
from typing import Any

from core.errors import PipelineError
from core.storage import location, store_errors

# The columns of predicted-digit counts. Not "0"-"9": JavaScript lists an object's
# integer-like keys first, so the UI showed them before the file's name and counts.
DIGITS = [f"digit {d}" for d in range(10)]


def summary_table(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per file: counts, paths, predicted-digit counts ``digit 0``-``digit 9``; ``accuracy``
    only when some file had labels, ``error`` only when some file failed. Every row has
    the same columns."""
    labelled = any(f.get("has_labels") for f in files)
    failed = any("error" in f for f in files)
    rows = []
    for f in files:
        ok = "error" not in f
        counts = f["label_counts"] if ok else {}
        row = {
            "file": f["file"],
            "rows": f.get("rows"),  # a failed file's: those read before it failed, if any
            "scored": f["scored"] if ok else None,
            "rejected": f["rejected"] if ok else None,
            "output": f["output"] if ok else None,
            "rejects": f["rejects"] if ok else None,  # the rejects file, when rows were rejected
            **{column: counts.get(d, counts.get(str(d))) for d, column in enumerate(DIGITS)},
        }
        if labelled:
            row["accuracy"] = f.get("accuracy")
        if failed:
            row["error"] = f.get("error")
        rows.append(row)
    return rows


REJECTS_SHOWN = 20


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def rejects_report(files: list[dict[str, Any]], shown: int = REJECTS_SHOWN) -> str:
    """Markdown: for each file with rejects, its first ``shown`` rejected rows (ImageId,
    line, reason) read from its rejects CSV, and how many more there are."""
    parts = ["# Scoring: rejected rows", ""]
    for f in files:
        parts += [
            f"## {f['file']}",
            "",
            f"{f['rejected']} rejected row(s), in `{f['rejects']}`",
            "",
        ]
        try:  # a local path or a store URL (s3://...), like every output
            rejects = location(f["rejects"])
            with store_errors(rejects, "read"), rejects.open("rb") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
                first = list(islice(csv.DictReader(text), shown))
        except (OSError, PipelineError) as exc:
            parts += [f"(could not read the rejects file: {_cell(str(exc))})", ""]
            continue
        parts += ["| ImageId | line | reason |", "|---:|---:|---|"]
        parts += [
            f"| {_cell(r.get('ImageId') or '')} | {_cell(r.get('Line') or '')} "
            f"| {_cell(r.get('Reason') or '')} |"
            for r in first
        ]
        more = f["rejected"] - len(first)
        parts += ["", f"... and {more} more" if more > 0 else "(all shown)", ""]
    return "\n".join(parts)


def confusion_lines(matrix: list[list[int]]) -> list[str]:
    """A confusion matrix as fixed-width text: a header of predicted digits, then one row
    per true digit."""
    width = max(3, *(len(str(n)) for row in matrix for n in row))
    lines = ["true\\pred  " + " ".join(f"{k:>{width}}" for k in range(len(matrix)))]
    for true, row in enumerate(matrix):
        lines.append(f"{true:>9}  " + " ".join(f"{n:>{width}}" for n in row))
    return lines


def confusion_report(files: list[dict[str, Any]]) -> str:
    """Markdown: accuracy and confusion matrix of each file that carried labels."""
    parts = ["# Scoring: labelled inputs", ""]
    for f in files:
        parts += [f"## {f['file']}", "", f"accuracy {f['accuracy']:.4f} on {f['scored']} rows", ""]
        parts += ["```", *confusion_lines(f["confusion_matrix"]), "```", ""]
    return "\n".join(parts)
