"""Side by side: `mnist-pipeline train` of two (or more) checkouts, cold and warm, and
the train step's `train_seconds` against scikit-learn's MLPClassifier fit, in one run.

    /tmp/venv-with-sklearn/bin/python benchmarks/bench_train_cli.py \\
        --side today=/tmp/old-checkout --side new=. [--mnist ../shared/mnist] [--repeats 3]

Each side is a checkout, run as a user runs it: its own CLI in a fresh process
(`python -m cli.main train`, or `python -m flows.cli train` for checkouts from before
cli/ existed) with no PREFECT_API_URL, so each command starts Prefect's embedded server.
A cold run trains on a fresh artifacts root from the mirror folder; the warm run repeats
the command on that root (every step Cached). Each round runs every side's cold and warm
command, the sides in a rotated order, then fits scikit-learn's MLPClassifier (784-10-10,
batch 64, 10 epochs, sgd, the default preset's lr and momentum, constant rate) on the
same 55k training rows in this process. Ratios are per round; the summary gives medians.
Needs scikit-learn (requirements-bench.txt) in the interpreter that runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_model import emit, load_mnist, train_sklearn  # noqa: E402

from model.config import preset  # noqa: E402
from model.train import seed_streams, split_indices  # noqa: E402


def cli_command(checkout: Path) -> list[str]:
    module = "cli.main" if (checkout / "cli" / "main.py").is_file() else "flows.cli"
    return ["-m", module, "train"]


def run_train(python: str, checkout: Path, mnist: Path, artifacts: Path, home: Path) -> float:
    """Wall seconds of one `train` command of ``checkout`` on ``artifacts``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PYTHONPATH=str(checkout),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    command = [python, *cli_command(checkout), "--mirror", str(mnist)]
    command += ["--artifacts", str(artifacts)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: train exited {done.returncode}\n{done.stderr[-3000:]}")
    return took


def train_seconds(artifacts: Path) -> float:
    (metrics,) = (artifacts / "models").glob("*/metrics.json")
    return json.loads(metrics.read_text())["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", action="append", required=True, help="NAME=CHECKOUT")
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default=sys.executable, help="interpreter for the CLIs")
    args = parser.parse_args()
    sides = {name: Path(path).resolve() for name, path in (s.split("=", 1) for s in args.side)}

    X, y, _, _ = load_mnist(args.mnist)
    cfg = preset("default")
    rows, _ = split_indices(len(y), cfg.validation_fraction, seed_streams(cfg.seed)[1])
    X_fit, y_fit = X[rows], y[rows]
    train_sklearn(X_fit, y_fit, cfg)  # untimed warm-up: imports, first-call costs

    work = Path(tempfile.mkdtemp(prefix="bench-train-cli-"))
    results: dict[str, dict[str, list[float]]] = {
        name: {"cold": [], "warm": [], "train_seconds": []} for name in sides
    }
    sklearn: list[float] = []
    names = list(sides)
    for k in range(args.repeats):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            artifacts, home = work / f"{name}-{k}", work / f"home-{name}-{k}"
            home.mkdir()
            cold = run_train(args.python, sides[name], args.mnist, artifacts, home)
            warm = run_train(args.python, sides[name], args.mnist, artifacts, home)
            results[name]["cold"].append(cold)
            results[name]["warm"].append(warm)
            results[name]["train_seconds"].append(train_seconds(artifacts))
            shutil.rmtree(artifacts, ignore_errors=True)
        started = time.perf_counter()
        train_sklearn(X_fit, y_fit, cfg)
        sklearn.append(time.perf_counter() - started)
        emit(
            f"round {k + 1}: sklearn fit {sklearn[-1]:.2f} s; "
            + "; ".join(
                f"{n} cold {r['cold'][-1]:.2f} s, warm {r['warm'][-1]:.2f} s, "
                f"train_seconds {r['train_seconds'][-1]:.2f}"
                for n, r in results.items()
            )
        )
    shutil.rmtree(work, ignore_errors=True)
    report(results, sklearn)


def report(results: dict[str, dict[str, list[float]]], sklearn: list[float]) -> None:
    emit()
    emit(f"sklearn MLPClassifier fit: median {statistics.median(sklearn):.2f} s")
    for name, r in results.items():
        ratio = [t / s for t, s in zip(r["train_seconds"], sklearn, strict=True)]
        emit(
            f"{name:>10}: cold median {statistics.median(r['cold']):.2f} s, warm median "
            f"{statistics.median(r['warm']):.2f} s, train_seconds median "
            f"{statistics.median(r['train_seconds']):.2f} s = "
            f"{statistics.median(ratio):.2f}x sklearn (rounds "
            + ", ".join(f"{x:.2f}" for x in ratio)
            + ")"
        )
    first, *others = results
    for name in others:
        for kind in ("cold", "warm"):
            ratios = [b / a for a, b in zip(results[first][kind], results[name][kind], strict=True)]
            emit(
                f"{name} / {first} {kind}: median {statistics.median(ratios):.2f}x (rounds "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + ")"
            )


if __name__ == "__main__":
    main()
