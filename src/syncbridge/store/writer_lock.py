"""One writer at a time: the lock every command that writes the cache holds while it writes.

Two writers on one cache interleave their transactions (SQLite: "database is locked"; both:
duplicate keys, a migration run twice). Readers need no lock (SQLite's WAL and PostgreSQL's
MVCC let them read during a run), so only writing commands take it:

- SQLite: an OS file lock (`filelock`, i.e. `flock`/`LockFileEx`) on `<cache>.lock` beside the
  cache file. The OS drops it when the holder dies, even by SIGKILL, so a crash never leaves a
  lock behind. Who holds it is written to `<cache>.lock.json` (a separate file, because a
  waiting process opens the lock file itself) and removed on release; a record left by a killed
  process is recognised as stale because its pid is no longer running.
- PostgreSQL: a session advisory lock (`pg_try_advisory_lock(WRITER_KEY)`) on a connection of
  its own, held for the run. The server drops it when that connection ends. The connection's
  `application_name` says who holds it, and `pg_locks` + `pg_stat_activity` read it back.

The daemon holds the lock for its whole life (`shared=True`): on SQLite that is the same
exclusive lock, so a second daemon or a `run --once` is refused; on PostgreSQL it is the
advisory lock's shared mode, which every agent sharing the cache holds at once (they divide
the work by job leases, `daemon/leases.py`), while one-off writers, which take it exclusively,
are refused as long as any agent runs.

Within one process the lock is re-entrant per cache (the migrations run when a command opens
the cache take it only when the command does not already hold it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url

from ..errors import CacheBusyError, FatalError

log = logging.getLogger(__name__)

WRITER_KEY = 0x53594E43  # "SYNC": the advisory-lock key of the writer, per database
_APP_NAME = re.compile(r"^syncbridge (?P<command>.*?) pid=(?P<pid>\d+)(?: host=(?P<host>\S*))?")
_POLL_S = 0.5
_RECORD_GRACE_S = 1.0
"""How long a loser waits for the winner's holder record (written just after it won)."""
_held: dict[str, int] = {}
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds the writer lock: process id, host, command and since when (UTC)."""

    pid: int | None
    host: str | None
    command: str | None
    since: datetime | None

    def describe(self) -> str:
        parts = [f"pid {self.pid}" + (f" on {self.host}" if self.host else "")]
        if self.command:
            parts.append(f"`{self.command}`")
        if self.since is not None:
            parts.append(f"since {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
        return ", ".join(parts)


def _me(command: str) -> Holder:
    return Holder(os.getpid(), socket.gethostname(), command, datetime.now(UTC))


def _sqlite_lock_path(url: URL) -> Path | None:
    """`<cache>.lock` beside a SQLite file; None for an in-memory database (no one to share)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(f"{Path(database).absolute()}.lock")


def _identity(url: URL) -> str:
    path = _sqlite_lock_path(url) if url.get_backend_name() == "sqlite" else None
    if path is not None:
        return str(path)
    return url.render_as_string(hide_password=True)


def held_here(url: URL | str) -> bool:
    """True when this process already holds the writer lock of this cache."""
    with _held_guard:
        return _held.get(_identity(make_url(url)), 0) > 0


@contextmanager
def writer_lock(
    url: URL | str, command: str, wait: float = 0.0, shared: bool = False
) -> Iterator[None]:
    """Hold the cache's writer lock for the block, waiting up to `wait` seconds for it.

    Raises CacheBusyError (with the holder) when another process still holds it after `wait`.
    Nested use in one process does not wait on itself. `shared`: the daemons' mode (above).
    """
    parsed = make_url(url)
    key = _identity(parsed)
    with _held_guard:
        nested = _held.get(key, 0) > 0
        _held[key] = _held.get(key, 0) + 1
    try:
        if nested:
            yield
        elif parsed.get_backend_name() == "postgresql":
            with _postgres_lock(parsed, command, wait, shared):
                yield
        else:
            path = _sqlite_lock_path(parsed)
            if path is None:
                yield
            else:
                with _sqlite_lock(path, command, wait):
                    yield
    finally:
        with _held_guard:
            _held[key] -= 1


def _busy(holder: Holder | None, where: str) -> CacheBusyError:
    who = f"({holder.describe()}) " if holder is not None and holder.pid else ""
    message = f"another syncbridge process {who}holds the writer lock of {where}"
    return CacheBusyError(message, holder)


def _waiting(holder: Holder | None, where: str, wait: float) -> None:
    who = holder.describe() if holder is not None and holder.pid else "another process"
    log.info("waiting up to %gs for the writer lock of %s, held by %s", wait, where, who)


