"""Scoring throughput and memory: core.scoring.score_file.score_file vs a naive pandas baseline.

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_score.py [--rows 100000] [--big-rows 1000000] [--skip-big]

It writes Kaggle train.csv-format files (``label,pixel0..pixel783``) into a temp dir, built
from real MNIST images (../shared/mnist) tiled to the requested size, then:

1. scores the --rows file with the naive baseline (``pandas.read_csv`` + predict +
   ``DataFrame.to_csv``) and with ``score_file``, alternately, --repeat times each, every
   run in a fresh subprocess so each reports its own time and peak RSS; prints rows/s and
   the ratio of the best runs;
2. scores the --big-rows file (~1.8 GB at 1M rows) with ``score_file`` in a subprocess and
   prints its peak RSS against the 600 MB budget.

Both sides use the same weights: freshly initialised 784-10-10. The baseline feeds float32
pixels/255 to ``model.predict.predict_proba`` (or, if that does not import, an equivalent
NumPy MLP); score_file feeds uint8 pixels to ``predict_proba_pixels``, the scorer's model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MNIST_DIR = REPO.parent / "shared" / "mnist"
RSS_BUDGET_MB = 600
PIXELS = [f"pixel{j}" for j in range(784)]


def make_predictor():
    """(predict_proba, description): the project's model if available, else a NumPy MLP."""
    try:
        from functools import partial

        from model.config import ModelConfig
        from model.network import init_params
        from model.predict import predict_proba

        return partial(predict_proba, init_params(ModelConfig())), "model.predict (784-10-10)"
    except Exception:  # the model package is optional here: fall back to a stand-in
        rng = np.random.default_rng(0)
        w1 = rng.normal(0, np.sqrt(2 / 784), (784, 10)).astype(np.float32)
        w2 = rng.normal(0, np.sqrt(2 / 10), (10, 10)).astype(np.float32)

        def mlp(x: np.ndarray) -> np.ndarray:
            z = np.maximum(x @ w1, 0) @ w2
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)

        return mlp, "NumPy MLP 784-10-10 (stand-in)"


def make_pixel_predictor():
    """What score_file takes: the same weights, scored from uint8 pixels."""
    from functools import partial

    from model.config import ModelConfig
    from model.network import init_params
    from model.predict import predict_proba_pixels

    return partial(predict_proba_pixels, init_params(ModelConfig()))


def write_kaggle_csv(path: Path, rows: int) -> None:
    """Write ``rows`` Kaggle train.csv rows: real MNIST images and labels, tiled."""
    from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz

    images = read_idx_gz(MNIST_DIR / "train-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx_gz(MNIST_DIR / "train-labels-idx1-ubyte.gz", LABELS_MAGIC)
    n = min(rows, len(images))
    text = [str(v) for v in range(256)]
    block = "".join(
        f"{labels[i]}," + ",".join([text[v] for v in images[i].ravel().tolist()]) + "\n"
        for i in range(n)
    ).encode()
    with open(path, "wb") as f:
        f.write(("label," + ",".join(PIXELS) + "\n").encode())
        for _ in range(rows // n):
            f.write(block)
        rest = rows % n
        if rest:
            f.write(block[: _offset_of_line(block, rest)])


def _offset_of_line(block: bytes, k: int) -> int:
    """Byte offset just past the k-th newline of ``block``."""
    return int(np.flatnonzero(np.frombuffer(block, np.uint8) == 10)[k - 1]) + 1


# ----------------------------------------------------------------------------- children


def naive(src: Path, out: Path) -> int:
    """The baseline: whole file into pandas, predict, write with pandas."""
    import pandas as pd

    predict, _ = make_predictor()
    df = pd.read_csv(src)
    x = df[PIXELS].to_numpy(np.float32) / np.float32(255)
    proba = predict(x)
    pd.DataFrame(
        {
            "ImageId": np.arange(1, len(df) + 1),
            "Label": proba.argmax(axis=1),
            "Confidence": proba.max(axis=1),
            "TrueLabel": df["label"],
        }
    ).to_csv(out, index=False)
    return len(df)


def ours(src: Path, out: Path, chunk_rows: int, workers: int) -> int:
    from core.scoring.score_file import score_file

    predict = make_pixel_predictor()
    summary = score_file(
        src, out, out.with_suffix(".rejects.csv"), predict, chunk_rows=chunk_rows, workers=workers
    )
    return summary.rows


def child(argv: list[str]) -> None:
    """Run one side in this (fresh) process and print a JSON line: rows, seconds, RSS."""
    import resource

    which, src, out, chunk_rows, workers = argv
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime  # exclude interpreter start-up
    start = time.perf_counter()
    if which == "naive":
        rows = naive(Path(src), Path(out))
    else:
        rows = ours(Path(src), Path(out), int(chunk_rows), int(workers))
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    peak_mb = usage.ru_maxrss / 1024  # ru_maxrss is in kilobytes on Linux
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "peak_mb": peak_mb}))  # noqa: T201


