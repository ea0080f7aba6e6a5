"""What went wrong with the cache's surroundings, said in one line with what to do about it.

A cache file that is not SQLite, a read-only folder, a full disk, a PostgreSQL database that
does not exist or a server that refuses connections are not bugs of syncbridge: they are
reported as a `FatalError` naming the file or server and the fix, instead of a driver
traceback. `store_failure` is the one translation; the engine's `handle_error` hook applies it
to every statement and connection attempt, and the command line applies it to what reaches it
past SQLAlchemy (the driver's COPY, the writer lock's files). Anything it does not recognise
is left alone, so real bugs still show their traceback. Messages never hold the URL's
password: only user, host, port, database and path are named.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from ..errors import FatalError

_MISSING_DATABASE = re.compile(r'database "(?P<name>[^"]+)" does not exist')
_MISSING_ROLE = re.compile(r'role "(?P<name>[^"]+)" does not exist')
_UNREACHABLE = (
    "connection refused",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "no such file or directory",  # a Unix socket that is not there: no local server
)


def store_failure(exc: BaseException, url: URL | str | None) -> FatalError | None:
    """A one-line FatalError for a known failure of the cache's surroundings, else None."""
    original = (exc.orig or exc) if isinstance(exc, DBAPIError) else exc
    if isinstance(original, FatalError):
        return original
    parsed = _parse(url)
    if parsed is not None and parsed.get_backend_name() == "postgresql":
        return _postgres_failure(original, parsed)
    return _sqlite_failure(original, _sqlite_path(parsed))


def _parse(url: URL | str | None) -> URL | None:
    if url is None or isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except Exception:
        return None


def _sqlite_path(url: URL | None) -> Path | None:
    database = url.database if url is not None else None
    return Path(database).absolute() if database and database != ":memory:" else None


def _sqlite_failure(exc: BaseException, path: Path | None) -> FatalError | None:
    text = str(exc).lower()
    where = str(path) if path else "the cache"
    if isinstance(exc, OSError):
        return _os_failure(exc, path)
    if "file is not a database" in text or "not a database" in text:
        return FatalError(
            f"{where} is not a SQLite database: point store.url at a syncbridge cache "
            "or remove the file"
        )
    if "database or disk is full" in text or ("disk i/o error" in text and _disk_full(path)):
        return _full(where)
    if "readonly database" in text or "read-only" in text:
        return _read_only(path)
    if "unable to open database file" in text:
        if path is not None and not path.parent.is_dir():
            return FatalError(
                f"the folder {path.parent} does not exist: create it, or point store.url "
                "at an existing folder"
            )
        if path is not None and not _writable(path):
            return _read_only(path)
        return FatalError(f"cannot open the SQLite cache {where}: check store.url")
    return None


def _os_failure(exc: OSError, path: Path | None) -> FatalError | None:
    """A full disk anywhere; a permission or read-only error only on the cache's own files
    (the cache, its -wal/-shm, its .lock), never on a source file that happens to be locked."""
    filename = Path(exc.filename).absolute() if isinstance(exc.filename, str) else None
    if exc.errno == errno.ENOSPC:
        return _full(str(filename or path or "the cache"))
    ours = path is not None and filename is not None and str(filename).startswith(str(path))
    if ours and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return _read_only(path)
    return None


def _full(where: str) -> FatalError:
    return FatalError(
        f"the disk holding {where} is full: free some space (or point store.url at a larger "
        "disk) and run again; pages committed so far are kept"
    )


def _read_only(path: Path | None) -> FatalError:
    if path is None:
        return FatalError("the cache is read-only: syncbridge needs to write it")
    folder_ok = os.access(path.parent, os.W_OK)
    target, kind = (path, "file") if folder_ok else (path.parent, "folder")
    return FatalError(
        f"the {kind} {target} is read-only: syncbridge writes the cache there (with its "
        "-wal, -shm and .lock files beside it); make it writable or point store.url elsewhere"
    )


def _writable(path: Path) -> bool:
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent, os.W_OK)


def _disk_full(path: Path | None) -> bool:
    if path is None or not path.parent.is_dir():
        return False
    stats = os.statvfs(path.parent) if hasattr(os, "statvfs") else None
    return stats is not None and stats.f_bavail == 0


def _postgres_failure(exc: BaseException, url: URL) -> FatalError | None:
    text = str(exc)
    lower = text.lower()
    server = f"{url.host or 'localhost'}:{url.port or 5432}"
    if match := _MISSING_DATABASE.search(text):
        name = match["name"]
        user = f" -U {url.username}" if url.username else ""
        return FatalError(
            f'PostgreSQL database "{name}" does not exist on {server}: create it '
            f"(createdb -h {url.host or 'localhost'} -p {url.port or 5432}{user} {name}) "
            "or fix store.url"
        )
    if match := _MISSING_ROLE.search(text):
        return FatalError(
            f'PostgreSQL on {server} has no role "{match["name"]}": fix the user in store.url '
            "or create the role"
        )
    if "password authentication failed" in lower or "no password supplied" in lower:
        return FatalError(
            f"PostgreSQL on {server} refused the login of user {url.username!r}: check the "
            "user and password in store.url"
        )
    if any(reason in lower for reason in _UNREACHABLE):
        reason = next(r for r in _UNREACHABLE if r in lower)
        return FatalError(
            f"cannot connect to PostgreSQL at {server} ({reason}): is the server running and "
            "accepting connections there? check store.url"
        )
    if "no space left on device" in lower or "could not extend file" in lower:
        return _full(f"PostgreSQL's data on {server}")
    return None
