"""Evaluate before and after issue 21: float32 ``predict_proba`` vs ``predict_proba_pixels``.

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_predict_paths.py [--mnist ../shared/mnist] [--rounds 7]
        [--fit]

On MNIST's real test split (10,000 images, written with ``write_split`` as ingest writes
it), for the ``default`` (784-10-10) and ``wide`` (784-512-10) presets, it times in
alternating order each round:

  evaluate  the whole ``core.evaluation.evaluate_fit`` (read the Parquet split, predict,
            metrics, three plots, write): "before" is the same function with the float32
            ``predict_proba`` on the float32 pixels swapped back in, "after" is today's;
  predict   the prediction step alone, on arrays already in memory (for "after" this
            includes recovering the uint8 pixels with ``pixels_of``).

It prints each round's after/before ratio and their median. Weights are random (timing
does not depend on them); with ``--fit`` each preset is first fitted on the 55k training
rows (``model.fit``, the training flow's fit step), which gives the difference a scale,
and it prints how many test images the two paths label differently.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import core.evaluation  # noqa: E402
from core.dataset import pixels_of, write_split  # noqa: E402
from core.files import seal  # noqa: E402
from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz  # noqa: E402
from model.config import preset  # noqa: E402
from model.network import init_params  # noqa: E402
from model.predict import _predict_proba_t_unchecked, predict_proba_pixels  # noqa: E402
from model.train import fit  # noqa: E402
from model.validation import check_feature_values, check_features  # noqa: E402

PRESETS = ("default", "wide")


def predict_proba(params: list, X: np.ndarray) -> np.ndarray:
    """The float32 ``model.predict.predict_proba`` that evaluate used before issue 21 (since
    removed): the input checks, then training's validation pass."""
    check_features(X, params[0][0].shape[1])
    check_feature_values(X)
    return _predict_proba_t_unchecked(params, X, 8192).T


@contextlib.contextmanager
def float32_evaluate():
    """evaluate_fit as it was: float32 predict_proba on read_split's float32 pixels."""
    saved = core.evaluation.pixels_of, core.evaluation.predict_proba_pixels
    core.evaluation.pixels_of = lambda X: X
    core.evaluation.predict_proba_pixels = predict_proba
    try:
        yield
    finally:
        core.evaluation.pixels_of, core.evaluation.predict_proba_pixels = saved


def load(mnist: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx_gz(mnist / f"{kind}-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx_gz(mnist / f"{kind}-labels-idx1-ubyte.gz", LABELS_MAGIC)
    return images, labels


def scaled(images: np.ndarray) -> np.ndarray:
    """float32 pixel / 255, (n, 784): what read_split returns."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def write_fit(folder: Path, params: list, config_name: str, seconds: float) -> dict:
    """A fit file as core.training writes it (one-epoch curve when not really trained)."""
    curve = [dict.fromkeys(("train_loss", "train_accuracy", "val_loss", "val_accuracy"), 0.5)]
    curve[0].update(epoch=1, learning_rate=0.1, seconds=seconds)
    record = {
        "params": params,
        "config": preset(config_name).to_dict(),
        "curve": curve,
        "best_epoch": 1,
        "validation_accuracy": 0.5,
        "train_seconds": seconds,
    }
    dest = folder / config_name / "fit.joblib"
    dest.parent.mkdir(parents=True)
    joblib.dump(record, dest)
    return {"path": str(dest), "sha256": seal(dest)}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fit", action="store_true", help="time on fitted weights")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    images, labels = load(args.mnist, "t10k")
    test_path = work / "test.parquet"
    write_split(test_path, images, labels, metadata={})
    X = scaled(images)
    if args.fit:
        train_images, train_labels = load(args.mnist, "train")
        X_train = scaled(train_images)

    for name in PRESETS:
        config = preset(name)
        params, fit_seconds = init_params(config), None
        if args.fit:
            t = time.perf_counter()
            params = fit(X_train, train_labels, config).params
            fit_seconds = time.perf_counter() - t
            old = predict_proba(params, X).argmax(axis=1)
            new = predict_proba_pixels(params, pixels_of(X)).argmax(axis=1)
            print(
                f"{name}: labels differing between the paths: {np.count_nonzero(old != new)} "
                f"of {len(X)}; accuracy before {np.mean(old == labels):.4f}, "
                f"after {np.mean(new == labels):.4f}"
            )
        fit_file = write_fit(work, params, name, fit_seconds or 1.0)

        def evaluate(folder: Path = work / name / "eval", fit_file: dict = fit_file) -> None:
            folder.mkdir(exist_ok=True)
            core.evaluation.evaluate_fit(fit_file, test_path, folder)

        def evaluate_before() -> None:
            with float32_evaluate():
                evaluate()

        sides = {
            "evaluate": (evaluate_before, evaluate),
            "predict": (
                lambda p=params: predict_proba(p, X),
                lambda p=params: predict_proba_pixels(p, pixels_of(X)),
            ),
        }
        for before, after in sides.values():  # untimed warm-up of each
            before(), after()
        times = {what: ([], []) for what in sides}
        for r in range(args.rounds):
            for what, (before, after) in sides.items():
                if r % 2:
                    b_s, a_s = timed(before), timed(after)
                else:
                    a_s, b_s = timed(after), timed(before)
                times[what][0].append(b_s)
                times[what][1].append(a_s)
        shape = "-".join(map(str, [784, *config.hidden, 10]))
        scale = f", bare fit {fit_seconds:.2f} s" if fit_seconds else ""
        print(f"\n{name} ({shape}): {args.rounds} rounds{scale}")
        for what, (b, a) in times.items():
            ratios = [y / x for x, y in zip(b, a, strict=True)]
            before_s, after_s = statistics.median(b), statistics.median(a)
            extra = after_s - before_s
            share = f" = {extra / fit_seconds:.1%} of the bare fit" if fit_seconds else ""
            print(
                f"  {what:8s} before median {before_s * 1e3:7.1f} ms, after median "
                f"{after_s * 1e3:7.1f} ms, after/before median {statistics.median(ratios):.2f}x "
                f"(rounds {', '.join(f'{q:.2f}' for q in ratios)}); "
                f"after - before {extra:+.3f} s{share}"
            )


if __name__ == "__main__":
    main()
