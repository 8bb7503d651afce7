"""The server's database: the user's choice, and a PostgreSQL URL checked before it starts.

Prefect's server keeps its state in SQLite by default, which is this project's default
too (the artifacts root's own ``.prefect/prefect.db``). For more than one machine's worth
of runs it takes PostgreSQL: ``postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE``.
Left to Prefect, a database it cannot use surfaced as a uvicorn traceback in the server's
log and "prefect server exited with code 3" here, after a wait; ``check_postgres`` says
in one line what is missing and what to do, before the server starts:

* reachable, and the user, password and database right;
* PostgreSQL 14.9 or newer: the oldest that Prefect's documentation names for its server
  ("PostgreSQL database version 14.9 or higher", docs/v3/advanced/self-hosted);
* the ``pg_trgm`` extension installed in the database, or installable by this user
  (Prefect's first migration runs ``CREATE EXTENSION IF NOT EXISTS pg_trgm``);
* the user may create tables (PostgreSQL 15 grants that in schema ``public`` to the
  database's owner only).

A password never appears in a line this module writes: ``masked`` and ``mask``.
Prefect-free: it talks to PostgreSQL with asyncpg, the driver Prefect uses.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from typing import Any

from core.errors import PipelineError

POSTGRES_SCHEME = "postgresql+asyncpg"
SQLITE_SCHEME = "sqlite+aiosqlite"
# Prefect's documented floor for its server's PostgreSQL, as server_version_num.
MIN_SERVER_VERSION = 140009
MIN_VERSION_TEXT = "14.9"
CONNECT_SECONDS = 5.0
EXTENSION = "pg_trgm"
# Either name sets the server's database (the second is Prefect's legacy alias).
DATABASE_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)


class DatabaseError(PipelineError):
    """A database the stack's server cannot use; the message says what to do."""


def masked(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def mask(text: str, url: str) -> str:
    """``text`` with every appearance of ``url``'s password (as written, and decoded)
    replaced by ``***``: for messages that quote a driver's or a server's own words."""
    password = urllib.parse.urlsplit(url).password
    if not password:
        return text
    for secret in {password, urllib.parse.unquote(password)}:
        text = text.replace(secret, "***")
    return text


def configured_database(settings: Any) -> tuple[str, str] | None:
    """(URL, where it was set) of the server database the user chose in the environment
    or the profile (Prefect's ``settings``), if any."""
    for variable in DATABASE_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable], variable
    if "connection_url" in settings.server.database.model_fields_set:
        url = settings.server.database.connection_url.get_secret_value()
        return url, f"{DATABASE_VARIABLES[0]} (Prefect profile)"
    return None


def describe_database(url: str) -> str:
    """A database URL for a line of output: a SQLite file's path, else the URL without
    its password."""
    prefix = f"{SQLITE_SCHEME}:///"
    return url.removeprefix(prefix) if url.startswith(prefix) else masked(url)


def is_postgres(url: str) -> bool:
    return url.startswith(f"{POSTGRES_SCHEME}://")


def check_url(url: str) -> None:
    """Raise DatabaseError unless ``url`` is a database URL Prefect's server takes."""
    if is_postgres(url) or url.startswith(f"{SQLITE_SCHEME}://"):
        return
    raise DatabaseError(
        f"{masked(url)} is not a database URL Prefect's server takes: use "
        f"{POSTGRES_SCHEME}://USER:PASSWORD@HOST:PORT/DATABASE (or {SQLITE_SCHEME}:///FILE)"
    )


def supported(server_version_num: int) -> bool:
    """Whether a PostgreSQL of this ``server_version_num`` (e.g. 150006) serves Prefect."""
    return server_version_num >= MIN_SERVER_VERSION


def check_postgres(url: str, timeout: float = CONNECT_SECONDS) -> str:
    """Check that the PostgreSQL database at ``url`` can serve Prefect (see the module
    docstring); return its version (e.g. ``15.6``), or raise DatabaseError, one line
    without the password."""
    return asyncio.run(_check(url, timeout))


