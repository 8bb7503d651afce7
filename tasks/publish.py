"""Persistence and promotion tasks: a versioned joblib bundle, then the champion gate."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core import registry
from core.code_digest import MODEL_PACKAGES, code_digest
from core.evaluation import METRICS_FILE, champion_holdout_accuracy, evaluation_outputs
from core.files import atomic_write_text
from core.lineage import labeled_lineage
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
    labeled: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Persist weights, config, curve, metrics and provenance (with the lineage of each
    labeled file learned from) as a new model version."""
    models_dir, metrics_path = location(models_dir), location(evaluation["metrics_path"])
    lineage = labeled_lineage(labeled or [], evaluation.get("labeled_held_out", {}))
    bundle = model_bundle(location(fit["path"]), metrics_path, data, fingerprint, lineage)
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
    promote_on: str = "mnist",
    labeled: list[dict[str, Any]] | None = None,
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Make the new version champion unless it is worse by the ``promote_on`` gate (MNIST
    test accuracy, or labeled holdout accuracy); write the report saying which.

    ``labeled`` (the records of the files it learned from) and ``holdout`` (their share
    held out) are this run's holdout: the labeled gate measures a champion evaluated on
    another holdout on this one, when that is fair.
    """
    models_dir = location(models_dir)
    measure = partial(champion_holdout_accuracy, models_dir, labeled, holdout) if labeled else None
    decision = registry.promote_if_not_worse(
        models_dir, version, tolerance, force_promote, gate=promote_on,
        champion_holdout_accuracy=measure,
    )  # fmt: skip
    version_dir = models_dir / version
    metrics = json.loads((version_dir / METRICS_FILE).read_text())
    bundle = registry.load(models_dir, version).bundle
    provenance = {
        "preset": preset,
        "config": bundle["config"],
        "source_sha256": bundle["data"]["source_sha256"],
        "code_digest": code_digest(MODEL_PACKAGES),
        "labeled_data": bundle.get("labeled_data", []),
        "labeled_leaked": bundle["data"].get("labeled_leaked", {}),
        "labeled_holdout": bundle["data"].get("labeled_holdout"),
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
