"""This checkout against an earlier commit, side by side: whole commands as a user runs them.

    .venv/bin/python benchmarks/bench_versions.py --base REV [--rounds 3] [--rows 100000]
                                                   [--preset default] [--epochs N]
                                                   [--mnist ../shared/mnist]

The base commit is checked out into a temporary git worktree and run with this
checkout's virtualenv (the dependencies must be the same). Each command is
``python -m cli.main …`` in a fresh process, with no PREFECT_API_URL (so on Prefect's
embedded server, whose database lives under the artifacts root), from real MNIST:

1. cold ``train`` (a new artifacts root: ingest from the local mirror, train, evaluate,
   persist, promote; ``--preset``, default ``default``);
2. warm ``train`` (the same again: every step Cached);
3. ``score`` of a CSV of ``--rows`` real MNIST rows (Kaggle layout) with that champion.

Each round runs both versions, in alternating order; the ratios (this / base) are per
round, and the summary gives their medians: these 2-core machines are noisy.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def kaggle_csv(path: Path, mnist: Path, rows: int) -> None:
    """``rows`` real MNIST training images with their labels, ``label,pixel0,…``."""
    raw = gzip.open(mnist / "train-images-idx3-ubyte.gz").read()[16:]
    images = np.frombuffer(raw, np.uint8).reshape(-1, 784)
    labels = np.frombuffer(gzip.open(mnist / "train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    index = np.arange(rows) % len(images)
    with open(path, "w") as f:
        f.write("label," + ",".join(f"pixel{k}" for k in range(784)) + "\n")
        for i in index:
            f.write(f"{labels[i]}," + ",".join(map(str, images[i])) + "\n")


def timed(checkout: Path, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=checkout, env={**env, "PYTHONPATH": str(checkout)},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise SystemExit(f"{checkout}: {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return seconds


def one_round(
    checkout: Path, work: Path, mnist: Path, csv: Path, env: dict[str, str], train_flags: list
) -> dict:
    artifacts = work / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)
    train = ["train", "--mirror", str(mnist), "--artifacts", str(artifacts), *train_flags]
    cold = timed(checkout, train, env)
    warm = timed(checkout, train, env)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    score = timed(checkout, ["score", str(csv), "--output-dir", str(out),
                             "--artifacts", str(artifacts)], env)  # fmt: skip
    return {"cold train": cold, "warm train": warm, "score": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-versions-"))
    base = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base],
                   cwd=REPO, check=True, capture_output=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        csv = tmp / "digits.csv"
        kaggle_csv(csv, args.mnist, args.rows)
        versions = {"this": REPO, "base": base}
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        flags = ["--preset", args.preset] + (["--epochs", str(args.epochs)] if args.epochs else [])
        for r in range(args.rounds):
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for name in order:
                work = tmp / name
                work.mkdir(exist_ok=True)
                env["PREFECT_HOME"] = str(work / "prefect-home")
                runs[name].append(one_round(versions[name], work, args.mnist, csv, env, flags))
                print(f"round {r + 1} {name}: " + ", ".join(
                    f"{k} {v:.2f} s" for k, v in runs[name][-1].items()), flush=True)  # fmt: skip
        print(f"\nmedians over {args.rounds} rounds (this = working tree, base = {args.base}):")
        for command in runs["this"][0]:
            this = [run[command] for run in runs["this"]]
            base_runs = [run[command] for run in runs["base"]]
            ratios = [a / b for a, b in zip(this, base_runs, strict=True)]
            print(f"  {command:<10}  this {statistics.median(this):6.2f} s  "
                  f"base {statistics.median(base_runs):6.2f} s  "
                  f"ratio {statistics.median(ratios):.2f}")  # fmt: skip
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
