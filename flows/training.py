"""The ``mnist-training`` flow: ingest (+ the user's labeled files) ─► train ─► evaluate
─► persist ─► promote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.futures import PrefectFuture

from core import registry
from core.evaluation import evaluation_outputs
from core.lineage import REJECTS_DIR, labeled_lineage, rejects_names
from core.settings import Settings, labeled_entries, training_timeout
from core.training import FIT_FILE, check_labeled_options, fingerprint, resolve_config
from flows import name_this_run, report, results_in_order, submit_cached
from flows.ingest import labeled_files, submit_ingestion, submit_labeled
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
    labeled: list[str] | None = None,
    max_reject_fraction: float = 0.01,
    labeled_holdout: float = 0.1,
    promote_on: str = "mnist",
) -> dict[str, Any]:
    """Train the NumPy network on MNIST (and the user's labeled files) and promote it if it
    is no worse than the champion.

    Hyperparameters left as None take the preset's value; batch_size=0 means full batch.
    ``labeled``: paths, globs or store URLs of labeled CSV or Parquet files (None: the
    ``MNIST_LABELED`` environment variable's); a file with more than
    ``max_reject_fraction`` of its rows rejected fails the run. ``labeled_holdout`` of each
    file's rows measure the model instead of training it; ``promote_on`` is the champion
    gate: ``mnist`` (test accuracy) or ``labeled`` (labeled holdout accuracy).
    """
    settings = Settings.from_env(artifacts=artifacts, mirror=mirror, checksums_file=checksums_file)
    check_labeled_options(max_reject_fraction, labeled_holdout, promote_on)
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
    # Every labeled file named and hashed before anything runs: an entry that matches no
    # file is one line, and the hashes are part of the run's identity.
    inbox = labeled_files(labeled_entries(labeled))
    futures = submit_ingestion(settings, force)
    run_id = fingerprint(settings.checksums, config, [f.sha256 for f in inbox], labeled_holdout)
    name_this_run(f"train-{preset}-{run_id[:8]}")
    work_dir = settings.artifacts / "training" / run_id
    futures.update(
        submit_labeled(
            settings, inbox, futures["convert test"], max_reject_fraction,
            work_dir / REJECTS_DIR, force,
        )
    )  # fmt: skip
    user_data, holdout = None, 0.0  # MNIST alone: train and evaluate as they always did
    if inbox:
        # Training needs every labeled file: a refused one fails the run here, as itself.
        done = results_in_order(futures)
        # In content order: the same files, however named or listed, train the same model.
        user_data = sorted((done[f.step] for f in inbox), key=lambda r: r["sha256"])
        holdout = labeled_holdout
    rejects = [work_dir / REJECTS_DIR / name for name in rejects_names(user_data or []).values()]
    # Each step starts when the file it reads exists: a convert future as an argument is
    # waited for, and its result (path, rows, SHA-256) is what the step reads and keys on.
    # Keyed on the Parquet file's own hash, not the source checksums: the simplest key
    # that is always the bytes the step reads, with no need to reason about conversion.
    futures["train"] = submit_cached(
        train_model, settings, [work_dir / FIT_FILE, *rejects], force, "train",
        train=futures["convert train"], config=config, work_dir=str(work_dir),
        labeled=user_data, holdout=holdout,
    )  # fmt: skip
    futures["evaluate"] = submit_cached(
        evaluate_model, settings, evaluation_outputs(work_dir), force, "evaluate",
        fit=futures["train"], test=futures["convert test"], work_dir=str(work_dir),
        labeled=user_data, holdout=holdout,
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
            labeled=user_data,
            holdout=holdout,
            promote_on=promote_on,
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
        "labeled_rows": done["train"].get("labeled_rows", 0),
        "labeled_holdout_accuracy": done["evaluate"].get("labeled_holdout_accuracy"),
        "labeled_data": labeled_lineage(
            user_data or [], done["evaluate"].get("labeled_held_out", {})
        ),
        "labeled_leaked": {r["source"]: r["leaked"] for r in user_data or []},
        "rejects": [str(path) for path in rejects],
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
    labeled: Sequence[dict[str, Any]] | None = None,
    holdout: float = 0.0,
    promote_on: str = "mnist",
) -> dict[str, PrefectFuture]:
    """Submit the persist and promote steps for one trained and evaluated model.

    ``fit`` and ``evaluation`` are the train and evaluate steps' futures or results;
    ``labeled`` the labeled files' records it learned from, ``holdout`` their fraction
    held out. Persisting is keyed on ``run_id``, so a model already published is found,
    not copied. ``promote_on`` is the champion gate (``registry.GATES``).
    """
    models_dir = settings.models_dir
    published = registry.find_published(models_dir, run_id)
    data = {
        "train_parquet_sha256": train_data["sha256"],
        "test_parquet_sha256": test_data["sha256"],
        "source_sha256": settings.checksums,
    }
    if labeled:  # a model of MNIST alone records exactly what it always did
        data["labeled_holdout"] = holdout
        data["labeled_leaked"] = {r["sha256"]: r["leaked"] for r in labeled}
    persist = submit_cached(
        publish_model, settings,
        [published / registry.BUNDLE if published else models_dir / "unpublished"], force,
        "persist",
        fit=fit, evaluation=evaluation, fingerprint=run_id, data=data,
        models_dir=str(models_dir), labeled=list(labeled) if labeled else None,
    )  # fmt: skip
    promote = submit_cached(
        promote_model, settings, [models_dir / registry.CHAMPION], force, "promote",
        version=persist.result()["version"], models_dir=str(models_dir),
        tolerance=tolerance, force_promote=force_promote, preset=preset, promote_on=promote_on,
        labeled=list(labeled) if labeled else None, holdout=holdout,
    )  # fmt: skip
    return {"persist": persist, "promote": promote}
