"""The stack record, ``<artifacts>/.prefect/stack.json``: a running ``stack`` writes its
API URL and pid there, and the CLI's commands on that root use its server (cli.backend)."""

from __future__ import annotations

import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from cli.root_database import embedded_database_url, sqlite_lock
from core.files import atomic_write_text, pid_alive

# A stack recorded in stack.json whose /health does not answer within this is stale: a
# live server answers in milliseconds, even busy (the probe reads no database).
STACK_PROBE_SECONDS = 3.0


def stack_record(artifacts: Path) -> Path:
    """Where a running stack records itself: ``<artifacts>/.prefect/stack.json``."""
    return Path(artifacts) / ".prefect" / "stack.json"


def record_stack(artifacts: Path, api_url: str, auth: bool) -> Path:
    """Record this process as the stack serving ``api_url`` on ``artifacts`` (atomically:
    a reader sees the whole record or none); return the record's path."""
    path = stack_record(artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"api": api_url, "pid": os.getpid(), "auth": auth}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def forget_stack(artifacts: Path) -> None:
    """Remove the stack record of ``artifacts`` if this process wrote it."""
    path = stack_record(artifacts)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def running_stack(artifacts: Path) -> dict[str, Any] | None:
    """The record (``api``, ``pid``, ``auth``) of the stack running on ``artifacts``, if
    one is. A stale record (unreadable, its pid gone, or no answer at its address within
    STACK_PROBE_SECONDS) is removed, and None returned."""
    path = stack_record(artifacts)
    if not path.parent.is_dir():
        return None
    # A stack on SQLite writes its record while it holds the database's lock, before its
    # server's first answer: waiting for that lock here means a command that starts
    # beside a starting stack uses it rather than a second server on the same file.
    with sqlite_lock(embedded_database_url(artifacts), shared=True):
        try:
            text = path.read_text()
        except OSError:
            return None
    try:
        record = json.loads(text)
        api, pid = str(record["api"]), int(record["pid"])
    except (ValueError, KeyError, TypeError):
        record = None
    if record is not None and pid_alive(pid):
        from flows.deployments import DeploymentError, check_api

        with suppress(DeploymentError):  # no answer: stale
            check_api(api, timeout=STACK_PROBE_SECONDS)
            return record
    try:  # unless a new stack has replaced it meanwhile
        if path.read_text() == text:
            path.unlink()
    except OSError:
        pass
    return None
