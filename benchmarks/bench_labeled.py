"""Labeled data (issue 22): conversion against scoring's reader, training's peak memory.

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_labeled.py [--rows 1000000] [--rounds 3]
        [--skip-convert] [--skip-train] [--accuracy] [--tmp DIR]

It writes a Kaggle ``train.csv`` of --rows shifted digits (``benchmarks.shifted_digits``,
~1.8 GB at 1,000,000 rows) and MNIST's splits (from ../shared/mnist) into a temporary
folder, which it deletes at the end, then:

1. **conversion vs scoring**, side by side: ``core.labeled.convert_labeled`` of the file
   against ``core.scoring.score_file.score_file`` of the same file (the ``score``
   command's core, with the scorer's model ``predict_proba_pixels`` of fresh 784-10-10
   weights), alternating which goes first, each run in a fresh subprocess that times
   itself after its imports; prints rows/s, CPU seconds and peak RSS of each, and the
   per-round ratio score rows/s / convert rows/s (issue 22's target: <= 1.3);
2. **training's peak RSS**: in a fresh subprocess each, ``training_data`` (MNIST's train
   split + the converted file, 10% held out) then ``model.train.fit`` with the default
   preset for 1 epoch (target: <= 1.5 GB); beside it MNIST alone the same way, and
   MNIST alone as the pipeline trains today (``read_split``, float32);
3. with ``--accuracy``: the default preset trained on MNIST alone and on MNIST + 18,000 of
   20,000 shifted digits (the rest held out), scored on that holdout and on MNIST's test
   set (issue 22 quotes 37% -> 63% on the holdout);
4. with ``--fit``: ``model.train.fit`` (default preset, 10 epochs) on MNIST as the float32
   split and as uint8 pixels (``training_data``), alternating: time, the largest weight
   difference and whether the curves agree to 4 decimals;
5. with ``--layouts``: the converted file's pixel layout, one row group of 65,536 shifted
   digits written (zstd 1, best of 3) as one 784-byte ``pixels`` column (``core.labeled``)
   and as 784 uint8 columns ``pixel0..pixel783`` (Parquet stores them as INT32), plain and
   BYTE_STREAM_SPLIT: seconds a row and bytes a row.
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

MNIST_DIR = Path(os.environ.get("MNIST_DIR", REPO.parent / "shared" / "mnist"))
CSV_BYTES_PER_ROW = 1_830  # a Kaggle row of MNIST-like digits, measured
RATIO_TARGET = 1.3
RSS_TARGET_MB = 1536


def cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: across exec, Linux keeps the
    forking parent's high-water mark in it (see "Object storage" in the README)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


# ----------------------------------------------------------------------------- children


def child_convert(src: str, out_dir: str, test_split: str) -> dict:
    import pyarrow.dataset  # noqa: F401 - pq.read_table imports it on first use: not timed

    from core.labeled import convert_labeled

    cpu0, start = cpu_seconds(), time.perf_counter()
    record = convert_labeled(Path(src), "bench", Path(out_dir), Path(test_split), 0.01)
    return {
        "rows": record["rows"],
        "seconds": time.perf_counter() - start,
        "cpu": cpu_seconds() - cpu0,
        "record": record,
    }


def child_score(src: str, out_dir: str) -> dict:
    from functools import partial

    import pyarrow.dataset  # noqa: F401 - as in child_convert

    from core.scoring.score_file import score_file
    from model.config import ModelConfig
    from model.network import init_params
    from model.predict import predict_proba_pixels

    predict = partial(predict_proba_pixels, init_params(ModelConfig()))
    out = Path(out_dir)
    cpu0, start = cpu_seconds(), time.perf_counter()
    summary = score_file(Path(src), out / "predictions.csv", out / "rejects.csv", predict)
    return {
        "rows": summary.rows,
        "seconds": time.perf_counter() - start,
        "cpu": cpu_seconds() - cpu0,
    }


def child_train(how: str, train_split: str, record_json: str) -> dict:
    import numpy as np

    from core.dataset import read_split
    from core.labeled import training_data
    from model.config import preset
    from model.train import fit

    records = json.loads(record_json)
    start = time.perf_counter()
    if how == "float32":  # the pipeline today: the float32 split, read whole
        X, y = read_split(Path(train_split))
    else:
        X, y = training_data(Path(train_split), records, 0.1)
    read_seconds = time.perf_counter() - start
    fit(X, y, preset("default", epochs=1))
    return {
        "rows": int(len(y)),
        "x_mb": X.nbytes / 2**20,
        "dtype": str(X.dtype),
        "read_seconds": read_seconds,
        "seconds": time.perf_counter() - start,
        "labels_ok": bool(np.all(y < 10)),
    }


def run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=REPO
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child_main(argv: list[str]) -> None:
    which, *rest = argv
    result = {"convert": child_convert, "score": child_score, "train": child_train}[which](*rest)
    result["peak_mb"] = peak_mb()
    print(json.dumps(result))


# ----------------------------------------------------------------------------- the parent


def write_splits(tmp: Path) -> tuple[Path, Path]:
    """MNIST's (train, test) splits, as the pipeline writes them, under ``tmp``."""
    from core.dataset import convert_idx

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        dest = tmp / f"{split}.parquet"
        convert_idx(
            MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz",
            MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz",
            dest,
            {},
        )
        splits[split] = dest
    return splits["train"], splits["test"]


