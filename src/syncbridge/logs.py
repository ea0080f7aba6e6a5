"""Logging setup: plain lines for people, JSON lines for machines, secrets always masked.

Facts a machine filters on travel as fields, not inside the message: pass them as `extra`
(`log.info("stage %s done", name, extra={"stage": name, "counts": counts})`), and bind the
ones every line of a piece of work shares — `run_id`, `job` — with `log_context(...)`: each
JSON line logged in that context (same thread or task) carries them. Text lines stay for
people: they show `counts` as compact JSON after the message, nothing else is added.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from .redaction import RedactingFilter, redact

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_context: ContextVar[dict[str, Any]] = ContextVar("syncbridge_log_context", default={})  # noqa: B039


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside carries these fields (added to the enclosing context's)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def context_fields() -> dict[str, Any]:
    """The fields bound by the enclosing `log_context`s."""
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the bound context fields and
    any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        return redact(json.dumps(payload, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        counts = getattr(record, "counts", None)
        if counts is not None:
            text += ": " + json.dumps(counts, ensure_ascii=False, default=str)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted (it may be replaced)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once; safe to call again (replaces syncbridge's handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_syncbridge", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._syncbridge = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("alembic", "urllib3", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
