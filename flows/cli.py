"""The ``mnist-pipeline`` command line: the door into the flows.

Exit codes: 0 success; 1 the pipeline failed (e.g. every mirror failed, a corrupt
download); 2 unusable invocation or model; 3 some rows or files were rejected (score).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tasks.settings import ENV_ARTIFACTS, ENV_CHECKSUMS, ENV_MIRROR, Settings, prefect_env_defaults

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
    return parser


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


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(artifacts=getattr(args, "artifacts", None))
    for key, value in prefect_env_defaults(settings.artifacts).items():
        os.environ.setdefault(key, value)
    # Prefect creates its home folder but not the folders above it.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)

    from flows.console import USER_ERRORS, err, quiet_user_error_tracebacks

    quiet_user_error_tracebacks()
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        err(f"mnist-pipeline {args.command}: error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("mnist-pipeline: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