async def _check(url: str, timeout: float) -> str:
    import asyncpg

    parts = urllib.parse.urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    user = urllib.parse.unquote(parts.username or "")
    database = urllib.parse.unquote(parts.path.lstrip("/")) or user
    try:
        # asyncpg takes the same URL without SQLAlchemy's "+asyncpg".
        conn = await asyncpg.connect(url.replace(POSTGRES_SCHEME, "postgresql", 1),
                                     timeout=timeout)  # fmt: skip
    except (OSError, TimeoutError) as exc:
        raise DatabaseError(
            f"cannot reach PostgreSQL at {where} ({_reason(exc, url)}): start it (Debian: "
            "`sudo systemctl start postgresql`), or correct the host and port"
        ) from None
    except asyncpg.InvalidPasswordError:
        raise DatabaseError(
            f"PostgreSQL at {where} refused user {user!r}: password authentication failed "
            "(check the user and password)"
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise DatabaseError(
            f"PostgreSQL at {where} has no database {database!r}: create it "
            f"(`sudo -u postgres createdb -O {user} {database}`)"
        ) from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # no such role, pg_hba
        raise DatabaseError(
            f"PostgreSQL at {where} refused user {user!r}: {_reason(exc, url)}"
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise DatabaseError(f"PostgreSQL at {where}: {_reason(exc, url)}") from None
    try:
        version = await conn.fetchval("SHOW server_version")
        if not supported(int(await conn.fetchval("SHOW server_version_num"))):
            raise DatabaseError(
                f"PostgreSQL at {where} is version {version}; Prefect's server needs "
                f"{MIN_VERSION_TEXT} or newer: upgrade it, or use another server"
            )
        await _check_extension(conn, where, user, database, url)
        if not await conn.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')"):
            # PostgreSQL 15 and newer let only the database's owner create tables in its
            # schema public; Prefect's first migration creates its tables there.
            raise DatabaseError(
                f"user {user!r} may not create tables in database {database!r} at {where}: "
                f"make it the database's owner (`sudo -u postgres psql -c 'ALTER DATABASE "
                f"{database} OWNER TO {user}'`)"
            )
    finally:
        await conn.close()
    return str(version).split()[0]


async def _check_extension(conn: Any, where: str, user: str, database: str, url: str) -> None:
    """Raise DatabaseError unless pg_trgm is installed in the database, or this user can
    install it (tried in a transaction that is rolled back: nothing changes)."""
    import asyncpg

    installed = await conn.fetchrow(
        "SELECT installed_version FROM pg_available_extensions WHERE name = $1", EXTENSION
    )
    if installed is None:
        raise DatabaseError(
            f"PostgreSQL at {where} does not have the {EXTENSION} extension that Prefect "
            "needs: install PostgreSQL's contrib modules on that server (Debian: "
            "`sudo apt-get install postgresql-contrib`)"
        )
    if installed["installed_version"] is not None:
        return
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(f"CREATE EXTENSION {EXTENSION}")
    except asyncpg.InsufficientPrivilegeError:
        raise DatabaseError(
            f"user {user!r} may not create the {EXTENSION} extension that Prefect needs in "
            f"database {database!r} at {where}: create it once as a superuser "
            f"(`sudo -u postgres psql -d {database} -c 'CREATE EXTENSION {EXTENSION}'`)"
        ) from None
    except asyncpg.PostgresError as exc:
        raise DatabaseError(
            f"PostgreSQL at {where} cannot create the {EXTENSION} extension that Prefect "
            f"needs: {_reason(exc, url)}"
        ) from None
    finally:
        await transaction.rollback()


def _reason(exc: BaseException, url: str) -> str:
    """A driver's exception in words, on one line and without ``url``'s password (its
    message may quote the URL); its kind when it has none (a bare TimeoutError)."""
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    words = getattr(exc, "strerror", None) or str(exc)
    words = " ".join(words.split()) or type(exc).__name__
    return mask(words, url)
