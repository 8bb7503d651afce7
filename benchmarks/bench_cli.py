"""What two pieces of CLI plumbing earn, end to end, in one run: the embedded server's
flow-run heartbeats turned off (``cli.backend``), and the Prefect API URL handed to Dask
workers through Prefect's private ``SubprocessASGIServer`` (``flows.runners``).

    .venv/bin/python benchmarks/bench_cli.py [--mnist ../shared/mnist] [--rounds 7]
                                             [--dask-rounds 3] [--rows 20000] [--files 2]

(``MNIST_DIR=<mnist folder>`` too when the checkout is not beside ../shared.)

Every command is ``mnist-pipeline`` of this checkout in a fresh process, as a user runs
it, with no PREFECT_API_URL (so on Prefect's embedded server):

1. warm ``train`` (every step Cached, after one cold run): heartbeats off, as shipped, vs
   on (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=180, Prefect's default, which the CLI respects);
2. ``score --dask-local 2`` of ``--files`` CSV files of ``--rows`` real MNIST rows with
   the champion of step 1, the workers' API URL from (a) ``SubprocessASGIServer``, as
   shipped: the ephemeral server the flow itself uses; (b) a ``prefect server start``
   subprocess (public CLI) started for the command; (c) nothing: the workers get no URL.

Each round runs every variant once, in a rotated order; ratios are per round, and the
summary gives their medians.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

# Runs the CLI with flows.runners.api_for_workers replaced as BENCH_DASK_API says.
WRAPPER = """
import contextlib, os, shutil, sys, tempfile
from pathlib import Path
import flows.runners as runners

@contextlib.contextmanager
def public_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from cli.stack import port_is_free, start_server, stop_server
    port = next(p for p in range(4300, 4400) if port_is_free(p))
    home = Path(tempfile.mkdtemp(prefix="bench-server-"))
    proc, api = start_server(port, home)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield
    finally:
        stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)

mode = os.environ["BENCH_DASK_API"]
if mode == "server":
    runners.api_for_workers = public_server
elif mode == "none":
    runners.api_for_workers = contextlib.nullcontext
from cli.main import main
sys.exit(main())
"""


def cli(args: list[str], home: Path, extra: dict[str, str] | None = None) -> float:
    """Wall seconds of one ``mnist-pipeline`` command (via WRAPPER); exits on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(home), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", BENCH_DASK_API="asgi")  # fmt: skip
    env.update(extra or {})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} {extra} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return took


def rounds(variants: dict[str, list], n: int, home: Path) -> dict[str, list[float]]:
    """Run each variant (args, extra env) once per round, the order rotated each round."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            command, extra = variants[name]
            times[name].append(cli(command, home, extra))
        print(f"  round {r + 1}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))  # noqa: T201
    return times


def summary(times: dict[str, list[float]], base: str) -> None:
    for name, walls in times.items():
        ratios = [w / b for w, b in zip(walls, times[base], strict=True)]
        print(f"  {name:<28} median {statistics.median(walls):6.2f}s   "  # noqa: T201
              f"/ {base}: median {statistics.median(ratios):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--rounds", type=int, default=7, help="of warm train")
    parser.add_argument("--dask-rounds", type=int, default=3, help="of score on Dask")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--files", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    from bench_score import write_kaggle_csv

    print(f"cores: {os.cpu_count()}; load: {os.getloadavg()}")  # noqa: T201
    home, artifacts = tmp / "prefect-home", tmp / "artifacts"
    train = ["train", "--mirror", str(args.mnist), "--artifacts", str(artifacts)]
    print(f"cold train: {cli(train, home):.2f}s")  # noqa: T201
    print("1. warm train, heartbeats:")  # noqa: T201
    times = rounds({
        "off (shipped)": (train, {}),
        "on (Prefect default, 180)": (train, {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "180"}),
    }, args.rounds, home)  # fmt: skip
    summary(times, "off (shipped)")

    inputs = [tmp / f"digits{k}.csv" for k in range(args.files)]
    write_kaggle_csv(inputs[0], args.rows)
    for f in inputs[1:]:
        shutil.copyfile(inputs[0], f)
    score = ["score", *map(str, inputs), "--output-dir", str(tmp / "out"),
             "--artifacts", str(artifacts), "--dask-local", "2"]  # fmt: skip
    print(f"2. score --dask-local 2, {args.files} x {args.rows:,} rows, workers' API:")  # noqa: T201
    variants = {
        "SubprocessASGIServer": (score, {}),
        "prefect server start": (score, {"BENCH_DASK_API": "server"}),
        "none": (score, {"BENCH_DASK_API": "none"}),
    }
    try:
        cli(score, home, {"BENCH_DASK_API": "none"})
    except SystemExit as exc:
        print(f"  none: fails, so it is left out:\n{str(exc)[-1500:]}")  # noqa: T201
        del variants["none"]
    summary(rounds(variants, args.dask_rounds, home), "SubprocessASGIServer")


if __name__ == "__main__":
    main()
