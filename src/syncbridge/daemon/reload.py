"""SIGHUP and edited files: load the setup again, and keep the old one when the new is wrong.

`Watched` fingerprints (mtime, size) the files a setup is made of — the config, each mapping,
the rules file — so that an edit is noticed by polling, without a signal. `reload` validates
the whole setup as `syncbridge validate` does; any problem keeps the running setup, and the
problems are logged (with file, key path and reason) rather than raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import Settings
from ..errors import ConfigError, SyncbridgeError
from ..redaction import redact
from ..settings import load_settings

log = logging.getLogger(__name__)
Fingerprint = dict[str, tuple[int, int] | None]


def files_of(settings: Settings) -> list[Path]:
    config = settings.config
    paths = [settings.path] if settings.path is not None else []
    for source in config.sources:
        paths += [config.resolve(stream.mapping) for stream in source.streams]
    if config.rules.file:
        paths.append(config.resolve(config.rules.file))
    return [p for p in paths if p is not None]


def fingerprint(paths: list[Path]) -> Fingerprint:
    out: Fingerprint = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            out[str(path)] = None
        else:
            out[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return out


@dataclass
class Watched:
    """The files of the setup in use and their fingerprint when it was loaded."""

    settings: Settings
    seen: Fingerprint

    @classmethod
    def of(cls, settings: Settings) -> Watched:
        return cls(settings, fingerprint(files_of(settings)))

    def changed(self) -> bool:
        return fingerprint(list(map(Path, self.seen))) != self.seen


def reload(current: Watched, why: str) -> Watched | None:
    """The new setup, or None (logged) when it does not validate: the old one stays. A failed
    reload still remembers the files' new fingerprint, so a broken file is reported once, not
    at every poll, and fixing it triggers the next reload."""
    path = current.settings.path
    if path is None:
        return None
    paths = list(map(Path, current.seen))
    try:
        settings = load_settings(path)
    except (ConfigError, SyncbridgeError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [exc]
        log.error(
            "reload (%s) failed, the previous setup stays in use: %s",
            why,
            "; ".join(redact(str(p)) for p in problems),
        )
        current.seen = fingerprint(paths)
        return None
    log.info("reloaded %s (%s)", path, why)
    return Watched.of(settings)
