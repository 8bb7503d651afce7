"""Deployment latency: a watched `prefect deployment run` of mnist-training/nightly against
the same flow through the CLI, on synthetic data (300 train / 100 test images).

Starts a real `prefect server` on a free loopback port and `mnist-pipeline serve`, then
times, cold (fresh artifacts roots, every step computed) and warm (every step Cached):

  cli        `mnist-pipeline train …` against the same server (the flow's CLI runtime)
  deployment `prefect deployment run 'mnist-training/nightly' --param … --watch`, split by
             the flow run's state history into
               client  the prefect CLI starting until the run exists (Scheduled)
               poll    Scheduled -> Pending: the serve process noticing the run
               start   Pending -> Running: a new flow-run process importing the flow
               flow    Running -> Completed
               watch   Completed -> the watching command exiting
Target (issue 6): deployment <= scheduling latency (poll + start) + cli + 5 s.

    .venv/bin/python benchmarks/bench_deployment.py [--epochs 2] [--poll-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli.stack import start_server, stop_server  # noqa: E402
from flows.deployments import TRAINING  # noqa: E402
from tests.support import free_port, write_mirror  # noqa: E402


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a command; return (wall seconds, stdout)."""
    t = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def deployment_run(env: dict[str, str], params: dict) -> tuple[float, float, uuid.UUID]:
    flags = [f"--param={k}={json.dumps(v)}" for k, v in params.items()]
    t0 = time.time()
    seconds, out = run([sys.executable, "-m", "prefect", "deployment", "run", TRAINING, *flags,
                        "--watch"], env)  # fmt: skip
    return t0, seconds, uuid.UUID(re.search(r"UUID: ([0-9a-f-]{36})", out).group(1))


def breakdown(flow_run_id: uuid.UUID, t0: float, total: float) -> dict[str, float]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        run = c.read_flow_run(flow_run_id)
        states = c.read_flow_run_states(flow_run_id)
    at = {s.name: s.timestamp.timestamp() for s in states}
    created = run.created.timestamp()
    return {
        "client": created - t0,
        "poll": at["Pending"] - created,
        "start": at["Running"] - at["Pending"],
        "flow": at["Completed"] - at["Running"],
        "watch": t0 + total - at["Completed"],
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--poll-seconds", type=float, default=10.0, help="serve's poll interval (Prefect: 10)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    checksums = write_mirror(work / "mirror")
    base = {
        **os.environ,
        "PREFECT_HOME": str(work / "client-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MNIST_CHECKSUMS_FILE": str(checksums),
        "COLUMNS": "250",
    }
    os.environ.update(base)
    server, api = start_server(free_port(), work / "server-home")
    env = {**base, "PREFECT_API_URL": api}
    os.environ["PREFECT_API_URL"] = api
    serve = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(work / "served"),
         "--poll-seconds", str(args.poll_seconds)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as c:
            while True:
                try:
                    c.read_deployment_by_name(TRAINING)
                    break
                except ObjectNotFound:
                    time.sleep(0.5)
        time.sleep(args.poll_seconds)  # let serve settle into its poll loop
        params = {"mirror": str(work / "mirror"), "epochs": args.epochs}
        cli_args = [sys.executable, "-m", "cli.main", "train", "--mirror", str(work / "mirror"),
                    "--epochs", str(args.epochs), "--artifacts", str(work / "cli")]  # fmt: skip
        rows = {}
        for label in ("cold", "warm"):
            cli, _ = run(cli_args, env)
            t0, total, run_id = deployment_run(env, params)
            rows[label] = (cli, breakdown(run_id, t0, total))
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        stop_server(server)
        shutil.rmtree(work, ignore_errors=True)

    print(f"synthetic data, {args.epochs} epochs, serve polls every {args.poll_seconds:g} s")
    heads = ("cli", "client", "poll", "start", "flow", "watch")
    print(f"{'':<7}" + "".join(f"{h:>7}" for h in heads) + f"{'deploy':>8}{'target':>8}")
    for label, (cli, b) in rows.items():
        target = b["poll"] + b["start"] + cli + 5
        verdict = "PASS" if b["total"] <= target else "FAIL"
        cells = [cli, b["client"], b["poll"], b["start"], b["flow"], b["watch"]]
        print(f"{label:<7}" + "".join(f"{x:7.2f}" for x in cells)
              + f"{b['total']:8.2f}{target:8.2f}  {verdict}")  # fmt: skip
    print("target = poll + start (Prefect's scheduling latency) + cli + 5 s")


if __name__ == "__main__":
    main()
