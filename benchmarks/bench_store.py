"""Scoring store-to-store against disk-to-disk: rows/s and peak RSS, side by side.

Run by hand from the repo root (needs the dev lock: s3fs and moto):

    .venv/bin/python benchmarks/bench_store.py [--rows 1000000] [--rounds 2]

It writes a Kaggle train.csv-format file of --rows rows (real MNIST images tiled, as
bench_score.py does; ~1.8 GB at 1M rows), gzips it (the scorer reads .csv.gz as it
comes), starts a real S3 API on loopback (moto's server) and uploads the file there.
Gzipped because moto is no store for 1.8 GB objects: it holds them in memory several
times over, and was OOM-killed at 16 GB taking the plain 1M-row file. Both sides read
the same .csv.gz. Then, alternating the order each round, it scores
the file with ``core.scoring.score_file`` in a fresh subprocess each time:

- disk: local file -> local predictions and rejects;
- store: ``s3://bench/in/digits.csv`` -> ``s3://bench/out/digits.predictions.csv``, read
  as a buffered stream of ranged GETs, written to a local temporary file and uploaded
  whole (multipart) on commit, exactly as ``mnist-pipeline score`` does.

Each child prints rows, seconds and its peak RSS (VmHWM); the script prints each
side's median rows/s and worst peak RSS, and the median per-round ratio store/disk, and
checks that both sides wrote the same predictions. moto keeps objects in its own memory
and speaks HTTP from Python, so the store side measures the pipeline's overhead plus a
slow store: a real S3 or MinIO is faster than this.
"""

from __future__ import annotations

import argparse
import gzip
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

RSS_BUDGET_MB = 600


def child(src: str, out: str) -> None:
    """Score ``src`` to ``out`` in this fresh process; print a JSON line."""
    from bench_score import make_pixel_predictor

    from core.scoring.score_file import score_file
    from core.storage import location

    predict = make_pixel_predictor()
    output = location(out)
    rejects = output.with_name(output.name.replace(".predictions.csv", ".rejects.csv"))
    start = time.perf_counter()
    summary = score_file(location(src), output, rejects, predict)
    seconds = time.perf_counter() - start
    peak_mb = _vm_hwm_mb()
    print(json.dumps({"rows": summary.rows, "seconds": seconds, "peak_mb": peak_mb}))  # noqa: T201


def _vm_hwm_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: across exec the kernel keeps the forking
    parent's high-water mark there (this script's parent held ~640 MB while writing the
    file, and every child reported exactly that)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(src: str, out: str, env: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--child", src, out]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("SRC", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import s3fs
    from bench_score import write_kaggle_csv

    from tests.support import MotoServer

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp_name:
        tmp = Path(tmp_name)
        plain = tmp / "digits.csv"
        write_kaggle_csv(plain, args.rows)
        src = tmp / "digits.csv.gz"
        with open(plain, "rb") as f_in, gzip.open(src, "wb", compresslevel=1) as f_out:
            shutil.copyfileobj(f_in, f_out, 1 << 20)
        plain.unlink()
        size_mb = src.stat().st_size / 1e6
        print(f"{args.rows} rows, {size_mb:.0f} MB gzipped")  # noqa: T201
        moto = MotoServer(Path(tempfile.gettempdir()) / "bench-store-moto.log")
        try:
            env = {**os.environ, **moto.env}
            os.environ.update(moto.env)
            moto.bucket("bench")
            start = time.perf_counter()
            s3fs.S3FileSystem().put_file(str(src), "bench/in/digits.csv.gz")
            print(f"upload to moto: {time.perf_counter() - start:.0f} s")  # noqa: T201
            sides = {
                "disk": (str(src), str(tmp / "out" / "digits.predictions.csv")),
                "store": ("s3://bench/in/digits.csv.gz", "s3://bench/out/digits.predictions.csv"),
            }
            (tmp / "out").mkdir()
            runs: dict[str, list[dict]] = {"disk": [], "store": []}
            for r in range(args.rounds):
                order = ["disk", "store"] if r % 2 == 0 else ["store", "disk"]
                for side in order:
                    result = run_child(*sides[side], env)
                    runs[side].append(result)
                    print(  # noqa: T201
                        f"round {r + 1} {side:5}: {result['rows'] / result['seconds']:9,.0f} rows/s"
                        f"  {result['seconds']:6.1f} s  peak RSS {result['peak_mb']:5.0f} MB"
                    )
            same = s3fs.S3FileSystem().cat("bench/out/digits.predictions.csv") == (
                (tmp / "out" / "digits.predictions.csv").read_bytes()
            )
        finally:
            moto.stop()
    for side, results in runs.items():
        rate = statistics.median(x["rows"] / x["seconds"] for x in results)
        peak = max(x["peak_mb"] for x in results)
        verdict = "within" if peak < RSS_BUDGET_MB else "OVER"
        print(  # noqa: T201
            f"{side:5}: median {rate:9,.0f} rows/s, worst peak RSS {peak:.0f} MB "
            f"({verdict} the {RSS_BUDGET_MB} MB budget)"
        )
    ratio = statistics.median(
        s["seconds"] / d["seconds"] for s, d in zip(runs["store"], runs["disk"], strict=True)
    )
    print(f"store/disk time, median per-round ratio: {ratio:.2f}")  # noqa: T201
    print(f"same predictions on both sides: {same}")  # noqa: T201


if __name__ == "__main__":
    main()