def write_labeled_csv(tmp: Path, rows: int) -> Path:
    from benchmarks.shifted_digits import generate

    csv = tmp / "shift1.csv"
    start = time.perf_counter()
    generate(csv, rows, seed=1, mnist_dir=MNIST_DIR)
    size, seconds = csv.stat().st_size, time.perf_counter() - start
    print(f"wrote {csv.name}: {rows:,} rows, {size / 1e9:.2f} GB in {seconds:.0f} s")
    return csv


def bench_convert(csv: Path, test_split: Path, tmp: Path, rounds: int) -> dict | None:
    print(f"\n## conversion vs scoring, {rounds} rounds, alternating (fresh process each)")
    print(f"{'round':>5} {'side':>8} {'rows/s':>9} {'wall s':>7} {'cpu s':>6} {'peak MB':>8}")
    ratios, cpu_ratios, record = [], [], None
    for r in range(1, rounds + 1):
        sides = ["convert", "score"] if r % 2 else ["score", "convert"]
        got = {}
        for side in sides:
            out = tmp / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if side == "convert":
                got[side] = run_child("convert", str(csv), str(out), str(test_split))
                record = got[side]["record"]
            else:
                got[side] = run_child("score", str(csv), str(out))
            g = got[side]
            print(
                f"{r:>5} {side:>8} {g['rows'] / g['seconds']:>9,.0f} {g['seconds']:>7.1f} "
                f"{g['cpu']:>6.1f} {g['peak_mb']:>8.0f}"
            )
        shutil.rmtree(tmp / "out-score", ignore_errors=True)  # 1M predictions: ~30 MB
        ratios.append(got["convert"]["seconds"] / got["score"]["seconds"])
        cpu_ratios.append(got["convert"]["cpu"] / got["score"]["cpu"])
    print(
        f"score rows/s / convert rows/s per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
        f"median {statistics.median(ratios):.2f} (target <= {RATIO_TARGET}); CPU seconds "
        f"convert / score: median {statistics.median(cpu_ratios):.2f}"
    )
    return record


def bench_train(train_split: Path, record: dict | None) -> None:
    print("\n## training: training_data + fit (default preset, 1 epoch), fresh process each")
    runs = [("MNIST alone, float32 split (today)", "float32", [])]
    runs.append(("MNIST alone, uint8 (training_data)", "uint8", []))
    if record is not None:
        runs.append((f"MNIST + {record['accepted']:,} labeled rows", "uint8", [record]))
    print(f"{'data':<40} {'rows':>10} {'X MB':>7} {'read s':>7} {'total s':>8} {'peak RSS MB':>12}")
    for name, how, records in runs:
        g = run_child("train", how, str(train_split), json.dumps(records))
        print(
            f"{name:<40} {g['rows']:>10,} {g['x_mb']:>7.0f} {g['read_seconds']:>7.1f} "
            f"{g['seconds']:>8.1f} {g['peak_mb']:>12.0f}"
        )
    print(f"target: peak RSS <= {RSS_TARGET_MB} MB with the labeled rows")


def bench_accuracy(tmp: Path, train_split: Path, test_split: Path) -> None:
    import numpy as np

    from benchmarks.shifted_digits import generate, load_train, shifted_batches
    from core.dataset import pixels_of, read_split
    from core.labeled import convert_labeled, holdout_data, training_data
    from model.config import preset
    from model.predict import predict_proba_pixels
    from model.train import fit

    print("\n## accuracy: default preset, MNIST alone vs MNIST + 18,000 shifted digits")
    csv = tmp / "shift20k.csv"
    generate(csv, 20_000, seed=2, mnist_dir=MNIST_DIR)
    out = tmp / "out-accuracy"
    out.mkdir(exist_ok=True)
    record = convert_labeled(csv, "acc", out, test_split, 0.01)
    X_hold, y_hold = holdout_data(record, 0.1)
    X_test, y_test = read_split(test_split)
    test_pixels = pixels_of(X_test)

    def accuracy(params, X, y) -> float:
        return float(np.mean(predict_proba_pixels(params, X).argmax(axis=1) == y))

    for name, records in (
        ("MNIST alone", []),
        (f"MNIST + {record['accepted'] - len(y_hold):,} shifted", [record]),
    ):
        X, y = training_data(train_split, records, 0.1)
        params = fit(X, y, preset("default")).params
        shifted = accuracy(params, X_hold, y_hold)
        print(
            f"{name:<24} shifted holdout ({len(y_hold):,} rows) {shifted:.2%}, "
            f"MNIST test {accuracy(params, test_pixels, y_test):.2%}"
        )
        if not records:
            mnist_only = params
    # How hard the generator's strengths make the digits for the model of MNIST alone.
    images, labels = load_train(MNIST_DIR)
    strengths = [(2, 10.0), (3, 15.0), (4, 15.0), (4, 20.0), (5, 20.0), (6, 20.0)]
    row = []
    for shift, degrees in strengths:
        X, y = next(shifted_batches(images, labels, 10_000, 7, shift, degrees, 10_000))
        row.append(f"{shift} px/{degrees:g} deg {accuracy(mnist_only, X, y):.1%}")
    print("MNIST alone on 10,000 digits of each strength: " + ", ".join(row))


