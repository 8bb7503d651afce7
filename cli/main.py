"""The ``mnist-pipeline`` command line: the door into the flows.

A flow command's options come from its flow's signature (``cli.options``); each
subcommand has one function that fills its parser and one that runs it.

Exit codes: 0 success; 1 the pipeline failed (e.g. every mirror failed, a corrupt
download, a labeled file refused); 2 unusable invocation or model (also a --labeled entry
that matches no file); 3 some rows or files were rejected (score).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cli.console import out, print_scoring, print_steps, print_sweep
from cli.options import COMMON, Option, add_flow_options, flow_arguments, layers, positive
from cli.serve import add_commands
from core.settings import Settings, SettingsError, prefect_env_defaults
from core.storage import StorageURLError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS = 0, 1, 2, 3

EPILOG = """exit codes: 0 success, 1 pipeline failed, 2 unusable invocation or model,
3 some rows or files rejected (score)"""


class UsageError(Exception):
    """An invocation that cannot run: bad flag values."""


# --- ingest


def _ingest_parser(command: argparse.ArgumentParser) -> None:
    from flows.ingest import ingest_flow

    command.description = (
        "Download the four MNIST files from the first mirror that has a verified copy "
        "(SHA-256 of the decompressed IDX bytes), then write artifacts/data/train.parquet and "
        "test.parquet. Steps are cached: a second run with the data present does nothing."
    )
    add_flow_options(
        command, ingest_flow, {"force": COMMON["force"].but(help="ignore caches and rebuild")}
    )
    command.set_defaults(handler=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from flows import run_recorded
    from flows.ingest import ingest_flow

    result = run_recorded(ingest_flow, **flow_arguments(args, ingest_flow))
    print_steps(result["steps"])
    for split in ("train", "test"):
        out(f"{split}: {result[split]['rows']} rows in {result[split]['path']}")
    out(f"artifacts: {args.root}")
    return EXIT_OK


# --- train


def _train_parser(command: argparse.ArgumentParser) -> None:
    from core.registry import GATES
    from flows.training import training_flow

    command.description = (
        "Run the mnist-training flow: ingest MNIST (and your labeled files, --labeled), train "
        "the NumPy network, evaluate it on the 10,000 held-out test images, save it as "
        "artifacts/models/<version>/, and make it champion unless its test accuracy is lower "
        "than the current champion's. Every step is cached: rerunning with the same "
        "parameters recomputes nothing. Hyperparameters not given take the preset's value."
    )
    add_flow_options(command, training_flow, {
        "hidden": Option("--hidden", "hidden layer widths, e.g. 256 128", metavar="N"),
        "learning_rate": Option("--learning-rate", "learning rate at epoch 0", metavar="LR"),
        "momentum": Option("--momentum", "0 for plain SGD"),
        "seed": Option("--seed", "drives init, validation split and shuffling"),
        "validation_fraction": Option(
            "--validation-fraction", "share of training rows held out", metavar="F"
        ),
        "early_stopping_patience": Option(
            "--early-stopping",
            "stop after N epochs without a lower validation loss and keep the best epoch's "
            "weights (default: off, train every epoch)",
            metavar="N",
            type=positive,
        ),
        "force_promote": Option("--force-promote", "make the new model champion regardless"),
        "promote_on": Option(
            "--promote-on",
            "the champion gate: mnist, test accuracy (default); or labeled, the labeled "
            "holdout accuracy, against the champion's on this run's holdout (measured now "
            "if it is another, when fair: docs/pipeline.md)",
            choices=GATES,
        ),
    })  # fmt: skip
    command.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from core.labeled import expand_sources
    from core.settings import labeled_entries
    from core.training import resolve_config
    from flows import run_recorded
    from flows.training import training_flow
    from model.config import ModelConfig

    parameters = flow_arguments(args, training_flow)
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    try:  # a bad value is a usage error before Prefect starts, not a failed run
        resolve_config(
            parameters["preset"], **{k: v for k, v in parameters.items() if k in config_fields}
        )
        # So is a --labeled entry (or MNIST_LABELED's) that matches no file.
        expand_sources(labeled_entries(parameters["labeled"]))
    except ValueError as exc:  # LabeledDataError is one too
        raise UsageError(str(exc)) from None
    result = run_recorded(training_flow, **parameters)
    print_steps(result["steps"])
    out(f"test accuracy {result['test_accuracy']:.4f}, log-loss {result['test_log_loss']:.4f}")
    print_labeled(result)
    _print_model(result, args.root)
    return EXIT_OK


def print_labeled(result: dict[str, Any]) -> None:
    """The labeled data's lines: per file its rows and where they went, the holdout
    accuracy, the rejects files beside the run. Nothing for a run on MNIST alone."""
    files = result.get("labeled_data") or []
    leaked = result.get("labeled_leaked") or {}
    for f in files:
        also = f" ({n} identical to an MNIST test image)" if (n := leaked.get(f["source"])) else ""
        out(f"labeled {f['source']}: {f['rows']} rows, {f['accepted']} accepted, "
            f"{f['rejected']} rejected{also}, {f['held_out']} held out")  # fmt: skip
    if files:
        accuracy = result["labeled_holdout_accuracy"]
        shown = "none (no row held out)" if accuracy is None else f"{accuracy:.4f}"
        out(f"labeled rows trained on {result['labeled_rows']}, labeled holdout accuracy {shown}")
    for path in result.get("rejects") or []:
        out(f"rejects: {path}")


def _print_model(result: dict[str, Any], root: Any) -> None:
    """The closing lines of train and sweep: the artifacts root, the model, its report,
    the promotion."""
    out(f"artifacts: {root}")
    out(f"model:  {result['model']}")
    out(f"report: {result['promotion']['report']}")
    out(promotion_line(result))


# --- score


def _score_parser(command: argparse.ArgumentParser) -> None:
    from core.scoring.jobs import FORMATS
    from flows.scoring import scoring_flow

    command.description = (
        "Score CSV files of 28x28 digits (0-255 pixels; Kaggle train.csv/test.csv layouts, "
        "or headerless 784/785 columns; .csv.gz too) with a saved model. Each input row lands "
        "in exactly one of two outputs: predictions (ImageId,Label,Confidence [,TrueLabel]"
        "[,carried columns]) or rejects (ImageId,Line,Reason)."
    )
    command.epilog = (
        "exit codes: 0 all rows scored; 3 some rows or files rejected (outputs written for "
        "the rest); 1 no input could be scored (nothing written); 2 unusable invocation or "
        "model (also a pattern that matches no file, or a folder as an input)"
    )
    add_flow_options(command, scoring_flow, {
        "inputs": Option(None, "CSV files or globs", metavar="INPUT"),
        "output": Option(
            "--output", "predictions file (one input); rejects go beside it", metavar="FILE"
        ),
        "output_dir": Option(
            "--output-dir",
            "writes DIR/<name>.predictions.<format> and DIR/<name>.rejects.csv per input",
            metavar="DIR",
        ),
        "model": Option(
            "--model", "a version or model folder (default: champion)", metavar="VERSION|PATH"
        ),
        "format": Option("--format", "the predictions file's format (default csv)",
                         choices=FORMATS),
    })  # fmt: skip
    command.set_defaults(handler=_score)


def _score(args: argparse.Namespace) -> int:
    from core import registry
    from core.scoring.jobs import ScoringUsageError, plan_jobs
    from flows.runners import run_on_runner
    from flows.scoring import ScoringFailed, scoring_flow

    parameters = flow_arguments(args, scoring_flow)
    try:
        plan_jobs(args.inputs, args.output, args.output_dir, args.format)
    except ScoringUsageError as exc:
        raise UsageError(str(exc)) from None
    # Fail fast, before Prefect starts, when there is no usable model.
    registry.load(Settings.from_env(artifacts=args.artifacts).models_dir, args.model)
    try:
        result = run_on_runner(scoring_flow, **parameters)
    except ScoringFailed as failed:  # the run is Failed; the other files were scored
        result = failed.summary
    print_scoring(result)
    out(f"artifacts: {args.root}")
    if result["failed_files"] == len(result["files"]):
        return EXIT_FAILED  # no input produced any output: not "written for the rest"
    return EXIT_REJECTS if result["rejected"] or result["failed_files"] else EXIT_OK


# --- sweep


def _sweep_parser(command: argparse.ArgumentParser) -> None:
    from flows.sweep import sweep_flow

    command.description = (
        "Run the mnist-sweep flow: ingest MNIST once, train and evaluate one model per config "
        "of the grid (hidden layers x learning rates x seeds; one task each, so they run in "
        "parallel, on Dask too), save the config with the best validation accuracy and make "
        "it champion unless its test accuracy is lower than the current champion's. The test "
        "set only reports; it never picks. Steps are cached like train's."
    )
    add_flow_options(command, sweep_flow, {
        "hidden": Option(
            "--hidden-grid",
            'hidden layer shapes to try, e.g. "10" "64" "128,64" (default: the preset\'s)',
            metavar="N[,N…]",
            type=layers,
        ),
        "learning_rates": Option("--learning-rates", "learning rates to try", metavar="LR"),
        "seeds": Option("--seeds", "seeds to try", metavar="S"),
        "preset": COMMON["preset"].but(help="the values of everything the grid does not vary"),
    })  # fmt: skip
    command.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from flows.runners import run_on_runner
    from flows.sweep import grid_configs, sweep_flow

    p = flow_arguments(args, sweep_flow)
    try:
        grid_configs(p["preset"], p["hidden"], p["learning_rates"], p["seeds"],
                     epochs=p["epochs"], batch_size=p["batch_size"])  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = run_on_runner(sweep_flow, **p)
    print_steps(result["steps"])
    print_sweep(result["configs"])
    out(f"chosen by validation accuracy: {result['best']['config']}")
    _print_model(result, args.root)
    return EXIT_OK


# --- models list | promote


def _models_parser(command: argparse.ArgumentParser) -> None:
    actions = command.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="version, created, test accuracy, labeled rows learned from, champion"
    )
    listing.add_argument("--artifacts", metavar="DIR", help=COMMON["artifacts"].help)
    listing.set_defaults(handler=_models_list)
    promote = actions.add_parser("promote", help="make VERSION the champion")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--artifacts", metavar="DIR", help=COMMON["artifacts"].help)
    promote.set_defaults(handler=_models_promote)


def _models_list(args: argparse.Namespace) -> int:
    from core import registry

    models_dir = Settings.from_env(artifacts=args.artifacts).models_dir
    rows = registry.list_versions(models_dir)
    if not rows:
        out(f"no models yet in {models_dir}: run `mnist-pipeline train`")
    else:
        width = max(len(r["version"]) for r in rows)
        out(f"  {'version':<{width}}  {'created':<25}  test_accuracy  labeled_rows")
        for r in rows:
            mark = "*" if r["champion"] else " "
            out(f"{mark} {r['version']:<{width}}  {r['created'][:25]:<25}  "
                f"{r['test_accuracy']:<13.4f}  {r['labeled_rows']}")  # fmt: skip
        out(f"artifacts: {args.root}")
    registry.champion_version(models_dir)  # a broken champion.json: listed above, then exit 2
    return EXIT_OK


def _models_promote(args: argparse.Namespace) -> int:
    from core import registry

    models_dir = Settings.from_env(artifacts=args.artifacts).models_dir
    decision = registry.promote(models_dir, args.version)
    out(f"champion: {decision['version']}")
    out(f"artifacts: {args.root}")
    return EXIT_OK


def promotion_line(result: dict[str, Any]) -> str:
    """What the promote step decided; or, when that step was Cached (decided by an earlier
    run, whose reason may be stale), where this model stands against the champion now."""
    promotion = result["promotion"]
    state = next(s["state"] for s in result["steps"] if s["step"] == "promote")
    if state != "Cached":
        # Say what happened first (promoted, or the champion kept), then why.
        if promotion["promoted"]:
            return f"promoted: {result['version']} is the champion ({promotion['reason']})"
        return f"not promoted: champion {promotion['previous']} kept ({promotion['reason']})"
    if result["champion"] == result["version"]:
        return f"champion: {result['version']} (unchanged; promote step Cached)"
    decided = "promoted" if promotion["promoted"] else "not promoted"
    return (
        f"not champion: the champion is {result['champion']} "
        f"(promote step Cached; this model was {decided} when first trained)"
    )


# --- the parser and the entry point

# name: (one-line help, fills the subcommand's parser, shows the exit codes below its help)
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], bool]] = {
    "ingest": ("download, verify and convert MNIST to Parquet", _ingest_parser, True),
    "train": ("ingest, train, evaluate, save and promote a model (the main job)",
              _train_parser, True),
    "score": ("score CSV files of digits with a saved model (the champion by default)",
              _score_parser, True),
    "sweep": ("train a grid of configs, promote the best by validation accuracy",
              _sweep_parser, True),
    "models": ("list saved models, or promote one (rollback)", _models_parser, False),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(
        prog="mnist-pipeline",
        description="Train and score a NumPy MNIST network, orchestrated by Prefect.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, fill, exit_codes) in SUBCOMMANDS.items():
        fill(sub.add_parser(name, help=summary, epilog=EPILOG if exit_codes else None))
    add_commands(sub)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a bad time limit of the flow the command runs is one line, exit 2."""
    args = build_parser().parse_args(argv)
    flow = getattr(args, "flow", None)  # the flow the command runs, if any (cli.options)
    try:  # its time limit is read when a run starts (flows.limits): checked now
        getattr(flow, "timeout_seconds", None)
    except SettingsError as exc:
        sys.stderr.write(f"mnist-pipeline {args.command}: error: {exc}\n")
        sys.exit(EXIT_USAGE)
    return args


