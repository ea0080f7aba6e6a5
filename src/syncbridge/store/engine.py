"""Engine setup for the profile cache: SQLite (WAL) by default, PostgreSQL via psycopg 3.

`open_engine` applies pending migrations, so every command starts on the current schema; it
takes the writer lock for them unless the command holds it already. Every engine translates
failures of its surroundings (not a SQLite file, read-only folder, full disk, no such database,
server unreachable) into one-line `FatalError`s (`failures.py`).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.pool import NullPool

from ..errors import FatalError
from ..redaction import register_url_password
from .failures import store_failure
from .rawsql import dumps

log = logging.getLogger(__name__)


def _json_dumps(value: Any) -> str:
    return dumps(value)


MIGRATION_WAIT_S = 60.0
"""How long opening the cache waits for another process's writer lock to apply migrations."""


def create_store_engine(url: str, echo: bool = False, dedicated: bool = False) -> Engine:
    """An engine with the pragmas and pool settings syncbridge relies on (no migrations).

    `dedicated`: one unpooled connection at a time (the writer lock's own PostgreSQL session).
    """
    register_url_password(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise FatalError(f"store.url is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url, echo=echo, json_serializer=_json_dumps, json_deserializer=orjson.loads
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _translate_failure)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        pool: dict[str, Any] = {"poolclass": NullPool} if dedicated else {"pool_size": 5}
        engine = create_engine(
            parsed,
            echo=echo,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_pre_ping=True,
            **pool,
        )
        event.listen(engine, "handle_error", _translate_failure)
        return engine
    raise FatalError(f"unsupported database {parsed.get_backend_name()!r} (sqlite or postgresql)")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def _translate_failure(context: ExceptionContext) -> None:
    """Raise a one-line FatalError instead of a driver error the user can fix (full disk …).

    A failed pre-ping is left alone: the pool reconnects on its own then."""
    if context.is_pre_ping or context.engine is None:
        return
    failure = store_failure(context.original_exception, context.engine.url)
    if failure is not None:
        raise failure from None


def open_engine(url: str, echo: bool = False, migrate: bool = True) -> Engine:
    """Create the engine and bring the schema to the newest migration.

    Migrations write, so they run under the writer lock: the command's own when it holds one,
    else taken here (waiting up to MIGRATION_WAIT_S for a running writer). A read-only command
    on a current schema takes no lock.
    """
    engine = create_store_engine(url, echo)
    if migrate:
        migrate_locked(engine, url, "migrate (on open)", MIGRATION_WAIT_S)
    return engine


def migrate_locked(engine: Engine, url: str, command: str, wait: float) -> bool:
    """Apply pending migrations under the writer lock; True when something was applied."""
    from .migrate import current_revision, head_revision, upgrade
    from .writer_lock import held_here, writer_lock

    if held_here(url):
        return upgrade(engine)
    if current_revision(engine) == head_revision(engine):
        return False
    with writer_lock(url, command, wait):
        return upgrade(engine)  # checks the revision again: a writer may have just migrated
