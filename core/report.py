"""What a published model carries besides its weights, and the report that describes it:
the bundle (weights, config, curve, metrics, provenance) and the Markdown report."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from core.safe_joblib import safe_load

REPORT_FILE = "report.md"
PACKAGES = ("numpy", "prefect", "pandas", "pyarrow", "joblib")


def model_bundle(
    fit_path: Path, metrics_path: Path, data: dict[str, Any], fingerprint: str
) -> dict[str, Any]:
    """The bundle of one trained and evaluated model, ready for ``registry.publish``."""
    record = safe_load(fit_path)
    return {
        "params": record["params"],
        "config": record["config"],
        "classes": list(range(record["config"]["n_classes"])),
        "curve": record["curve"],
        "metrics": json.loads(Path(metrics_path).read_text()),
        "data": data,
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


def render_report(version: str, metrics: dict[str, Any], decision: dict[str, Any]) -> str:
    """The human report in Markdown: headline metrics, promotion, per-class table, plots."""
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
        "",
        f"**Promotion:** {'promoted' if decision['promoted'] else 'not promoted'}: "
        f"{decision['reason']}.",
        "",
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
    lines += [
        "",
        "## Plots",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "![learning curve](learning_curve.png)",
        "![misclassified digits](misclassified.png)",
        "",
    ]
    return "\n".join(lines)
