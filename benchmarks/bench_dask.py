"""Scoring on Dask vs one process: speed-up, and what a Dask task costs beyond its work.

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_dask.py [--files 8] [--rows 100000] [--workers 2]
                                              [--repeat 2]

It writes ``--files`` Kaggle train.csv-format files of ``--rows`` rows each (real MNIST
images from ../shared/mnist, tiled), publishes a 784-10-10 model (fresh weights: speed does
not depend on them) as champion, starts Prefect's temporary local server, then scores the
files (best of ``--repeat`` runs each):

1. ``score_file`` in a loop, no Prefect: the pure work (and the same in a child process
   pinned to one core: what one worker process has to itself);
2. the ``mnist-scoring`` flow on a ThreadPoolTaskRunner with one thread: the
   single-process path;
3. the same flow on a LocalCluster of ``--workers`` single-threaded worker processes
   (127.0.0.1) through prefect-dask. The first run on a fresh cluster is shown apart.

Each line gives wall time and CPU seconds of every process involved (this one, the API
server and the Dask workers). Per-task overhead of the Dask path is measured as what one
more task adds: flows of 1 and ``--files`` near-empty (10-row) files, so the flow's fixed
start and end cancel out; it is compared with the CPU work of one ``--rows`` file. Also
shown per run: Dask's compute time of a task minus the scoring time ``score_file``
measured inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def direct_loop(files: list[Path], out: Path, models: Path) -> tuple[float, float]:
    """score_file over every file in turn: (wall, CPU seconds of this process)."""
    import functools

    from core import registry
    from core.scoring.score_file import score_file
    from model.predict import predict_proba_pixels

    start, cpu0 = time.perf_counter(), time.process_time()
    loaded = registry.load(models)
    predict = functools.partial(predict_proba_pixels, loaded.params)
    for f in files:
        score_file(f, out / f"{f.stem}.csv", out / f"{f.stem}.rejects.csv", predict)
    return time.perf_counter() - start, time.process_time() - cpu0


def pinned_direct_loop(files: list[Path], out: Path, models: Path) -> tuple[float, float]:
    """direct_loop in a child process restricted to one CPU: (wall, CPU seconds)."""
    out.mkdir()
    cmd = [sys.executable, __file__, "--pinned-child", str(out), str(models), *map(str, files)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, cpu


def pinned_child(argv: list[str]) -> None:
    out, models, *files = argv
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before NumPy starts threads
    print(json.dumps(direct_loop([Path(f) for f in files], Path(out), Path(models))))  # noqa: T201


def flow_run(flow, inputs: list[str], out: Path, artifacts: Path, **kw) -> tuple[float, dict]:
    start = time.perf_counter()
    result = flow(inputs=inputs, output_dir=str(out), artifacts=str(artifacts), **kw)
    return time.perf_counter() - start, result


class Cpu:
    """CPU seconds (user + system) of some processes, read before and after a run."""

    def __init__(self, pids: list[int]) -> None:
        import psutil  # installed with distributed

        self.procs = [psutil.Process(pid) for pid in pids]

    def read(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs)


def task_compute_seconds(client, since: float) -> list[float]:
    """Compute seconds of the scoring tasks the cluster ran since ``since`` (epoch)."""
    seconds = []
    for record in client.get_task_stream(start=since):
        if not str(record["key"]).startswith("score_csv"):
            continue
        for ss in record["startstops"]:
            if ss["action"] == "compute":
                seconds.append(ss["stop"] - ss["start"])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    os.environ.update(
        {
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    from bench_score import publish_model, write_kaggle_csv

    print(f"cores: {os.cpu_count()}; load before: {os.getloadavg()}")  # noqa: T201
    artifacts = tmp / "artifacts"
    publish_model(artifacts)
    (tmp / "in").mkdir()
    files = [tmp / "in" / f"digits{k}.csv" for k in range(args.files)]
    t = time.perf_counter()
    write_kaggle_csv(files[0], args.rows)
    for f in files[1:]:
        shutil.copyfile(files[0], f)
    size_mb = files[0].stat().st_size / 1e6
    print(  # noqa: T201
        f"wrote {args.files} files of {args.rows:,} rows ({size_mb:.0f} MB each) "
        f"in {time.perf_counter() - t:.1f}s"
    )
    inputs = [str(f) for f in files]
    n = len(files)
    rows: dict[str, tuple[float, float]] = {}  # path -> best (wall, cpu)

    def keep(name: str, wall: float, cpu: float, note: str = "") -> None:
        print(f"  {name:<34} wall {wall:6.2f}s  CPU {cpu:6.2f}s {note}")  # noqa: T201
        if name not in rows or wall < rows[name][0]:
            rows[name] = (wall, cpu)

    # 1. The pure work, one file after another, no Prefect.
    for i in range(args.repeat):
        out = tmp / f"direct{i}"
        out.mkdir()
        keep("direct score_file loop", *direct_loop(files, out, artifacts / "models"))
    reference = tmp / "direct0"
    # The same, pinned to one core: what one worker process has to itself on a cluster.
    for i in range(args.repeat):
        wall, cpu = pinned_direct_loop(files, tmp / f"pinned{i}", artifacts / "models")
        keep("direct loop, pinned to 1 core", wall, cpu)

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runners import api_for_workers, local_cluster_kwargs, quiet_dask_logs, run_on_runner
    from flows.scoring import scoring_flow

    with api_for_workers():
        server = SubprocessASGIServer().server_process  # the API's CPU counts too
        # 2. The single-process flow path.
        one_thread = scoring_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
        meter = Cpu([os.getpid(), server.pid])
        for i in range(args.repeat):
            cpu0 = meter.read()
            wall, _ = flow_run(one_thread, inputs, tmp / f"single{i}", artifacts)
            keep("flow, 1 thread", wall, meter.read() - cpu0)
        _check_same(reference, tmp / "single0", files)

        # 3. The same flow on a local Dask cluster.
        from distributed import Client, LocalCluster

        quiet_dask_logs()
        with LocalCluster(**local_cluster_kwargs(args.workers)) as cluster, Client(cluster) as c:
            address = cluster.scheduler_address
            c.get_task_stream()  # starts recording the task stream
            meter = Cpu([os.getpid(), server.pid, *c.run(os.getpid).values()])
            for i in range(args.repeat + 1):
                since, cpu0 = time.time(), meter.read()
                wall, result = flow_run(
                    lambda **kw: run_on_runner(scoring_flow, dask_address=address, **kw),
                    inputs, tmp / f"dask{i}", artifacts,
                )  # fmt: skip
                cpu = meter.read() - cpu0
                work = [f["seconds"] for f in result["files"]]
                in_task = (sum(task_compute_seconds(c, since)) - sum(work)) / n
                note = (
                    f"(task work {sum(work) / n:.2f}s/file on a worker; compute - work "
                    f"{in_task * 1000:.0f} ms/task)"
                )
                name = f"flow, {args.workers} Dask workers" + (" (cold)" if i == 0 else "")
                keep(name, wall, cpu, note)
            _check_same(reference, tmp / "dask1", files)
            per_task = marginal_task_cost(tmp, artifacts, n, meter, address)
            dask = f"flow, {args.workers} Dask workers"
            (d_wall, d_cpu), (s_wall, s_cpu) = (
                rows["direct score_file loop"],
                rows["flow, 1 thread"],
            )
            (k_wall, k_cpu) = rows[dask]
            p_wall = rows["direct loop, pinned to 1 core"][0]
            print(  # noqa: T201
                f"{n} files x {args.rows:,} rows, best runs: speed-up of {args.workers} Dask "
                f"workers {s_wall / k_wall:.2f}x over the single-process flow "
                f"({d_wall / k_wall:.2f}x over the bare loop, {p_wall / k_wall:.2f}x over it "
                f"on one core).\n"
                f"Work per file (bare loop CPU): {d_cpu / n:.2f}s; extra CPU per task: "
                f"1-thread flow {(s_cpu - d_cpu) / n * 1000:.0f} ms "
                f"({(s_cpu - d_cpu) / d_cpu:.1%}), Dask {(k_cpu - d_cpu) / n * 1000:.0f} ms "
                f"({(k_cpu - d_cpu) / d_cpu:.1%}) (workers, flow, scheduler and API together, "
                f"with the flow's fixed start and end spread over the {n} tasks)\n"
                f"Per-task overhead of the Dask path (one more near-empty task): "
                f"{per_task[1] * 1000:.0f} ms CPU, {per_task[0] * 1000:.0f} ms wall = "
                f"{per_task[1] / (d_cpu / n):.1%} of the CPU work of a {args.rows:,}-row file "
                f"(target < 10%)"
            )
    print(f"load after: {os.getloadavg()}")  # noqa: T201


def marginal_task_cost(tmp: Path, artifacts: Path, n: int, meter: Cpu, address: str):
    """(wall, CPU) seconds one more task adds to a Dask run: flows of n and 1 near-empty
    files (10 rows), best of 3 each, so the flow's fixed cost cancels out."""
    from bench_score import write_kaggle_csv

    from flows.runners import run_on_runner
    from flows.scoring import scoring_flow

    tiny = [tmp / "tiny" / f"t{k}.csv" for k in range(n)]
    tiny[0].parent.mkdir()
    for f in tiny:
        write_kaggle_csv(f, 10)
    best = {}
    for count in (1, n) * 3:
        cpu0 = meter.read()
        wall, _ = flow_run(
            lambda **kw: run_on_runner(scoring_flow, dask_address=address, **kw),
            [str(f) for f in tiny[:count]], tmp / f"tiny-out{count}", artifacts,
        )  # fmt: skip
        cpu = meter.read() - cpu0
        best[count] = min(best.get(count, (wall, cpu)), (wall, cpu))
    return tuple((best[n][i] - best[1][i]) / (n - 1) for i in (0, 1))


def _check_same(a: Path, b: Path, files: list[Path]) -> None:
    """The runs must write the same predictions (a benchmark of wrong answers is worthless)."""
    for f in files:
        left = (a / f"{f.stem}.csv").read_bytes()
        right = (b / f"{f.stem}.predictions.csv").read_bytes()
        if left != right:
            raise SystemExit(f"{f.name}: predictions differ between {a.name} and {b.name}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--pinned-child":
        pinned_child(sys.argv[2:])
    else:
        main()
