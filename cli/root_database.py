"""The artifacts root's SQLite database, which a command's embedded server and a stack on
SQLite both use (so one root keeps one run history), and the lock a server migrates under."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def embedded_database_url(artifacts: Path) -> str:
    """The root's SQLite database, ``<artifacts>/.prefect/prefect.db``: the embedded
    server's, and a stack's unless it is given another."""
    return f"sqlite+aiosqlite:///{Path(artifacts) / '.prefect' / 'prefect.db'}"


def start_embedded_server() -> None:
    """Start Prefect's embedded server now if it is the first start on its SQLite database
    (for this Prefect version), holding a lock on that database until it has answered.

    The server migrates its database as it starts. Two commands starting together on a
    fresh artifacts root migrated the same file at once, and one of them printed ~110
    lines of uvicorn traceback (NoSuchTableError). With the lock (``prefect.db.lock``
    beside the database, fcntl) they take turns. The lock file then names the Prefect
    version that migrated the database; after that, the server starts as Prefect starts
    it, at the first flow run's first API call, so that a usage error found before any
    flow runs costs no server start (measured: `train --learning-rate -1` 3 s, not 10 s).
    """
    from prefect import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings().server
    if not settings.ephemeral.enabled:
        return
    url = settings.database.connection_url.get_secret_value()
    marker = _migrated_marker()
    with sqlite_lock(url) as (database, lock):
        if lock is None or (database.exists() and lock.read() == marker):
            return
        with get_client(sync_client=True) as client:
            client.hello()  # starts the server (a process-wide singleton) and waits for it
        lock.seek(0)
        lock.truncate()
        lock.write(marker)


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the lock of the SQLite database ``url`` while a server starts on it (and
    migrates it), then mark it migrated by this Prefect version: ``stack`` does this, as
    ``start_embedded_server`` does for a command's own server. Nothing for PostgreSQL,
    which Prefect's migrations lock themselves."""
    with sqlite_lock(url) as (_, lock):
        yield
        if lock is not None:
            lock.seek(0)
            lock.truncate()
            lock.write(_migrated_marker())
            lock.flush()


def _migrated_marker() -> str:
    import prefect

    return f"migrated by prefect {prefect.__version__}\n"


@contextmanager
def sqlite_lock(url: str, shared: bool = False) -> Iterator[tuple[Path | None, Any]]:
    """(database file, its lock file opened at the start), locked (exclusively, unless
    ``shared``), for a SQLite ``url``; (None, None) for any other database, or without
    fcntl (Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    prefix = "sqlite+aiosqlite:///"
    if fcntl is None or not url.startswith(prefix) or ":memory:" in url:
        yield None, None
        return
    database = Path(url.removeprefix(prefix))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a+") as lock:
        # Released when closed, or when this process dies.
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        lock.seek(0)
        yield database, lock
