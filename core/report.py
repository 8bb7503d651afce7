"""What a published model carries besides its weights, and the report that describes it:
the bundle (weights, config, curve, metrics, provenance, the labeled data's lineage) and
the Markdown report."""

from __future__ import annotations

import base64
import json
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from core.safe_joblib import safe_load
from core.storage import Location

REPORT_FILE = "report.md"
PACKAGES = ("numpy", "prefect", "pandas", "pyarrow", "joblib")


def model_bundle(
    fit_path: Location,
    metrics_path: Location,
    data: dict[str, Any],
    fingerprint: str,
    labeled_data: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The bundle of one trained and evaluated model, ready for ``registry.publish``."""
    record = safe_load(fit_path)
    return {
        "params": record["params"],
        "config": record["config"],
        "classes": list(range(record["config"]["n_classes"])),
        "curve": record["curve"],
        "metrics": json.loads(metrics_path.read_text()),
        "data": data,
        "labeled_data": list(labeled_data),
        "fingerprint": fingerprint,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(),
    }


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a model's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        versions[name] = metadata.version(name)
    return versions


def git_commit() -> str | None:
    """The source commit, when the code runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# The plots, by file name, with their alt text. The report embeds them as data: URIs, so
# the same Markdown shows them in the Prefect UI (which cannot load files beside it) and
# in any viewer offline; the PNGs also stay beside report.md.
PLOT_TITLES = {
    "confusion_matrix.png": "confusion matrix",
    "learning_curve.png": "learning curve",
    "misclassified.png": "misclassified digits",
}
# The configuration fields the report lists, in this order.
CONFIG_FIELDS = (
    "hidden", "epochs", "batch_size", "learning_rate", "lr_schedule", "momentum", "seed",
    "validation_fraction", "early_stopping_patience",
)  # fmt: skip


def render_report(
    version: str,
    metrics: dict[str, Any],
    decision: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    plots_dir: Location | None = None,
) -> str:
    """The human report in Markdown: headline metrics, promotion, configuration, data,
    per-class table, plots.

    ``provenance`` holds what the Configuration section lists: ``preset``, ``config`` (a
    ``ModelConfig.to_dict()``), ``source_sha256`` (IDX checksums by file) and
    ``code_digest``; and what the Data section lists: ``labeled_data`` (the bundle's),
    ``labeled_leaked`` ({SHA-256: rows identical to an MNIST test image}) and
    ``labeled_holdout`` (the fraction held out); any may be missing. Plots found in
    ``plots_dir`` are embedded.
    """
    labeled_accuracy = metrics.get("labeled_holdout_accuracy")
    lines = [
        f"# MNIST model {version}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {metrics['test_accuracy']:.4f} |",
        f"| test log-loss | {metrics['test_log_loss']:.4f} |",
        f"| validation accuracy | {metrics['validation_accuracy']:.4f} |",
        f"| training seconds | {metrics['train_seconds']:.1f} |",
        f"| test images | {metrics['n_test']} |",
        *(
            [f"| labeled holdout accuracy | {labeled_accuracy:.4f} |"]
            if labeled_accuracy is not None
            else []
        ),
        "",
        f"**Promotion:** {'promoted' if decision['promoted'] else 'not promoted'}: "
        f"{decision['reason']}.",
        "",
        *_configuration(provenance or {}),
        *_data(metrics, provenance or {}),
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for k, row in metrics["per_class"].items():
        lines.append(
            f"| {k} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{int(row['support'])} |"
        )
    lines += ["", "## Most confused pairs (true → predicted)", ""]
    lines += [f"- {p['true']} → {p['predicted']}: {p['count']}" for p in metrics["most_confused"]]
    lines += ["", "## Plots", ""]
    for name, title in PLOT_TITLES.items():
        if plots_dir is not None and (plots_dir / name).is_file():
            data = base64.b64encode((plots_dir / name).read_bytes()).decode("ascii")
            lines.append(f"![{title}](data:image/png;base64,{data})")
        else:
            lines.append(f"![{title}]({name})")
    lines.append("")
    return "\n".join(lines)


def _configuration(provenance: dict[str, Any]) -> list[str]:
    """The Configuration section: what was trained, on which data, by which code."""
    config = provenance.get("config") or {}
    rows = [("preset", provenance.get("preset"))]
    rows += [(name, config.get(name)) for name in CONFIG_FIELDS]
    if "batch_size" in config and config["batch_size"] is None:
        rows.append(("batch_size", "full"))
    rows += [
        (f"data {name}", sha[:12])
        for name, sha in sorted((provenance.get("source_sha256") or {}).items())
    ]
    digest = provenance.get("code_digest")
    rows.append(("code digest", digest[:12] if digest else None))
    lines = ["## Configuration", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {_value(value)} |" for name, value in rows if value is not None]
    return [*lines, ""]


def _data(metrics: dict[str, Any], provenance: dict[str, Any]) -> list[str]:
    """The Data section: MNIST alone, or with each labeled file's lineage and accuracy."""
    labeled = provenance.get("labeled_data") or []
    lines = ["## Data", ""]
    if not labeled:
        return [*lines, "MNIST's training split only: no labeled data.", ""]
    leaked = provenance.get("labeled_leaked") or {}
    accuracy = metrics.get("labeled") or {}
    holdout = provenance.get("labeled_holdout")
    trained = sum(f["accepted"] - f["held_out"] for f in labeled)
    held = sum(f["held_out"] for f in labeled)
    n_leaked = sum(leaked.get(f["sha256"], 0) for f in labeled)
    share = f" ({holdout:.0%} of each file, chosen by a hash of the row)" if holdout else ""
    lines += [
        f"MNIST's training split and {len(labeled)} labeled file(s): {trained} labeled rows "
        f"trained on, {held} held out{share} for the labeled holdout accuracy. "
        f"Leakage guard: {n_leaked} row(s) identical to an MNIST test image rejected.",
        "",
        "| file | SHA-256 | rows | accepted | rejected | identical to a test image | "
        "held out | holdout accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in labeled:
        acc = accuracy.get(f["source"])
        lines.append(
            f"| {_cell(f['source'])} | {f['sha256'][:12]} | {f['rows']} | {f['accepted']} | "
            f"{f['rejected']} | {leaked.get(f['sha256'], 0)} | {f['held_out']} | "
            f"{'-' if acc is None else f'{acc:.4f}'} |"
        )
    return [*lines, ""]


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|")


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
