"""``mnist-pipeline serve`` and ``mnist-pipeline stack``: the deployments' doors in.

``cli.main.build_parser`` calls ``add_commands(sub)``; each handler returns an exit code.
"""

from __future__ import annotations

import argparse
import sys

from core.settings import ENV_ARTIFACTS, ENV_LABELED, ENV_TIMEZONE, Settings, schedule_timezone
from core.storage import is_remote
from flows.deployments import DEFAULT_PORT, NIGHTLY_CRON, SCORING, TRAINING

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
        "(its log in ARTIFACTS/.prefect-server, analytics off; its database the root's "
        "ARTIFACTS/.prefect/prefect.db, which holds the root's CLI runs too, unless "
        "--database), wait until it is healthy, then serve the deployments as `serve` does. "
        "Ctrl-C or SIGTERM stops both. Meanwhile mnist-pipeline commands on this artifacts "
        "root with no PREFECT_API_URL use it; point other shells and machines at it with "
        "PREFECT_API_URL=http://127.0.0.1:PORT/api.",
    )
    stack.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})"
    )
    stack.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the server binds (default 127.0.0.1; 0.0.0.0 for every interface, "
        "and then the UI calls the API at the address it was loaded from). Any address "
        "but loopback needs PREFECT_SERVER_API_AUTH_STRING, or --no-auth",
    )
    stack.add_argument(
        "--database",
        metavar="URL",
        help="the server's database, e.g. postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB, "
        "checked before the server starts (env PREFECT_SERVER_DATABASE_CONNECTION_URL, which "
        "keeps a password out of `ps`; default: SQLite, ARTIFACTS/.prefect/prefect.db)",
    )
    stack.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a non-loopback --host without an auth string: anyone who reaches it "
        "can run code on this machine through the deployments",
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
    parser.add_argument(
        "--labeled",
        action="append",
        metavar="PATH|GLOB|URL",
        help=f"labeled digits the nightly {TRAINING} run learns from beside MNIST, e.g. an "
        "inbox 'inbox/*.csv' or s3://bucket/labeled/*.csv (the deployment's default `labeled` "
        f"parameter); repeat for several (default: each run's {ENV_LABELED}, if set)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from cli.backend import BackendRefused, check_authorized
    from flows.deployments import (
        DeploymentError,
        check_api,
        check_schedule,
        configured_api_url,
        serve,
    )

    timezone = schedule_timezone(args.timezone)
    try:
        check_schedule(args.cron, timezone)
        api = configured_api_url()
        if api is None:
            raise DeploymentError(NO_SERVER)
        check_api(api)
        check_authorized(api)
    except (DeploymentError, BackendRefused) as exc:
        return _usage_error("serve", exc)
    artifacts = Settings.from_env(artifacts=args.artifacts).artifacts
    _say(f"serving {TRAINING} and {SCORING} against {api}, artifacts {artifacts}")
    serve(artifacts, timezone, args.cron, args.poll_seconds, labeled=args.labeled)
    return EXIT_OK


def _cmd_stack(args: argparse.Namespace) -> int:
    from cli.database import describe_database
    from cli.root_database import embedded_database_url
    from cli.stack import (
        WILDCARD_HOSTS,
        check_database,
        configured_auth_string,
        is_loopback,
        listen_address,
        run_stack,
        stack_database,
    )
    from cli.stack_record import stack_record
    from flows.deployments import DeploymentError

    artifacts = Settings.from_env(artifacts=args.artifacts).artifacts
    if is_remote(artifacts):
        return _usage_error(
            "stack",
            f"--artifacts {artifacts}: the stack keeps its server's database and log under the "
            "artifacts root, which must be a local folder; with a store root, start a "
            "`prefect server` yourself and run `mnist-pipeline serve --artifacts URL`",
        )

    auth = configured_auth_string()
    if not (auth or args.no_auth or is_loopback(args.host)):
        return _usage_error(
            "stack",
            f"--host {args.host}: the Prefect API runs code for anyone who can reach it, so a "
            "server beyond loopback needs PREFECT_SERVER_API_AUTH_STRING (clients then set "
            "PREFECT_API_AUTH_STRING to the same); or pass --no-auth",
        )

    database, source = stack_database(artifacts, args.database)
    try:
        version = check_database(database, source)
    except DeploymentError as exc:
        return _usage_error("stack", exc)

    def ready(api: str) -> None:
        where = api.removesuffix("/api")
        if args.host in WILDCARD_HOSTS:  # the API URL is this machine's loopback
            where = (
                f"listening on {listen_address(args.host, args.port)} (every interface), "
                f"from this machine {where}"
            )
        _say(f"prefect server: {where} (log {artifacts}/.prefect-server)")
        kind = f"PostgreSQL {version}" if version else "SQLite"
        if database == embedded_database_url(artifacts):
            kind += ", this root's run history, CLI runs included"
        _say(f"database: {describe_database(database)} ({kind})")
        if not version:  # measured: benchmarks/README.md, "Load (issue 23)"
            _say('warning: SQLite refuses some runs when dozens are triggered at once '
                 '("database is locked", HTTP 503; 1 to 3 of 43 in benchmarks/README.md, '
                 "Load): for a team, use --database postgresql+asyncpg://USER:PASSWORD@HOST"
                 ":PORT/DB")  # fmt: skip
        _say(f"mnist-pipeline commands on this root without PREFECT_API_URL use it "
             f"(recorded in {stack_record(artifacts)})")  # fmt: skip
        also = " PREFECT_API_AUTH_STRING=<the server's auth string>" if auth else ""
        _say(f"in other shells: export PREFECT_API_URL={api}{also}")

    try:
        run_stack(
            args.port, artifacts, schedule_timezone(args.timezone), args.cron,
            poll_seconds=args.poll_seconds, on_ready=ready, host=args.host,
            database=database, labeled=args.labeled,
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
