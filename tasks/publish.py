"""Persistence and promotion tasks: a versioned joblib bundle, then the champion gate."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core import registry
from core.files import atomic_write_text
from core.safe_joblib import safe_load
from tasks import CONTENT
from tasks.evaluate import METRICS_FILE, PLOTS

REPORT_FILE = "report.md"
PACKAGES = ("numpy", "prefect", "pandas", "pyarrow", "joblib")


def package_versions() -> dict[str, str]:
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


@task(cache_policy=CONTENT)
def publish_model(
    fit: dict[str, Any],
    evaluation: dict[str, Any],
    data: dict[str, Any],
    fingerprint: str,
    models_dir: Path,
) -> dict[str, Any]:
    """Persist weights, config, curve, metrics and provenance as a new model version."""
    record = safe_load(fit["path"])
    work_dir = Path(evaluation["metrics_path"]).parent
    bundle = {
        "params": record["params"],
        "config": record["config"],
        "classes": list(range(record["config"]["n_classes"])),
        "curve": record["curve"],
        "metrics": json.loads(Path(evaluation["metrics_path"]).read_text()),
        "data": data,
        "fingerprint": fingerprint,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(),
    }
    extra = {name: work_dir / name for name in (METRICS_FILE, *PLOTS)}
    version = registry.publish(Path(models_dir), bundle, extra)
    get_run_logger().info("model saved as version %s", version)
    return {"version": version, "path": str(Path(models_dir) / version / registry.BUNDLE)}


@task(cache_policy=CONTENT)
def promote_model(
    version: str, models_dir: Path, tolerance: float = 0.0, force_promote: bool = False
) -> dict[str, Any]:
    """Make the new version champion unless it is worse; write the report saying which."""
    decision = registry.promote_if_not_worse(Path(models_dir), version, tolerance, force_promote)
    version_dir = Path(models_dir) / version
    metrics = json.loads((version_dir / METRICS_FILE).read_text())
    report = render_report(version, metrics, decision)
    atomic_write_text(version_dir / REPORT_FILE, report)
    create_markdown_artifact(report, key="mnist-training-report", description=f"model {version}")
    create_table_artifact(
        [
            {"class": k, **{m: round(v, 4) for m, v in row.items()}}
            for k, row in metrics["per_class"].items()
        ],
        key="mnist-training-per-class",
        description=f"per-class test metrics of model {version}",
    )
    get_run_logger().info(
        "%s: %s", "promoted" if decision["promoted"] else "not promoted", decision["reason"]
    )
    return {**decision, "report": str(version_dir / REPORT_FILE)}


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
