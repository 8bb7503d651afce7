"""Persistence and promotion tasks: a versioned joblib bundle, then the champion gate."""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core import registry
from core.code_digest import MODEL_PACKAGES, code_digest
from core.evaluation import METRICS_FILE, evaluation_outputs
from core.files import atomic_write_text
from core.report import REPORT_FILE, model_bundle, render_report
from core.storage import location
from tasks import CONTENT


@task(cache_policy=CONTENT)
def publish_model(
    fit: dict[str, Any],
    evaluation: dict[str, Any],
    data: dict[str, Any],
    fingerprint: str,
    models_dir: str,
) -> dict[str, Any]:
    """Persist weights, config, curve, metrics and provenance as a new model version."""
    models_dir, metrics_path = location(models_dir), location(evaluation["metrics_path"])
    bundle = model_bundle(location(fit["path"]), metrics_path, data, fingerprint)
    extra = {path.name: path for path in evaluation_outputs(metrics_path.parent)}
    version = registry.publish(models_dir, bundle, extra)
    get_run_logger().info("model saved as version %s", version)
    return {"version": version, "path": str(models_dir / version / registry.BUNDLE)}


@task(cache_policy=CONTENT)
def promote_model(
    version: str,
    models_dir: str,
    tolerance: float = 0.0,
    force_promote: bool = False,
    preset: str | None = None,
) -> dict[str, Any]:
    """Make the new version champion unless it is worse; write the report saying which."""
    models_dir = location(models_dir)
    decision = registry.promote_if_not_worse(models_dir, version, tolerance, force_promote)
    version_dir = models_dir / version
    metrics = json.loads((version_dir / METRICS_FILE).read_text())
    bundle = registry.load(models_dir, version).bundle
    provenance = {
        "preset": preset,
        "config": bundle["config"],
        "source_sha256": bundle["data"]["source_sha256"],
        "code_digest": code_digest(MODEL_PACKAGES),
    }
    report = render_report(version, metrics, decision, provenance, plots_dir=version_dir)
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
