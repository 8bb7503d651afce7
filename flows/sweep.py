"""The ``mnist-sweep`` flow: one data set, a grid of configs, the best one through the gate.

ingest once ─► train + evaluate each config (one task each, in parallel on any runner)
  ─► pick the best by *validation* accuracy ─► persist it ─► promote if no worse

The test set only reports: choosing by test accuracy would make the reported test accuracy
an optimistic estimate. Every train and evaluate step is the training flow's own, cached on
content, so a config the training flow (or an earlier sweep) already ran is reused.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from core import registry
from core.evaluation import evaluation_outputs
from core.settings import Settings
from core.training import FIT_FILE, fingerprint, resolve_config
from flows import report, results_in_order, submit_cached
from flows.ingest import submit_ingestion
from flows.runners import outcome, rerun_on_dask, wants_dask_subflow
from flows.training import submit_publication
from tasks.evaluate import evaluate_model
from tasks.train import train_model


def grid_configs(
    preset: str,
    hidden: list[list[int]] | None = None,
    learning_rates: list[float] | None = None,
    seeds: list[int] | None = None,
    **fixed: Any,
) -> list[dict[str, Any]]:
    """Every distinct config of the grid, in grid order; an axis left None keeps the
    preset's value. ValueError for an invalid config or an empty axis."""
    axes = {"hidden": hidden, "learning_rate": learning_rates, "seed": seeds}
    for name, values in axes.items():
        if values is not None and not values:
            raise ValueError(f"the sweep's {name} axis is empty")
    configs: list[dict[str, Any]] = []
    for h, lr, seed in itertools.product(*(values or [None] for values in axes.values())):
        config = resolve_config(preset, hidden=h, learning_rate=lr, seed=seed, **fixed)
        if config not in configs:
            configs.append(config)
    return configs


def config_label(config: dict[str, Any]) -> str:
    """A short name for a config within a sweep, e.g. ``hidden=128,64 lr=0.05 seed=1``."""
    hidden = ",".join(str(h) for h in config["hidden"])
    return f"hidden={hidden} lr={config['learning_rate']:g} seed={config['seed']}"


@flow(name="mnist-sweep", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2))
def sweep_flow(
    hidden: list[list[int]] | None = None,
    learning_rates: list[float] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    preset: str = "default",
    mirror: str | list[str] | None = None,
    artifacts: str | None = None,
    checksums_file: str | None = None,
    force: bool = False,
    promote_tolerance: float = 0.0,
    dask_address: str | None = None,
    dask_local: int | None = None,
) -> dict[str, Any]:
    """Train one model per config of the grid hidden x learning_rates x seeds, evaluate
    each, and persist and promote (if no worse than the champion) the best by validation
    accuracy. Axes left None take the preset's value; batch_size=0 means full batch."""
    if wants_dask_subflow(dask_address, dask_local):
        return rerun_on_dask()
    settings = Settings.from_env(artifacts=artifacts, mirror=mirror, checksums_file=checksums_file)
    configs = grid_configs(
        preset, hidden, learning_rates, seeds, epochs=epochs, batch_size=batch_size
    )
    futures = submit_ingestion(settings, force)
    ingested = results_in_order(futures)  # a failure raises as its root cause
    train_data, test_data = ingested["convert train"], ingested["convert test"]

    runs = []
    for config in configs:
        run_id = fingerprint(settings.checksums, config)
        work_dir = settings.artifacts / "training" / run_id
        label = config_label(config)
        fit = futures[f"train {label}"] = submit_cached(
            train_model, settings, [work_dir / FIT_FILE], force, f"train {label}",
            train=train_data, config=config, work_dir=str(work_dir),
        )  # fmt: skip
        futures[f"evaluate {label}"] = submit_cached(
            evaluate_model, settings, evaluation_outputs(work_dir), force, f"evaluate {label}",
            fit=fit, test=test_data, work_dir=str(work_dir),
        )  # fmt: skip
        runs.append((label, config, run_id))
    wait(list(futures.values()))
    outcomes = {step: outcome(future) for step, future in futures.items()}
    table = [_result_row(label, config, outcomes) for label, config, _ in runs]
    best = _best(table)
    label, config, run_id = runs[table.index(best)]
    best["chosen"] = True

    futures.update(
        submit_publication(
            settings,
            outcomes[f"train {label}"],
            outcomes[f"evaluate {label}"],
            run_id,
            train_data,
            test_data,
            force,
            tolerance=promote_tolerance,
            force_promote=False,
            preset=preset,
        )
    )
    steps = report(futures)
    create_table_artifact(
        table,
        key="mnist-sweep-results",
        description=f"{len(table)} configs; chosen by validation accuracy: {label}",
    )
    return {
        "steps": steps,
        "configs": table,
        "best": best,
        "version": futures["persist"].result()["version"],
        "model": futures["persist"].result()["path"],
        "promotion": futures["promote"].result(),
        "champion": registry.champion_version(settings.models_dir),
    }


def _result_row(label: str, config: dict[str, Any], outcomes: dict[str, Any]) -> dict[str, Any]:
    """One line of the sweep's table: the config, its accuracies, or why it failed."""
    fit, evaluation = outcomes[f"train {label}"], outcomes[f"evaluate {label}"]
    failure = next((r for r in (fit, evaluation) if isinstance(r, BaseException)), None)
    done = failure is None
    return {
        "config": label,
        "hidden": list(config["hidden"]),
        "learning_rate": config["learning_rate"],
        "seed": config["seed"],
        "validation_accuracy": fit["validation_accuracy"] if done else None,
        "test_accuracy": evaluation["test_accuracy"] if done else None,
        "train_seconds": round(fit["train_seconds"], 3) if done else None,
        "chosen": False,
        "error": None if done else str(failure),
    }


def _best(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest validation accuracy; the first in grid order on a tie."""
    done = [row for row in table if row["error"] is None]
    if not done:
        raise RuntimeError(f"every config of the sweep failed; the first: {table[0]['error']}")
    return max(done, key=lambda row: row["validation_accuracy"])
