"""The mnist-sweep flow: a grid of configs trained in parallel, the best through the gate."""

from __future__ import annotations

import pytest

from core import registry
from flows.sweep import _best, grid_configs, sweep_flow
from tests.conftest import run_cli

# ----------------------------------------------------------------------------- the grid


def test_grid_is_the_product_of_the_axes_without_repeats():
    configs = grid_configs("default", [[10], [64, 32], [10]], [0.05, 0.1], None, epochs=2)
    assert [(c["hidden"], c["learning_rate"]) for c in configs] == [
        ([10], 0.05),
        ([10], 0.1),
        ([64, 32], 0.05),
        ([64, 32], 0.1),
    ]
    assert {c["seed"] for c in configs} == {0} and {c["epochs"] for c in configs} == {2}
    assert len(grid_configs("default")) == 1  # no axis: the preset itself
    with pytest.raises(ValueError, match="axis is empty"):
        grid_configs("default", seeds=[])
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        grid_configs("default", learning_rates=[0.1, -1.0])


def row(config, val, test, error=None):
    return {"config": config, "validation_accuracy": val, "test_accuracy": test, "error": error}


def test_best_is_chosen_by_validation_never_by_test_accuracy():
    table = [
        row("a", 0.90, 0.99),
        row("b", 0.95, 0.80),
        row("c", 0.95, 0.97),
        row("d", None, None, "boom"),
    ]
    assert _best(table)["config"] == "b"  # highest validation; the first of a tie
    with pytest.raises(RuntimeError, match="every config of the sweep failed; the first: x"):
        _best([row("a", None, None, "x")])


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cluster(prefect_api):
    """A real two-process Dask cluster on 127.0.0.1."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as local:
        yield local


@pytest.mark.e2e
def test_sweep_on_dask_promotes_the_best_config_then_is_cached(mirror, artifacts, cluster):
    def sweep():
        return sweep_flow(
            hidden=[[4], [32]],
            learning_rates=[1e-4, 0.1],
            seeds=[0],
            epochs=3,
            mirror=str(mirror[0]),
            checksums_file=str(mirror[1]),
            artifacts=str(artifacts),
            dask_address=cluster.scheduler_address,
        )

    result = sweep()
    table = result["configs"]
    assert [r["config"] for r in table] == [
        "hidden=4 lr=0.0001 seed=0",
        "hidden=4 lr=0.1 seed=0",
        "hidden=32 lr=0.0001 seed=0",
        "hidden=32 lr=0.1 seed=0",
    ]
    assert all(r["error"] is None and 0 <= r["test_accuracy"] <= 1 for r in table)
    top = max(r["validation_accuracy"] for r in table)
    expected = next(r for r in table if r["validation_accuracy"] == top)
    assert [r["chosen"] for r in table] == [r is expected for r in table]
    assert result["best"]["config"] == expected["config"] and expected["learning_rate"] == 0.1

    # The chosen config went through the same champion gate as a training run.
    assert result["promotion"]["promoted"] and "first model" in result["promotion"]["reason"]
    assert registry.read_champion(artifacts / "models")["version"] == result["version"]
    champion = registry.load(artifacts / "models")
    assert list(champion.config.hidden) == expected["hidden"]
    assert champion.bundle["metrics"]["test_accuracy"] == expected["test_accuracy"]
    assert len(registry.list_versions(artifacts / "models")) == 1  # only the best is saved
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["train hidden=32 lr=0.1 seed=0"]["state"] == "Completed"
    assert steps["train hidden=32 lr=0.1 seed=0"]["seconds"] > 0  # timed on a worker

    again = sweep()
    assert {s["state"] for s in again["steps"]} == {"Cached"}
    assert again["version"] == result["version"] and again["configs"] == table


@pytest.mark.e2e
def test_cli_sweep_prints_the_table_and_the_verdict(mirror, artifacts, prefect_api):
    done = run_cli(
        "sweep",
        "--hidden-grid",
        "8",
        "16,8",
        "--learning-rates",
        "0.1",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "2",
        "--mirror",
        str(mirror[0]),
        "--checksums",
        str(mirror[1]),
        "--artifacts",
        str(artifacts),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if "lr=0.1 seed=" in line and not line.startswith("train")]
    assert len([r for r in rows if r.lstrip("* ").startswith("hidden=")]) >= 4
    assert sum(line.startswith("* hidden=") for line in lines) == 1
    assert any(line.startswith("chosen by validation accuracy: hidden=") for line in lines)
    assert any(
        line.startswith("promoted: ")
        and line.endswith(" is the champion (first model: no champion yet)")
        for line in lines
    )

    bad = run_cli("sweep", "--hidden-grid", "10,x", "--artifacts", str(artifacts))
    assert bad.returncode == 2 and "comma-separated list of layer widths" in bad.stderr
