"""A warm nightly run with an unchanged inbox against a warm run on MNIST alone (issue 22:
"as fast as today's warm run"), side by side: whole ``train`` commands as a user runs them.

    .venv/bin/python benchmarks/bench_labeled_warm.py [--rounds 5] [--rows 20000]
                                                      [--mnist ../shared/mnist]

Two artifacts roots, each trained once (cold): one on MNIST alone, one on MNIST plus an
inbox of ``--rows`` shifted digits (benchmarks.shifted_digits). Then each round runs the
same ``train`` again on both, in alternating order, in fresh processes on Prefect's
embedded server (no PREFECT_API_URL): every step Cached. The ratio (inbox / MNIST alone)
is per round; the summary gives the medians. The inbox's run also hashes the file and
checks that its conversion is Cached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.shifted_digits import generate

REPO = Path(__file__).resolve().parents[1]


def train(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "train", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"train {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-labeled-warm-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MNIST_LABELED")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_HOME=str(tmp / "prefect-home"))  # fmt: skip
    try:
        inbox = tmp / "inbox"
        inbox.mkdir()
        generate(inbox / "shifted.csv", args.rows, seed=7, mnist_dir=args.mnist)
        commands = {
            "mnist": ["--mirror", str(args.mnist), "--artifacts", str(tmp / "mnist")],
            "inbox": ["--mirror", str(args.mnist), "--artifacts", str(tmp / "inbox-root"),
                      "--labeled", str(inbox / "*.csv")],
        }  # fmt: skip
        for name, command in commands.items():
            seconds, _ = train(command, env)
            print(f"cold {name}: {seconds:.2f} s", flush=True)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for r in range(args.rounds):
            order = list(commands) if r % 2 == 0 else list(reversed(commands))
            for name in order:
                seconds, stdout = train(commands[name], env)
                if "Completed" in stdout.split("test accuracy")[0]:
                    raise SystemExit(f"warm {name} ran a step again:\n{stdout}")
                times[name].append(seconds)
            print(f"round {r + 1}: " + ", ".join(
                f"{n} {times[n][-1]:.2f} s" for n in commands), flush=True)  # fmt: skip
        ratios = [a / b for a, b in zip(times["inbox"], times["mnist"], strict=True)]
        mnist, with_inbox = statistics.median(times["mnist"]), statistics.median(times["inbox"])
        print(f"\nwarm train, medians over {args.rounds} rounds: MNIST alone {mnist:.2f} s, "
              f"with a {args.rows}-row inbox {with_inbox:.2f} s, "
              f"ratio {statistics.median(ratios):.2f}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
