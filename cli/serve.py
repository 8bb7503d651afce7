"""``mnist-pipeline serve`` and ``mnist-pipeline stack``: the deployments' doors in.

``cli.main.build_parser`` calls ``add_commands(sub)``; each handler returns an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

from core.settings import ENV_ARTIFACTS, Settings
from core.storage import is_remote
from flows.deployments import DEFAULT_PORT, ENV_TIMEZONE, NIGHTLY_CRON, SCORING, TRAINING

# As cli.main's: 0 success, 2 unusable invocation (bad schedule, no server, port in use).
EXIT_OK, EXIT_USAGE = 0, 2

NO_SERVER = (
    "no Prefect server configured: start one with `mnist-pipeline stack`, or set "
    "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) to a running `prefect server`"
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` and ``stack`` subcommands to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help=f"register {TRAINING} and {SCORING} with the Prefect server and run them",
        description=f"Register the deployments {TRAINING} (cron, the default preset, one "
        f"run at a time) and {SCORING} (on demand) with the Prefect API in PREFECT_API_URL, "
        "then run their flow runs from this process until Ctrl-C or SIGTERM. Runs use this "
        "artifacts root and its caches, like the other commands. Schedules stay active when "
        "it stops. Trigger runs with e.g. `prefect deployment run "
        f"'{TRAINING}' --watch`.",
    )
    _add_schedule(serve)
    serve.set_defaults(handler=_cmd_serve)

    stack = sub.add_parser(
        "stack",
        help="start a local Prefect server on 127.0.0.1 and serve the deployments",
        description="The one-command local stack: start `prefect server` on HOST:PORT "
        "(its database and log in ARTIFACTS/.prefect-server, analytics off), wait until it "
        "is healthy, then serve the deployments as `serve` does. Ctrl-C or SIGTERM stops "
        "both. Point other shells at it with PREFECT_API_URL=http://127.0.0.1:PORT/api.",
    )
    stack.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})"
    )
    stack.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the server binds (default 127.0.0.1; 0.0.0.0 for every interface, "
        "and then the UI calls the API at the address it was loaded from)",
    )
    _add_schedule(stack)
    stack.set_defaults(handler=_cmd_stack)


def _add_schedule(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts", metavar="DIR", help=f"output root (env {ENV_ARTIFACTS}, default ./artifacts)"
    )
    parser.add_argument(
        "--timezone",
        metavar="TZ",
        default=None,
        help=f"IANA timezone of the nightly schedule (env {ENV_TIMEZONE}, default UTC)",
    )
    parser.add_argument(
        "--cron",
        metavar="EXPR",
        default=NIGHTLY_CRON,
        help=f'when {TRAINING} runs (default "{NIGHTLY_CRON}")',
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        metavar="S",
        help="how often to ask the server for due runs (default: Prefect's, 10 s)",
    )


def _timezone(args: argparse.Namespace) -> str:
    return args.timezone or os.environ.get(ENV_TIMEZONE) or "UTC"


def _cmd_serve(args: argparse.Namespace) -> int:
    from flows.deployments import (
        DeploymentError,
        check_api,
        check_schedule,
        configured_api_url,
        serve,
    )

    timezone = _timezone(args)
    try:
        check_schedule(args.cron, timezone)
        api = configured_api_url()
        if api is None:
            raise DeploymentError(NO_SERVER)
        check_api(api)
    except DeploymentError as exc:
        return _usage_error("serve", exc)
    artifacts = Settings.from_env(artifacts=args.artifacts).artifacts
    _say(f"serving {TRAINING} and {SCORING} against {api}, artifacts {artifacts}")
    serve(artifacts, timezone, args.cron, args.poll_seconds)
    return EXIT_OK


def _cmd_stack(args: argparse.Namespace) -> int:
    from cli.stack import run_stack
    from flows.deployments import DeploymentError

    artifacts = Settings.from_env(artifacts=args.artifacts).artifacts
    if is_remote(artifacts):
        return _usage_error(
            "stack",
            f"--artifacts {artifacts}: the stack keeps its server's database and log under the "
            "artifacts root, which must be a local folder; with a store root, start a "
            "`prefect server` yourself and run `mnist-pipeline serve --artifacts URL`",
        )

    def ready(api: str) -> None:
        _say(f"prefect server: {api.removesuffix('/api')} (log {artifacts}/.prefect-server)")
        _say(f"in other shells: export PREFECT_API_URL={api}")

    try:
        run_stack(
            args.port, artifacts, _timezone(args), args.cron,
            poll_seconds=args.poll_seconds, on_ready=ready, host=args.host,
        )  # fmt: skip
    except DeploymentError as exc:
        return _usage_error("stack", exc)
    return EXIT_OK


def _usage_error(command: str, exc: Exception) -> int:
    # Reported here rather than raised: under `python -m cli.main` that module is
    # __main__, so its UsageError is not the class an import here would see.
    sys.stderr.write(f"mnist-pipeline {command}: error: {exc}\n")
    return EXIT_USAGE


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
