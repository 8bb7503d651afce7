"""Ingestion benchmark: cold and warm ingest of real MNIST served over loopback HTTP.

Reports Prefect's start-up separately from the ingestion work, the Parquet sizes, and
the time to read train.parquet back into a float32 (60000, 784) array.

    .venv/bin/python benchmarks/bench_ingest.py [--mnist ../shared/mnist]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ.update(
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    (work / "prefect-home").mkdir()
    server, url = serve(args.mnist)

    from prefect import flow

    from cli.backend import in_process_backend
    from core.dataset import read_split
    from flows.ingest import ingest_flow

    @flow
    def noop() -> None:
        return None

    # Flows run as the CLI runs them: on the embedded server, without heartbeats.
    with in_process_backend():
        t = time.perf_counter()
        noop()
        startup = time.perf_counter() - t  # the embedded server's start, paid once per process
        t = time.perf_counter()
        noop()
        empty_flow = time.perf_counter() - t  # a flow run's own bookkeeping, server warm

        artifacts = work / "artifacts"
        t = time.perf_counter()
        cold_result = ingest_flow(mirror=url, artifacts=str(artifacts))
        cold = time.perf_counter() - t
        t = time.perf_counter()
        warm_result = ingest_flow(mirror=url, artifacts=str(artifacts))
        warm = time.perf_counter() - t

    reads = []
    for _ in range(3):
        t = time.perf_counter()
        X, _y = read_split(artifacts / "data" / "train.parquet")
        reads.append(time.perf_counter() - t)
    assert X.shape == (60000, 784) and str(X.dtype) == "float32"
    size = sum((artifacts / "data" / f"{s}.parquet").stat().st_size for s in ("train", "test"))
    server.shutdown()

    step_work = sum(s["seconds"] for s in cold_result["steps"])
    rows = [
        ("Prefect embedded server start-up (once per process)", f"{startup:.2f} s", ""),
        ("empty flow run, server warm", f"{empty_flow:.2f} s", ""),
        ("cold ingest flow, wall", f"{cold:.2f} s", "target: work < 5 s"),
        ("  of which task work (sum of steps)", f"{step_work:.2f} s", ""),
        ("  wall minus empty-flow overhead", f"{cold - empty_flow:.2f} s", ""),
        ("warm ingest flow, wall (all Cached)", f"{warm:.2f} s", ""),
        ("Parquet train + test", f"{size / 1e6:.1f} MB", "target: < 25 MB"),
        ("read train.parquet -> float32 (60000, 784), best of 3", f"{min(reads):.2f} s",
         "target: < 1 s"),
    ]  # fmt: skip
    for name, value, note in rows:
        print(f"{name:<55} {value:>9}  {note}")
    states = {s["state"] for s in warm_result["steps"]}
    print(f"warm run states: {sorted(states)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