SERVING = ("serve", "stack")  # long-running: they stop their own runs and server


def main(argv: Sequence[str] | None = None) -> int:
    """The process's entry point: the process-wide setup, then ``run``."""
    from cli import reaper, signals

    args = _parse(argv)
    # Whatever this command starts (the embedded server, Dask workers, the stack's server)
    # is stopped when it ends, even by SIGKILL (cli.reaper).
    reaper.start()
    # SIGINT/SIGTERM end a command with exit 130/143; serve and stack stop their runs and
    # server themselves, so for them the signal is only noted (see cli.signals).
    signals.install(enforce=args.command not in SERVING)
    for key, value in prefect_env_defaults().items():
        os.environ.setdefault(key, value)
    return run(args)


def run(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Parse ``argv`` (unless given parsed) and run its command in this process; returns
    the exit code. Without ``main``'s process-wide setup (the reaper, the signal handlers,
    the environment's defaults for Prefect), so the tests call the CLI in-process."""
    args = argv if isinstance(argv, argparse.Namespace) else _parse(argv)
    try:  # settings are checked here, before any flow starts
        settings = Settings.from_env(
            artifacts=getattr(args, "artifacts", None),
            checksums_file=getattr(args, "checksums_file", None),
        )
    except (SettingsError, StorageURLError) as exc:
        sys.stderr.write(f"mnist-pipeline {args.command}: error: {exc}\n")
        return EXIT_USAGE
    # Every command's closing lines name the absolute root it used: a relative default
    # (./artifacts) depends on the folder the command ran in.
    args.root = settings.artifacts
    return _run(args, settings)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the subcommand's handler on its backend; a user's error is one line."""
    from cli.backend import in_process_backend
    from cli.console import USER_ERRORS, err, quiet_user_error_tracebacks
    from cli.signals import exit_code, exit_now, received
    from core.registry import ModelError
    from core.storage import check_bucket, describe, is_library_store_fault, location

    quiet_user_error_tracebacks()
    try:
        if args.command in SERVING:  # their flows run in processes of their own
            code = args.handler(args)
            stopped = received()
            return exit_code(stopped) if stopped and code == EXIT_OK else code
        # No command creates a bucket: a missing one (artifacts root, score's outputs) is
        # one line here, before any flow starts, and is still missing afterwards.
        outputs = (getattr(args, "output", None), getattr(args, "output_dir", None))
        for root in (settings.artifacts, *outputs):
            if root is not None:
                check_bucket(location(root))
        with in_process_backend(settings.artifacts):
            return args.handler(args)
    except (UsageError, ModelError, SettingsError, StorageURLError) as exc:
        err(f"mnist-pipeline {args.command}: error: {exc}")  # e.g. MNIST_TRAINING_TIMEOUT
        return EXIT_USAGE
    except USER_ERRORS as exc:  # StorageError among them: a store that failed us
        err(f"mnist-pipeline {args.command}: error: {exc}")
        return EXIT_FAILED
    except TimeoutError as exc:  # the flow's own limit (MNIST_TRAINING_TIMEOUT, ...)
        err(f"mnist-pipeline {args.command}: error: the run exceeded its time limit: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        exit_now()  # the interpreter's own exit would wait for the task threads
    except Exception as exc:
        # A store library's own exception that no step turned into a StorageError (botocore
        # and aiohttp errors are not OSErrors): still one line, not a traceback.
        if not is_library_store_fault(exc):
            raise
        err(f"mnist-pipeline {args.command}: error: object store: {describe(exc)}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