# --- SQLite: an OS lock on <cache>.lock, the holder in <cache>.lock.json ---


@contextmanager
def _sqlite_lock(path: Path, command: str, wait: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    if not path.parent.is_dir():  # SQLite would not create it either: a typo in store.url
        raise FatalError(
            f"the folder {path.parent} does not exist: create it, or point store.url at an "
            "existing folder"
        )
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if wait <= 0:
            raise _busy(_recorded_holder(path), str(path)) from None
        _waiting(_recorded_holder(path), str(path), wait)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise _busy(_recorded_holder(path), str(path)) from None
    info = _info_path(path)
    try:
        _write_holder(info, _me(command))
        yield
    finally:
        with suppress(OSError):
            info.unlink()
        lock.release()


def _info_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".json")


def _write_holder(info: Path, holder: Holder) -> None:
    """Written whole under a temporary name, then renamed: a reader never sees half of it."""
    record = {
        "pid": holder.pid,
        "host": holder.host,
        "command": holder.command,
        "since": holder.since.isoformat() if holder.since else None,
    }
    temporary = info.with_name(f"{info.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record), encoding="utf-8")
    os.replace(temporary, info)


def _recorded_holder(lock_path: Path) -> Holder | None:
    """The holder of a lock we just failed to take; it may not have written its record yet."""
    deadline = time.monotonic() + _RECORD_GRACE_S
    while (holder := sqlite_holder(lock_path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return holder


def sqlite_holder(lock_path: Path) -> Holder | None:
    """The recorded holder, or None when there is none or its process is gone (a stale record
    left by a killed run: its OS lock went with it)."""
    try:
        record = json.loads(_info_path(lock_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    since = record.get("since")
    holder = Holder(
        pid=record.get("pid") if isinstance(record.get("pid"), int) else None,
        host=record.get("host"),
        command=record.get("command"),
        since=datetime.fromisoformat(since) if isinstance(since, str) else None,
    )
    if holder.pid is not None and holder.host == socket.gethostname() and not _alive(holder.pid):
        return None
    return holder


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check; the OS lock itself is still authoritative
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL: a session advisory lock on a connection of its own ---


@contextmanager
def _postgres_lock(url: URL, command: str, wait: float, shared: bool = False) -> Iterator[None]:
    from .engine import create_store_engine

    me = _me(command)
    name = f"syncbridge {command} pid={me.pid} host={me.host}"[:63]  # NAMEDATALEN - 1
    own = url.update_query_dict({"application_name": name})  # named before it holds the lock
    engine = create_store_engine(own.render_as_string(hide_password=False), dedicated=True)
    where = f"database {url.database} on {url.host or 'localhost'}"
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # the successful try is this connection's last statement until the release, so
            # pg_stat_activity.query_start says since when it holds the lock
            _acquire_advisory(conn, where, wait, shared)
            try:
                yield
            finally:
                unlock = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
                conn.execute(text(f"SELECT {unlock}(:k)"), {"k": WRITER_KEY})
    finally:
        engine.dispose()


def _acquire_advisory(conn: Connection, where: str, wait: float, shared: bool = False) -> None:
    deadline = time.monotonic() + max(wait, 0.0)
    announced = False
    take = text(f"SELECT pg_try_advisory_lock{'_shared' if shared else ''}(:k)")
    while not conn.execute(take, {"k": WRITER_KEY}).scalar():
        if time.monotonic() >= deadline:
            raise _busy(postgres_holder(conn), where)
        if not announced:
            _waiting(postgres_holder(conn), where, wait)
            announced = True
        time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))


_HOLDER_SQL = text(
    """
    SELECT a.pid, a.application_name, a.query_start, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1
      AND l.objid = :k
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    LIMIT 1
    """
)


def postgres_holder(conn: Connection) -> Holder | None:
    row = conn.execute(_HOLDER_SQL, {"k": WRITER_KEY}).first()
    if row is None:
        return None
    match = _APP_NAME.match(row.application_name or "")
    if match is None:  # someone took the key by hand: say which server process
        return Holder(row.pid, None, row.application_name or None, row.backend_start)
    return Holder(int(match["pid"]), match["host"], match["command"], row.query_start)


def current_holder(engine: Engine) -> Holder | None:
    """Who holds the writer lock of the cache behind `engine` now (None: no one)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return postgres_holder(conn)
    path = _sqlite_lock_path(engine.url)
    return sqlite_holder(path) if path is not None else None
