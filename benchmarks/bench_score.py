"""Scoring throughput and memory: score_file vs a naive pandas baseline and vs pyarrow.csv.

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_score.py [--rows 100000] [--big-rows 1000000] [--skip-big]
    .venv/bin/python benchmarks/bench_score.py --engines [--rows 100000] [--repeat 5]

It writes Kaggle train.csv-format files (``label,pixel0..pixel783``) into a temp dir, built
from real MNIST images (../shared/mnist) tiled to the requested size, then:

1. scores the --rows file with the naive baseline (``pandas.read_csv`` + predict +
   ``DataFrame.to_csv``) and with ``score_file``, alternately, --repeat times each, every
   run in a fresh subprocess so each reports its own time and peak RSS; prints rows/s and
   the ratio of the best runs;
2. scores the --big-rows file (~1.8 GB at 1M rows) with ``score_file`` in a subprocess and
   prints its peak RSS against the 600 MB budget.

``--cli NAME=CHECKOUT ...`` times the user-visible command instead: ``mnist-pipeline score``
of --files copies of the --rows file (``--dask-local N`` passed through when given) from
each checkout in turn (``python -m cli.main``, or ``flows.cli`` in older ones), alternating
the order each round, with one published champion (fresh 784-10-10 weights); it prints
each checkout's median wall time and its median per-round ratio to the first checkout.
Copies of a checkout with one trick taken out measure what that trick earns. Each
checkout keeps one Prefect home across its runs (as a user's is) and gets one untimed
warm-up run, which creates its database.

``--engines`` instead compares CSV engines end to end: ``score_file`` with its vectorised
tokenizer (``core.scoring.fast_scan``) against ``score_file`` whose chunks are parsed by
``pyarrow.csv.read_csv`` (``arrow_chunk`` below: the chunk's bytes with the layout's column
types, falling back to the careful parser for a chunk that raises), alternating, each run
in a fresh subprocess; it prints the median of the per-round ratios.

Both sides use the same weights: freshly initialised 784-10-10. The baseline feeds float32
pixels/255 to ``model.network.forward`` (or, if that does not import, an equivalent
NumPy MLP); score_file feeds uint8 pixels to ``predict_proba_pixels``, the scorer's model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The real MNIST files; MNIST_DIR overrides (a worktree outside the checkout has no ../shared).
MNIST_DIR = Path(os.environ.get("MNIST_DIR", REPO.parent / "shared" / "mnist"))
RSS_BUDGET_MB = 600
PIXELS = [f"pixel{j}" for j in range(784)]


def make_predictor():
    """(predict_proba, description): the project's model if available, else a NumPy MLP."""
    try:
        from model.config import ModelConfig
        from model.network import forward, init_params

        params = init_params(ModelConfig())
        return lambda x: forward(params, x)[-1], "model.network.forward (784-10-10)"
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


# ----------------------------------------------------------------------------- pyarrow engine
# The challenger of ``--engines``: pyarrow.csv per chunk, the careful parser for a chunk it
# cannot take whole. It lives here, not in core/, because it lost (benchmarks/README.md).

_SPECIAL = (b'"', b"\r", b"\0")  # quoting, a lone CR, NUL: Arrow reads them differently
_HEX = re.compile(rb"(?:^|,)[ \t]*0[xX]", re.MULTILINE)  # Arrow reads "0x1f" as hex


def _arrow_options(layout):
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    types = {name: pa.uint8() for name in layout.names}
    types.update({name: pa.string() for name in layout.extra_names})
    return (
        pa_csv.ReadOptions(column_names=list(layout.names), use_threads=False, block_size=1 << 30),
        pa_csv.ParseOptions(ignore_empty_lines=False, quote_char=False),  # blank line = row
        pa_csv.ConvertOptions(
            column_types=types,
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,
        ),
    )