def run_child(which: str, src: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", which, str(src), str(out)]
    cmd += [str(args.chunk_rows), str(args.workers)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    from core.scoring.score_file import DEFAULT_CHUNK_ROWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side (best is kept)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    _, described = make_predictor()
    print(f"predictor: {described}; cores: {os.cpu_count()}; load: {os.getloadavg()}")  # noqa: T201
    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        tmp = Path(tmp)
        src = tmp / "train.csv"
        t = time.perf_counter()
        write_kaggle_csv(src, args.rows)
        size_mb = src.stat().st_size / 1e6
        print(f"wrote {args.rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - t:.1f}s")  # noqa: T201

        best: dict[str, dict] = {}
        for i in range(args.repeat):
            for which in ("naive", "ours"):
                r = run_child(which, src, tmp / f"{which}.csv", args)
                rate = r["rows"] / r["seconds"]
                print(  # noqa: T201
                    f"  run {i + 1} {which:5s}: {r['seconds']:6.2f}s  {rate:9,.0f} rows/s  "
                    f"CPU {r['cpu']:6.2f}s  peak RSS {r['peak_mb']:6.0f} MB"
                )
                if which not in best or r["seconds"] < best[which]["seconds"]:
                    best[which] = r
        _check_same_predictions(tmp / "naive.csv", tmp / "ours.csv")
        naive_rate = best["naive"]["rows"] / best["naive"]["seconds"]
        ours_rate = best["ours"]["rows"] / best["ours"]["seconds"]
        cpu_ratio = best["naive"]["cpu"] / best["ours"]["cpu"]
        print(  # noqa: T201
            f"{args.rows:,} rows: naive pandas {naive_rate:,.0f} rows/s, score_file "
            f"{ours_rate:,.0f} rows/s: {ours_rate / naive_rate:.2f}x faster (target >= 2x); "
            f"{cpu_ratio:.2f}x less CPU"
        )
        src.unlink()

        if not args.skip_big:
            big = tmp / "big.csv"
            t = time.perf_counter()
            write_kaggle_csv(big, args.big_rows)
            size_mb = big.stat().st_size / 1e6
            print(  # noqa: T201
                f"wrote {args.big_rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - t:.1f}s"
            )
            r = run_child("ours", big, tmp / "big_out.csv", args)
            verdict = "OK" if r["peak_mb"] < RSS_BUDGET_MB else "OVER BUDGET"
            print(  # noqa: T201
                f"{r['rows']:,} rows: score_file {r['rows'] / r['seconds']:,.0f} rows/s, "
                f"peak RSS {r['peak_mb']:.0f} MB (budget {RSS_BUDGET_MB} MB): {verdict}"
            )
    print(f"load at end: {os.getloadavg()}")  # noqa: T201


def _check_same_predictions(a: Path, b: Path) -> None:
    """Both sides must agree on every label (a benchmark of wrong answers is worthless)."""
    import pandas as pd

    left, right = pd.read_csv(a), pd.read_csv(b)
    same = (left["ImageId"].to_numpy() == right["ImageId"].to_numpy()).all() and (
        left["Label"].to_numpy() == right["Label"].to_numpy()
    ).all()
    if not same:
        raise SystemExit("baseline and score_file disagree on predictions")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