def rounded(curve: list[dict]) -> list[dict]:
    return [{k: round(v, 4) for k, v in row.items() if k != "seconds"} for row in curve]


def bench_fit(train_split: Path, rounds: int) -> None:
    import numpy as np

    from core.dataset import read_split
    from core.labeled import training_data
    from model.config import preset
    from model.train import fit

    print(f"\n## fit on MNIST, default preset: float32 split vs uint8 pixels, {rounds} rounds")
    X32, y = read_split(train_split)
    X8, y8 = training_data(train_split, [], 0.0)
    assert np.array_equal(y, y8)
    config = preset("default")
    ratios = []
    for r in range(1, rounds + 1):
        seconds, results = {}, {}
        for side, X in (("float32", X32), ("uint8", X8))[:: 1 if r % 2 else -1]:
            start = time.perf_counter()
            results[side] = fit(X, y, config)
            seconds[side] = time.perf_counter() - start
        ratios.append(seconds["uint8"] / seconds["float32"])
        a, b = results["float32"], results["uint8"]
        pairs = zip(a.params, b.params, strict=True)
        diff = max(float(np.abs(Wa - Wb).max()) for (Wa, _), (Wb, _) in pairs)
        same = rounded(a.curve) == rounded(b.curve)
        print(
            f"round {r}: float32 {seconds['float32']:.2f} s, uint8 {seconds['uint8']:.2f} s "
            f"(x{ratios[-1]:.2f}); max weight difference {diff:g}; curves equal to 4 "
            f"decimals: {same}"
        )
    print(f"uint8 / float32 time: median {statistics.median(ratios):.2f}")


def bench_layouts() -> None:
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.shifted_digits import shifted_digits
    from core.dataset import PIXEL_COLUMNS
    from core.labeled import CONVERTED_SCHEMA, pixel_array

    print("\n## converted file layout: one row group of 65,536 rows, zstd level 1, best of 3")
    pixels, labels = shifted_digits(65_536, seed=3, mnist_dir=MNIST_DIR)
    n = len(labels)
    keys, lines = np.arange(n, dtype=np.uint64), np.arange(n, dtype=np.int64)
    tail = [pa.array(keys), pa.array(lines)]
    ours = pa.Table.from_arrays(
        [pa.array(labels), pixel_array(pixels), *tail], schema=CONVERTED_SCHEMA
    )
    columns = np.ascontiguousarray(pixels.T)
    wide = pa.Table.from_arrays(
        [pa.array(labels), *(pa.array(c) for c in columns), *tail],
        names=["label", *PIXEL_COLUMNS, "row_key", "line"],
    )
    split = {name: "BYTE_STREAM_SPLIT" for name in PIXEL_COLUMNS}
    options = {"compression": "zstd", "compression_level": 1, "use_dictionary": False}
    options["write_statistics"] = False
    sides = [
        ("pixels: one 784-byte column (ours)", ours, {}),
        ("pixel0..783: uint8 columns, plain", wide, {}),
        ("pixel0..783: uint8 columns, byte-stream-split", wide, {"column_encoding": split}),
    ]
    print(f"{'layout':<48} {'write us/row':>12} {'bytes/row':>10}")
    for name, table, extra in sides:
        best, size = float("inf"), 0
        for _ in range(3):
            buf = io.BytesIO()
            start = time.perf_counter()
            with pq.ParquetWriter(buf, table.schema, **options, **extra) as writer:
                writer.write_table(table)
            best = min(best, time.perf_counter() - start)
            size = len(buf.getvalue())
        print(f"{name:<48} {best / n * 1e6:>12.2f} {size / n:>10.0f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-convert", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--layouts", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    import numpy as np

    need = args.rows * CSV_BYTES_PER_ROW * 1.5 + 2e9
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        raise SystemExit(
            f"{args.tmp}: {free / 1e9:.1f} GB free, need ~{need / 1e9:.1f} GB; use --rows"
        )
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if args.layouts:
        bench_layouts()
    tmp = Path(tempfile.mkdtemp(prefix="bench-labeled-", dir=args.tmp))
    try:
        train_split, test_split = write_splits(tmp)
        record = None
        if not (args.skip_convert and args.skip_train):
            csv = write_labeled_csv(tmp, args.rows)
            if not args.skip_convert:
                record = bench_convert(csv, test_split, tmp, args.rounds)
            csv.unlink()  # 1.8 GB: training reads the converted file
        if not args.skip_train:
            bench_train(train_split, record)
        if args.fit:
            bench_fit(train_split, args.rounds)
        if args.accuracy:
            bench_accuracy(tmp, train_split, test_split)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
