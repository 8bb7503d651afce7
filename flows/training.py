"""The ``mnist-training`` flow: ingest ─► train ─► evaluate ─► persist ─► promote."""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectFuture

from core import registry
from core.evaluation import evaluation_outputs
from core.settings import Settings, training_timeout
from core.training import FIT_FILE, fingerprint, resolve_config
from flows import name_this_run, report, results_in_order, submit_cached
from flows.ingest import submit_ingestion
from flows.limits import timed_flow
from tasks.evaluate import evaluate_model
from tasks.publish import promote_model, publish_model
from tasks.train import train_model


# A hung run must not hold the nightly deployment's single slot forever.
@timed_flow(training_timeout, name="mnist-training")
def training_flow(
    preset: str = "default",
    hidden: list[int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    seed: int | None = None,
    validation_fraction: float | None = None,
    early_stopping_patience: int | None = None,
    mirror: str | list[str] | None = None,
    artifacts: str | None = None,
    checksums_file: str | None = None,
    force: bool = False,
    force_promote: bool = False,
    promote_tolerance: float = 0.0,
) -> dict[str, Any]:
    """Train the NumPy network on MNIST and promote it if it is no worse than the champion.

    Hyperparameters left as None take the preset's value; batch_size=0 means full batch.
    """
    settings = Settings.from_env(artifacts=artifacts, mirror=mirror, checksums_file=checksums_file)
    config = resolve_config(
        preset,
        hidden=hidden,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        momentum=momentum,
        seed=seed,
        validation_fraction=validation_fraction,
        early_stopping_patience=early_stopping_patience,
    )
    futures = submit_ingestion(settings, force)
    run_id = fingerprint(settings.checksums, config)
    name_this_run(f"train-{preset}-{run_id[:8]}")
    work_dir = settings.artifacts / "training" / run_id
    # Each step starts when the file it reads exists: a convert future as an argument is
    # waited for, and its result (path, rows, SHA-256) is what the step reads and keys on.
    # Keyed on the Parquet file's own hash, not the source checksums: the simplest key
    # that is always the bytes the step reads, with no need to reason about conversion.
    futures["train"] = submit_cached(
        train_model, settings, [work_dir / FIT_FILE], force, "train",
        train=futures["convert train"], config=config, work_dir=str(work_dir),
    )  # fmt: skip
    futures["evaluate"] = submit_cached(
        evaluate_model, settings, evaluation_outputs(work_dir), force, "evaluate",
        fit=futures["train"], test=futures["convert test"], work_dir=str(work_dir),
    )  # fmt: skip
    # Before publishing: a failed step raises here as itself (see results_in_order).
    done = results_in_order(futures)
    futures.update(
        submit_publication(
            settings,
            futures["train"],
            futures["evaluate"],
            run_id,
            done["convert train"],
            done["convert test"],
            force,
            tolerance=promote_tolerance,
            force_promote=force_promote,
            preset=preset,
        )
    )
    steps = report(futures)
    done = results_in_order(futures)
    return {
        "steps": steps,
        "version": done["persist"]["version"],
        "model": done["persist"]["path"],
        "promotion": done["promote"],
        "champion": registry.champion_version(settings.models_dir),
        "test_accuracy": done["evaluate"]["test_accuracy"],
        "test_log_loss": done["evaluate"]["test_log_loss"],
        "validation_accuracy": done["train"]["validation_accuracy"],
    }


def submit_publication(
    settings: Settings,
    fit: Any,
    evaluation: Any,
    run_id: str,
    train_data: dict[str, Any],
    test_data: dict[str, Any],
    force: bool,
    *,
    tolerance: float,
    force_promote: bool,
    preset: str | None = None,
) -> dict[str, PrefectFuture]:
    """Submit the persist and promote steps for one trained and evaluated model.

    ``fit`` and ``evaluation`` are the train and evaluate steps' futures or results.
    Persisting is keyed on ``run_id``, so a model already published is found, not copied.
    """
    models_dir = settings.models_dir
    published = registry.find_published(models_dir, run_id)
    persist = submit_cached(
        publish_model, settings,
        [published / registry.BUNDLE if published else models_dir / "unpublished"], force,
        "persist",
        fit=fit, evaluation=evaluation, fingerprint=run_id,
        data={
            "train_parquet_sha256": train_data["sha256"],
            "test_parquet_sha256": test_data["sha256"],
            "source_sha256": settings.checksums,
        },
        models_dir=str(models_dir),
    )  # fmt: skip
    promote = submit_cached(
        promote_model, settings, [models_dir / registry.CHAMPION], force, "promote",
        version=persist.result()["version"], models_dir=str(models_dir),
        tolerance=tolerance, force_promote=force_promote, preset=preset,
    )  # fmt: skip
    return {"persist": persist, "promote": promote}