def arrow_chunk(chunk: bytes, first_row: int, layout):
    """A ParsedChunk of ``chunk`` (whole lines) by pyarrow.csv, else by the careful parser."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from core.scoring.careful import ParsedChunk, careful_chunk

    n = chunk.count(b"\n")
    has_x = b"x" in chunk or b"X" in chunk  # memchr; a b"0x" search is slow among zeros
    if any(s in chunk for s in _SPECIAL) or (has_x and _HEX.search(chunk)):
        return careful_chunk(chunk, first_row, layout)
    try:
        table = pa_csv.read_csv(pa.py_buffer(chunk), *_arrow_options(layout))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return careful_chunk(chunk, first_row, layout)
    labels = None
    if layout.label_col is not None:
        labels = table.column(layout.label_col).to_numpy()
    if table.num_rows != n or (labels is not None and labels.max(initial=0) > 9):
        return careful_chunk(chunk, first_row, layout)
    pixels = np.empty((n, len(layout.pixel_cols)), np.uint8)
    for j, col in enumerate(layout.pixel_cols):
        pixels[:, j] = table.column(col).to_numpy()
    extras = [table.column(c).to_pylist() for c in layout.extra_cols]
    return ParsedChunk(first_row, n, pixels, np.arange(n, dtype=np.int64), labels, extras)


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


def ours(src: Path, out: Path, chunk_rows: int, workers: int, engine: str = "scan") -> int:
    from core.scoring.reader import PixelCsvReader
    from core.scoring.score_file import score_file

    if engine == "arrow":
        PixelCsvReader.parse = staticmethod(arrow_chunk)

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
        engine = "arrow" if which == "arrow" else "scan"
        rows = ours(Path(src), Path(out), int(chunk_rows), int(workers), engine)
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
    parser.add_argument("--engines", action="store_true", help="tokenizer vs pyarrow.csv")
    parser.add_argument("--cli", nargs="+", metavar="NAME=CHECKOUT", help="score, side by side")
    parser.add_argument("--files", type=int, default=1, help="--cli: copies of the --rows file")
    parser.add_argument("--dask-local", type=int, help="--cli: score on N local Dask workers")
    parser.add_argument("--server", action="store_true", help="--cli: against a prefect server")
    args = parser.parse_args()
    if args.engines:
        engines(args)
        return
    if args.cli:
        cli_side_by_side(args)
        return

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


def engines(args: argparse.Namespace) -> None:
    """score_file with the tokenizer vs with pyarrow.csv per chunk, alternating rounds."""
    print(f"cores: {os.cpu_count()}; load: {os.getloadavg()}")  # noqa: T201
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        tmp = Path(tmp)
        src = tmp / "train.csv"
        write_kaggle_csv(src, args.rows)
        print(f"{args.rows:,} rows, {src.stat().st_size / 1e6:.0f} MB")  # noqa: T201
        runs: dict[str, list[dict]] = {"ours": [], "arrow": []}
        for i in range(args.repeat):
            order = ("ours", "arrow") if i % 2 == 0 else ("arrow", "ours")
            for which in order:
                r = run_child(which, src, tmp / f"{which}.csv", args)
                runs[which].append(r)
                print(  # noqa: T201
                    f"  round {i + 1} {which:5s}: {r['seconds']:6.2f}s  CPU {r['cpu']:6.2f}s  "
                    f"peak RSS {r['peak_mb']:6.0f} MB"
                )
        if (tmp / "ours.csv").read_bytes() != (tmp / "arrow.csv").read_bytes():
            raise SystemExit("the two engines wrote different predictions")
        for key in ("seconds", "cpu"):
            ratios = [a[key] / o[key] for a, o in zip(runs["arrow"], runs["ours"], strict=True)]
            medians = [statistics.median(r[key] for r in runs[w]) for w in ("ours", "arrow")]
            print(  # noqa: T201
                f"{key}: tokenizer median {medians[0]:.2f}s, pyarrow.csv {medians[1]:.2f}s; "
                f"pyarrow/tokenizer per round {', '.join(f'{x:.2f}' for x in ratios)}: "
                f"median {statistics.median(ratios):.2f}x (keep the tokenizer if >= 1.5x)"
            )
    print(f"load at end: {os.getloadavg()}")  # noqa: T201


def publish_model(artifacts: Path) -> None:
    """A fresh 784-10-10 network as the champion (scoring speed does not depend on weights)."""
    from datetime import UTC, datetime

    from core import registry
    from model.config import ModelConfig
    from model.network import init_params

    config = ModelConfig()
    bundle = {
        "params": init_params(config),
        "config": config.to_dict(),
        "metrics": {"test_accuracy": 0.0},
        "created": datetime.now(UTC).isoformat(),
        "fingerprint": "bench_score",
    }
    models = artifacts / "models"
    registry.promote(models, registry.publish(models, bundle, {}))


def run_score_cli(checkout: Path, files: list[Path], out: Path, artifacts: Path, args) -> float:
    """Wall seconds of one ``score`` command run from ``checkout``."""
    module = "cli.main" if (checkout / "cli" / "main.py").exists() else "flows.cli"
    cmd = [sys.executable, "-m", module, "score", *map(str, files), "--output-dir", str(out)]
    cmd += ["--artifacts", str(artifacts)]
    if args.dask_local:
        cmd += ["--dask-local", str(args.dask_local)]
    # One Prefect home per checkout, kept across rounds, as a user's is.
    home = out.parent.parent / f"home-{checkout.name}"
    env = {**os.environ, "PYTHONPATH": str(checkout), "PREFECT_HOME": str(home)}
    if args.api_url:  # a running server, as a user's profile would name
        env["PREFECT_API_URL"] = args.api_url
    else:  # each command starts its embedded server
        env.pop("PREFECT_API_URL", None)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds


def cli_side_by_side(args: argparse.Namespace) -> None:
    """The score command of each checkout, alternating; medians and per-round ratios."""
    checkouts = dict(item.split("=", 1) for item in args.cli)
    os.environ.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    where = f"--dask-local {args.dask_local}" if args.dask_local else "threads"
    print(f"cores: {os.cpu_count()}; load: {os.getloadavg()}; {where}")  # noqa: T201
    with tempfile.TemporaryDirectory(prefix="bench_score_cli_") as tmp:
        tmp = Path(tmp)
        args.api_url = None
        if args.server:  # without it, each command's start-up includes a server's
            from tests.support import start_prefect_server, stop_process_group

            server, args.api_url = start_prefect_server(tmp / "server", tmp / "server.log")
        try:
            _cli_rounds(args, checkouts, tmp)
        finally:
            if args.server:
                stop_process_group(server)
    print(f"load at end: {os.getloadavg()}")  # noqa: T201


def _cli_rounds(args: argparse.Namespace, checkouts: dict[str, str], tmp: Path) -> None:
    """Warm-up, then --repeat rounds of every checkout in a rotating order; the medians."""
    import shutil

    publish_model(tmp / "artifacts")
    files = [tmp / "in" / f"digits{k}.csv" for k in range(args.files)]
    files[0].parent.mkdir()
    write_kaggle_csv(files[0], args.rows)
    for f in files[1:]:
        shutil.copyfile(files[0], f)
    print(f"{args.files} file(s) of {args.rows:,} rows")  # noqa: T201
    names = list(checkouts)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # untimed: creates each checkout's Prefect database
        out = tmp / f"{name}-warm-up" / "out"
        out.parent.mkdir()
        run_score_cli(Path(checkouts[name]), files[:1], out, tmp / "artifacts", args)
    for i in range(args.repeat):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            out = tmp / f"{name}{i}" / "out"
            out.parent.mkdir()
            s = run_score_cli(Path(checkouts[name]), files, out, tmp / "artifacts", args)
            seconds[name].append(s)
            print(f"  round {i + 1} {name:<12} {s:6.2f}s", flush=True)  # noqa: T201
        written = {
            (tmp / f"{n}{i}" / "out" / "digits0.predictions.csv").read_bytes() for n in names
        }
        if len(written) != 1:
            raise SystemExit("the checkouts wrote different predictions")
    base = seconds[names[0]]
    for name in names:
        ratios = [a / b for a, b in zip(seconds[name], base, strict=True)]
        print(  # noqa: T201
            f"{name:<12} median {statistics.median(seconds[name]):6.2f}s; per round / "
            f"{names[0]}: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"median {statistics.median(ratios):.2f}x"
        )


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
