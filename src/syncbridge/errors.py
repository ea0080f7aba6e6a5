"""The errors syncbridge raises, grouped by what the caller should do next.

SyncbridgeError          base of everything below
├── ConfigError          fix the config or mapping file; carries every problem found
├── FatalError           stop the run and say why (remote refused, store unusable)
│   └── AuthError        credentials rejected; the message never holds the secret
├── RetriableError       transient: back off and try again
│   └── CacheBusyError   another syncbridge process is writing the cache: wait, or run later
└── RecordError          one record is bad: store it as a per-record error, skip the value
"""

from __future__ import annotations

from dataclasses import dataclass


class SyncbridgeError(Exception):
    """Base class of syncbridge's own errors."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where (file and key path) and why."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class ConfigError(SyncbridgeError):
    """The configuration or a mapping file is invalid; `problems` lists every fault found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FatalError(SyncbridgeError):
    """The run cannot go on; the message says why and what to do."""


class AuthError(FatalError):
    """A remote service rejected the credentials."""


class RetriableError(SyncbridgeError):
    """A transient failure; `retry_after` (seconds) is the server's hint when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CacheBusyError(RetriableError):
    """Another process holds the cache's writer lock; `holder` describes it when known.

    The command line exits with `EXIT_BUSY` (75, EX_TEMPFAIL from sysexits.h) so that a
    scheduler can tell "try again later" apart from a failure.
    """

    EXIT_BUSY = 75
    EXIT_DAEMON = 2
    """The holder is a daemon, which keeps the cache for its lifetime: waiting will not help."""

    def __init__(self, message: str, holder: object | None = None) -> None:
        super().__init__(message)
        self.holder = holder

    @property
    def by_daemon(self) -> bool:
        return str(getattr(self.holder, "command", None) or "").startswith("daemon")

    @property
    def exit_code(self) -> int:
        return self.EXIT_DAEMON if self.by_daemon else self.EXIT_BUSY


class RecordError(SyncbridgeError):
    """A value of one record cannot be used; the rest of the record still loads."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(f"{field}: {message} (value {value!r})")
        self.field = field
        self.value = value
        self.reason = message
