"""The ``mnist-pipeline`` command line: the door into the flows.

Exit codes: 0 success; 1 the pipeline failed (e.g. every mirror failed, a corrupt
download); 2 unusable invocation or model; 3 some rows or files were rejected (score).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from flows.runners import ENV_DASK_ADDRESS
from flows.serve_cli import add_commands
from tasks.settings import (
    ENV_ARTIFACTS,
    ENV_CHECKSUMS,
    ENV_MIRROR,
    Settings,
    SettingsError,
    prefect_env_defaults,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS = 0, 1, 2, 3

EPILOG = """exit codes: 0 success, 1 pipeline failed, 2 unusable invocation or model,
3 some rows or files rejected (score)"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help=f"output root (env {ENV_ARTIFACTS}, default ./artifacts)",
    )


def _add_mirror(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mirror",
        metavar="URL",
        action="append",
        help=f"an MNIST mirror to use instead of the public ones: http(s)://…/, file:///…/ "
        f"or a directory; repeat to try several in order (env {ENV_MIRROR})",
    )
    parser.add_argument(
        "--checksums",
        metavar="FILE",
        help=f"sha256sum-style file of the IDX files' SHA-256, replacing MNIST's own "
        f"(for other data; env {ENV_CHECKSUMS})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-pipeline",
        description="Train and score a NumPy MNIST network, orchestrated by Prefect.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = sub.add_parser(
        "ingest",
        help="download, verify and convert MNIST to Parquet",
        description="Download the four MNIST files from the first mirror that has a verified "
        "copy (SHA-256 of the decompressed IDX bytes), then write artifacts/data/train.parquet "
        "and test.parquet. Steps are cached: a second run with the data present does nothing.",
        epilog=EPILOG,
    )
    _add_mirror(ingest)
    _add_common(ingest)
    ingest.add_argument("--force", action="store_true", help="ignore caches and rebuild")
    ingest.set_defaults(handler=_cmd_ingest)

    train = sub.add_parser(
        "train",
        help="ingest, train, evaluate, save and promote a model (the main job)",
        description="Run the mnist-training flow: ingest MNIST, train the NumPy network, "
        "evaluate it on the 10,000 held-out test images, save it as "
        "artifacts/models/<version>/, and make it champion unless its test accuracy is lower "
        "than the current champion's. Every step is cached: rerunning with the same "
        "parameters recomputes nothing. Hyperparameters not given take the preset's value.",
        epilog=EPILOG,
    )
    train.add_argument(
        "--preset",
        choices=["seed", "default", "wide"],
        default="default",
        help="seed: the notebook's setup, fixed; default: best 784-10-10; wide: best accuracy",
    )
    train.add_argument(
        "--hidden", type=int, nargs="+", metavar="N", help="hidden layer widths, e.g. 256 128"
    )
    train.add_argument("--epochs", type=int, help="passes over the training split")
    train.add_argument(
        "--batch-size", type=_batch_size, metavar="N|full", help="mini-batch size, or full"
    )
    train.add_argument("--learning-rate", type=float, metavar="LR")
    train.add_argument("--momentum", type=float, help="0 for plain SGD")
    train.add_argument("--seed", type=int, help="drives init, validation split and shuffling")
    train.add_argument(
        "--validation-fraction", type=float, metavar="F", help="share of training rows held out"
    )
    train.add_argument(
        "--early-stopping",
        type=_positive,
        metavar="N",
        dest="early_stopping_patience",
        help="stop after N epochs without a lower validation loss and keep the best epoch's "
        "weights (default: off, train every epoch)",
    )
    _add_mirror(train)
    _add_common(train)
    train.add_argument("--force", action="store_true", help="ignore caches and recompute")
    train.add_argument(
        "--force-promote", action="store_true", help="make the new model champion regardless"
    )
    train.add_argument(
        "--promote-tolerance",
        type=float,
        default=0.0,
        metavar="T",
        help="promote if test accuracy >= champion's minus T (default 0)",
    )
    train.set_defaults(handler=_cmd_train)

    score = sub.add_parser(
        "score",
        help="score CSV files of digits with a saved model (the champion by default)",
        description="Score CSV files of 28x28 digits (0-255 pixels; Kaggle train.csv/test.csv "
        "layouts, or headerless 784/785 columns; .csv.gz too) with a saved model. Each input "
        "row lands in exactly one of two outputs: predictions (ImageId,Label,Confidence "
        "[,TrueLabel][,carried columns]) or rejects (ImageId,Line,Reason).",
        epilog="exit codes: 0 all rows scored; 3 some rows or files rejected (outputs written "
        "for the rest); 2 unusable invocation or model",
    )
    score.add_argument("inputs", nargs="+", metavar="INPUT", help="CSV files or globs")
    where = score.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output", metavar="FILE", help="predictions file (one input); rejects go beside it"
    )
    where.add_argument(
        "--output-dir",
        metavar="DIR",
        help="writes DIR/<name>.predictions.<format> and DIR/<name>.rejects.csv per input",
    )
    score.add_argument(
        "--model", metavar="VERSION|PATH", help="a version or model folder (default: champion)"
    )
    score.add_argument("--format", choices=["csv", "parquet"], default="csv")
    _add_dask(score)
    _add_common(score)
    score.set_defaults(handler=_cmd_score)

    sweep = sub.add_parser(
        "sweep",
        help="train a grid of configs, promote the best by validation accuracy",
        description="Run the mnist-sweep flow: ingest MNIST once, train and evaluate one model "
        "per config of the grid (hidden layers x learning rates x seeds; one task each, so "
        "they run in parallel, on Dask too), save the config with the best validation "
        "accuracy and make it champion unless its test accuracy is lower than the current "
        "champion's. The test set only reports; it never picks. Steps are cached like train's.",
        epilog=EPILOG,
    )
    sweep.add_argument(
        "--hidden-grid",
        type=_layers,
        nargs="+",
        metavar="N[,N…]",
        help='hidden layer shapes to try, e.g. "10" "64" "128,64" (default: the preset\'s)',
    )
    sweep.add_argument(
        "--learning-rates", type=float, nargs="+", metavar="LR", help="learning rates to try"
    )
    sweep.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds to try")
    sweep.add_argument(
        "--preset",
        choices=["seed", "default", "wide"],
        default="default",
        help="the values of everything the grid does not vary",
    )
    sweep.add_argument("--epochs", type=int, help="passes over the training split")
    sweep.add_argument(
        "--batch-size", type=_batch_size, metavar="N|full", help="mini-batch size, or full"
    )
    _add_dask(sweep)
    _add_mirror(sweep)
    _add_common(sweep)
    sweep.add_argument("--force", action="store_true", help="ignore caches and recompute")
    sweep.add_argument(
        "--promote-tolerance",
        type=float,
        default=0.0,
        metavar="T",
        help="promote if test accuracy >= champion's minus T (default 0)",
    )
    sweep.set_defaults(handler=_cmd_sweep)

    models = sub.add_parser("models", help="list saved models, or promote one (rollback)")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = models_sub.add_parser("list", help="version, created, test accuracy, champion")
    _add_common(listing)
    listing.set_defaults(handler=_cmd_models_list)
    promote = models_sub.add_parser("promote", help="make VERSION the champion")
    promote.add_argument("version", metavar="VERSION")
    _add_common(promote)
    promote.set_defaults(handler=_cmd_models_promote)
    add_commands(sub)
    return parser


