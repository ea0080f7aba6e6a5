"""Keeps secrets out of logs, error messages and tracebacks.

Every secret the config resolves is registered here; the logging filter and `redact()` replace
each registered value wherever it appears in text, so even a secret echoed back inside a remote
error body is masked.
"""

from __future__ import annotations

import logging
import threading

MASK = "***"
_MIN_SECRET_LENGTH = 4
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so that `redact` and every log record mask it from now on.

    Short values are ignored: masking every "abc" in all text would do more harm than good.
    """
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)
            _install_record_factory()


_factory_installed = False


def _install_record_factory() -> None:
    """Mask secrets when a log record is created, so that every handler (ours, a library's,
    a test's) sees the masked text, whatever logger or handler the record goes through."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _mask(record: logging.LogRecord) -> None:
    if not _secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to logging's own error report
        return
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        import traceback

        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())


def register_url_password(url: str) -> None:
    """Register the password inside a database URL (`postgresql://user:secret@host/db`)."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return
    if password:
        register_secret(str(password))


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by the mask."""
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the message, its arguments and any traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        _mask(record)
        return True
