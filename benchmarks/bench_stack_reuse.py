"""CLI commands with a stack running on their root against the embedded server, side by side.

    .venv/bin/python benchmarks/bench_stack_reuse.py [--rounds 3] [--rows 100000]
                                                      [--preset default] [--mnist ../shared/mnist]

Two artifacts roots, both trained once from real MNIST (untimed, so that both are warm):
root A with ``mnist-pipeline stack`` running on it, root B with none. Each command is
``python -m cli.main …`` in a fresh process, as a user types it, in three ways:

* ``stack``: on A with no PREFECT_API_URL: it finds the stack (``.prefect/stack.json``);
* ``api-url``: on A with PREFECT_API_URL set to the same stack (the configured route:
  what finding the stack costs on top of it is the difference);
* ``embedded``: on B with no PREFECT_API_URL: it starts Prefect's embedded server.

Per round, in rotating order:

1. warm ``train`` (every step Cached);
2. ``score`` of a CSV of ``--rows`` real MNIST training rows (Kaggle layout) with the champion.

The summary gives the medians, the ratios stack / embedded and stack / api-url per
command, and issue 23's target (a warm ``train`` and a 100k-row ``score`` in 3.5 s or
less with a stack up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_versions import kaggle_csv  # noqa: E402

TARGET_SECONDS = 3.5


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``mnist-pipeline ARGS``; (seconds, stderr)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stderr


def start_stack(artifacts: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``mnist-pipeline stack`` on ``artifacts`` (a free port), once it has recorded itself;
    (its process, its API URL)."""
    sys.path.insert(0, str(REPO))
    from tests.support import free_port

    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "stack", "--artifacts", str(artifacts),
         "--port", str(free_port())],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    record = artifacts / ".prefect" / "stack.json"
    deadline = time.monotonic() + 300
    while not (record.exists() and json.loads(record.read_text())["pid"] == proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the stack did not start:\n{log.read_text()}")
        time.sleep(0.5)
    return proc, json.loads(record.read_text())["api"]


def one_round(artifacts: Path, csv: Path, out: Path, env: dict, flags: list) -> dict:
    train = ["train", "--mirror", str(env["MNIST_MIRROR"]), "--artifacts", str(artifacts), *flags]
    warm, said = run(train, env)
    shutil.rmtree(out, ignore_errors=True)
    score, _ = run(["score", str(csv), "--output-dir", str(out), "--artifacts",
                    str(artifacts)], env)  # fmt: skip
    server = next((line.split(" - ", 1)[-1] for line in said.splitlines()
                   if "Prefect server: " in line), "the configured PREFECT_API_URL")  # fmt: skip
    return {"warm train": warm, "score": score, "server": server}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stack-reuse-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_HOME=str(tmp / "prefect-home"), MNIST_MIRROR=str(args.mnist))  # fmt: skip
    roots = {"stack": tmp / "with-stack", "embedded": tmp / "no-stack"}
    flags = ["--preset", args.preset]
    stack = None
    try:
        csv = tmp / "digits.csv"
        kaggle_csv(csv, args.mnist, args.rows)
        for root in roots.values():  # cold: ingest, train, promote (untimed)
            run(["train", "--artifacts", str(root), *flags], env)
        stack, api = start_stack(roots["stack"], env, tmp / "stack.log")
        ways = {  # name: (root, environment)
            "stack": (roots["stack"], env),
            "api-url": (roots["stack"], {**env, "PREFECT_API_URL": api}),
            "embedded": (roots["embedded"], env),
        }
        print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in ways}
        for r in range(args.rounds):
            names = list(ways)
            for name in names[r % 3 :] + names[: r % 3]:
                root, way_env = ways[name]
                result = one_round(root, csv, tmp / f"out-{name}", way_env, flags)
                runs[name].append(result)
                print(f"round {r + 1} {name:<8}: warm train {result['warm train']:.2f} s, "
                      f"score {result['score']:.2f} s  [{result['server'][:60]}]",
                      flush=True)  # fmt: skip
        print(f"\nmedians over {args.rounds} rounds ({args.rows} rows scored; "
              f"load average at end {os.getloadavg()[0]:.1f}):")  # fmt: skip
        for command in ("warm train", "score"):
            seconds = {name: [run[command] for run in runs[name]] for name in ways}
            best = statistics.median(seconds["stack"])
            ratio = {
                other: statistics.median(
                    [a / b for a, b in zip(seconds["stack"], seconds[other], strict=True)]
                )
                for other in ("embedded", "api-url")
            }
            verdict = "met" if best <= TARGET_SECONDS else "MISSED"
            print(f"  {command:<10}  stack {best:6.2f} s  api-url "
                  f"{statistics.median(seconds['api-url']):6.2f} s  embedded "
                  f"{statistics.median(seconds['embedded']):6.2f} s  stack/embedded "
                  f"{ratio['embedded']:.2f}  stack/api-url {ratio['api-url']:.2f}  "
                  f"target <= {TARGET_SECONDS} s: {verdict}")  # fmt: skip
    finally:
        if stack is not None:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