def _add_dask(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--dask-address",
        metavar="tcp://HOST:8786",
        help=f"run the tasks on this existing Dask cluster (env {ENV_DASK_ADDRESS}); its "
        "workers need the same artifacts path and PREFECT_API_URL",
    )
    where.add_argument(
        "--dask-local",
        type=_positive,
        metavar="N",
        help="run the tasks on a local Dask cluster of N worker processes, started for the run",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _layers(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of layer widths"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: layer widths must be at least 1")
    return widths


def _batch_size(text: str) -> int:
    if text == "full":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'full'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or 'full')")
    return value


def _cmd_ingest(args: argparse.Namespace) -> int:
    from flows.console import print_steps
    from flows.ingest import ingest_flow

    result = ingest_flow(
        mirror=args.mirror,
        artifacts=args.artifacts,
        checksums_file=args.checksums,
        force=args.force,
    )
    print_steps(result["steps"])
    for split in ("train", "test"):
        _say(f"{split}: {result[split]['rows']} rows in {result[split]['path']}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from tasks.train import resolve_config

    overrides = {
        "hidden": args.hidden,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "momentum": args.momentum,
        "seed": args.seed,
        "validation_fraction": args.validation_fraction,
        "early_stopping_patience": args.early_stopping_patience,
    }
    try:
        resolve_config(args.preset, **overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    from flows.console import print_steps
    from flows.training import training_flow

    result = training_flow(
        preset=args.preset,
        mirror=args.mirror,
        artifacts=args.artifacts,
        checksums_file=args.checksums,
        force=args.force,
        force_promote=args.force_promote,
        promote_tolerance=args.promote_tolerance,
        **overrides,
    )
    print_steps(result["steps"])
    promotion = result["promotion"]
    _say(f"test accuracy {result['test_accuracy']:.4f}, log-loss {result['test_log_loss']:.4f}")
    _say(f"model:  {result['model']}")
    _say(f"report: {promotion['report']}")
    _say(promotion_line(result))
    return EXIT_OK


def _cmd_score(args: argparse.Namespace) -> int:
    from tasks.batch_scoring import ScoringUsageError, plan_jobs

    try:
        plan_jobs(args.inputs, args.output, args.output_dir, args.format)
    except ScoringUsageError as exc:
        raise UsageError(str(exc)) from None
    from tasks import registry

    # Fail fast, before Prefect starts, when there is no usable model.
    registry.load(Settings.from_env(artifacts=args.artifacts).models_dir, args.model)

    from flows.console import err
    from flows.runners import run_on_runner
    from flows.scoring import ScoringFailed, confusion_lines, scoring_flow

    try:
        result = run_on_runner(
            scoring_flow,
            args.dask_address,
            args.dask_local,
            inputs=args.inputs,
            output=args.output,
            output_dir=args.output_dir,
            model=args.model,
            artifacts=args.artifacts,
            format=args.format,
        )
    except ScoringFailed as failed:  # the run is Failed; the other files were scored
        result = failed.summary
    _say("")
    for f in result["files"]:
        if "error" in f:
            err(f"mnist-pipeline score: error: {f['error']}")
            continue
        accuracy = f" accuracy {f['accuracy']:.4f}" if f["accuracy"] is not None else ""
        _say(f"{f['file']}: {f['scored']}/{f['rows']} rows scored, {f['rejected']} rejected"
             f"{accuracy} -> {f['output']}")  # fmt: skip
        if f["rejects"]:
            _say(f"  rejects: {f['rejects']}")
        if f.get("confusion_matrix") is not None:
            for line in confusion_lines(f["confusion_matrix"]):
                _say(f"  {line}")
    _say(
        f"model {result['model']}: {result['scored']} of {result['rows']} rows scored, "
        f"{result['rejected']} rejected, {result['failed_files']} file(s) failed"
    )
    return EXIT_REJECTS if result["rejected"] or result["failed_files"] else EXIT_OK


def _cmd_sweep(args: argparse.Namespace) -> int:
    from flows.sweep import grid_configs

    try:
        grid_configs(
            args.preset, args.hidden_grid, args.learning_rates, args.seeds,
            epochs=args.epochs, batch_size=args.batch_size,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    from flows.console import print_steps
    from flows.runners import run_on_runner
    from flows.sweep import sweep_flow

    result = run_on_runner(
        sweep_flow,
        args.dask_address,
        args.dask_local,
        hidden=args.hidden_grid,
        learning_rates=args.learning_rates,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        preset=args.preset,
        mirror=args.mirror,
        artifacts=args.artifacts,
        checksums_file=args.checksums,
        force=args.force,
        promote_tolerance=args.promote_tolerance,
    )
    print_steps(result["steps"])
    _say("")
    width = max(len(row["config"]) for row in result["configs"])
    _say(f"  {'config':<{width}}  val_acc  test_acc")
    for row in result["configs"]:
        mark = "*" if row["chosen"] else " "
        if row["error"] is not None:
            _say(f"{mark} {row['config']:<{width}}  failed: {row['error']}")
            continue
        _say(f"{mark} {row['config']:<{width}}  {row['validation_accuracy']:.4f}   "
             f"{row['test_accuracy']:.4f}")  # fmt: skip
    promotion = result["promotion"]
    _say(f"chosen by validation accuracy: {result['best']['config']}")
    _say(f"model:  {result['model']}")
    _say(f"report: {promotion['report']}")
    _say(promotion_line(result))
    return EXIT_OK


def _cmd_models_list(args: argparse.Namespace) -> int:
    from tasks import registry

    models_dir = Settings.from_env(artifacts=args.artifacts).models_dir
    rows = registry.list_versions(models_dir)
    if not rows:
        _say("no models yet: run `mnist-pipeline train`")
    else:
        width = max(len(r["version"]) for r in rows)
        _say(f"  {'version':<{width}}  {'created':<25}  test_accuracy")
        for r in rows:
            mark = "*" if r["champion"] else " "
            _say(f"{mark} {r['version']:<{width}}  {r['created'][:25]:<25}  "
                 f"{r['test_accuracy']:.4f}")  # fmt: skip
    registry.champion_version(models_dir)  # a broken champion.json: listed above, then exit 2
    return EXIT_OK


def _cmd_models_promote(args: argparse.Namespace) -> int:
    from tasks import registry

    models_dir = Settings.from_env(artifacts=args.artifacts).models_dir
    decision = registry.promote(models_dir, args.version)
    _say(f"champion: {decision['version']}")
    return EXIT_OK


class UsageError(Exception):
    """An invocation that cannot run: bad flag values."""


def promotion_line(result: dict[str, Any]) -> str:
    """What the promote step decided; or, when that step was Cached (decided by an earlier
    run, whose reason may be stale), where this model stands against the champion now."""
    promotion = result["promotion"]
    state = next(s["state"] for s in result["steps"] if s["step"] == "promote")
    if state != "Cached":
        verdict = "champion" if promotion["promoted"] else "not promoted"
        return f"{verdict}: {promotion['reason']}"
    if result["champion"] == result["version"]:
        return f"champion: {result['version']} (unchanged; promote step Cached)"
    decided = "promoted" if promotion["promoted"] else "not promoted"
    return (
        f"not champion: the champion is {result['champion']} "
        f"(promote step Cached; this model was {decided} when first trained)"
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from flows import signals

    args = build_parser().parse_args(argv)
    serving = args.command in ("serve", "stack")  # those stop their runs and server themselves
    signals.install(enforce=not serving)  # SIGINT/SIGTERM end a command with exit 130/143
    try:  # settings are checked here, before any flow starts
        settings = Settings.from_env(
            artifacts=getattr(args, "artifacts", None),
            checksums_file=getattr(args, "checksums", None),
        )
    except SettingsError as exc:
        sys.stderr.write(f"mnist-pipeline {args.command}: error: {exc}\n")
        return EXIT_USAGE
    for key, value in prefect_env_defaults().items():
        os.environ.setdefault(key, value)

    from flows.backend import in_process_backend
    from flows.console import USER_ERRORS, err, quiet_user_error_tracebacks
    from tasks.registry import ModelError

    quiet_user_error_tracebacks()
    try:
        if serving:  # their flows run in processes of their own
            code = args.handler(args)
            stopped = signals.received()
            return signals.exit_code(stopped) if stopped and code == EXIT_OK else code
        with in_process_backend(settings.artifacts):
            return args.handler(args)
    except (UsageError, ModelError, SettingsError) as exc:  # e.g. MNIST_TRAINING_TIMEOUT
        err(f"mnist-pipeline {args.command}: error: {exc}")
        return EXIT_USAGE
    except USER_ERRORS as exc:
        err(f"mnist-pipeline {args.command}: error: {exc}")
        return EXIT_FAILED
    except TimeoutError as exc:  # the flow's own limit (MNIST_TRAINING_TIMEOUT, ...)
        err(f"mnist-pipeline {args.command}: error: the run exceeded its time limit: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        signals.exit_now()  # the interpreter's own exit would wait for the task threads


if __name__ == "__main__":
    sys.exit(main())
