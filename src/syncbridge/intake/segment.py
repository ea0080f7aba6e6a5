"""Segment's HTTP tracking API, as a receiver: what a message must hold, and how it is stored.

The rules are Segment's own (its HTTP API and spec pages), so that Segment's and RudderStack's
libraries, pointed at syncbridge, work unchanged:

- a message has a `type` (`track`, `identify`, `page`, `screen`, `group`, `alias`), a `userId`
  or an `anonymousId` (a string or a number), and a `track` has an `event` name;
- at most 32 KB a message, 500 KB a request, 2,500 messages a batch; otherwise 400;
- `messageId` identifies a message: the same id twice is stored once (a message without one
  gets an id from its content, so that a client's exact retry is stored once too);
- the server stamps `receivedAt` and corrects `timestamp` for the sender's clock:
  `timestamp = receivedAt - (sentAt - timestamp)`, keeping the sender's as `originalTimestamp`;
- a batch's top-level `context` and `integrations` are merged into each of its messages.

A message that breaks a rule is refused with the field it concerns (`Invalid`), and the whole
request with it: a client that gets 200 may forget what it sent.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

TYPES = ("track", "identify", "page", "screen", "group", "alias")
SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}
"""analytics.js (analytics-next) posts to /v1/t, /v1/i, … and batches to /v1/b."""
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH = 2500
MAX_MESSAGE_ID = 100
TOO_LARGE = f"request larger than {MAX_REQUEST_BYTES} bytes (500 KB a request, 32 KB a message)"


class Invalid(ValueError):
    """A request Segment would answer with 400; `field` names what is wrong, as a JSON path."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "message": str(self)}
        if self.field is not None:
            out["field"] = self.field
        return out


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object (analytics.js sends it as text/plain: the type is not checked)."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise Invalid(TOO_LARGE)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


def messages_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The messages of a request to `/v1/<kind>` (`batch` or one of TYPES), each checked, with
    the batch's shared `context` and `integrations` merged in."""
    if kind != "batch":
        message = dict(body)
        message.setdefault("type", kind)
        if message["type"] != kind:
            raise Invalid(f"type {message['type']!r} sent to /v1/{kind}", "type")
        _check(message, "", len(orjson.dumps(body)))
        return [message]
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise Invalid("a batch needs a 'batch' array of messages", "batch")
    if len(batch) > MAX_BATCH:
        raise Invalid(f"{len(batch)} messages in one batch; at most {MAX_BATCH}", "batch")
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    out = []
    for index, item in enumerate(batch):
        where = f"batch[{index}]."
        if not isinstance(item, dict):
            raise Invalid("a message must be a JSON object", f"batch[{index}]")
        message = dict(item)
        for key, value in shared.items():
            message[key] = {**value, **(message.get(key) or {})}
        _check(message, where, len(orjson.dumps(item)))
        out.append(message)
    return out


def _check(message: dict[str, Any], where: str, size: int) -> None:
    if size > MAX_MESSAGE_BYTES:
        raise Invalid(
            f"message of {size} bytes; at most {MAX_MESSAGE_BYTES}", where.rstrip(".") or None
        )
    kind = message.get("type")
    if kind not in TYPES:
        raise Invalid(f"type must be one of {', '.join(TYPES)}, not {kind!r}", f"{where}type")
    if not any(_present(message.get(k)) for k in ("userId", "anonymousId")):
        raise Invalid("a message needs a userId or an anonymousId", f"{where}userId")
    for key in ("userId", "anonymousId"):
        value = message.get(key)
        if value is not None and not isinstance(value, str | int):
            raise Invalid(f"{key} must be a string", f"{where}{key}")
    if kind == "track" and not (isinstance(message.get("event"), str) and message["event"]):
        raise Invalid("a track message needs an event name", f"{where}event")
    for key in ("properties", "traits", "context", "integrations"):
        if message.get(key) is not None and not isinstance(message[key], dict):
            raise Invalid(f"{key} must be an object", f"{where}{key}")
    message_id = message.get("messageId")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise Invalid("messageId must be a non-empty string", f"{where}messageId")
    if isinstance(message_id, str) and len(message_id) > MAX_MESSAGE_ID:
        raise Invalid(f"messageId longer than {MAX_MESSAGE_ID} characters", f"{where}messageId")
    for key in ("timestamp", "sentAt", "originalTimestamp"):
        value = message.get(key)
        if value is not None and _instant(value) is None:
            raise Invalid(f"{key} is not an ISO-8601 date-time: {value!r}", f"{where}{key}")


def stamped(message: dict[str, Any], received: datetime, sent_at: Any = None) -> dict[str, Any]:
    """The message as stored: ids as strings, `messageId` always set, `receivedAt` stamped and
    `timestamp` corrected for the sender's clock (`sentAt` of the message or its batch)."""
    out = dict(message)
    for key in ("userId", "anonymousId"):
        if isinstance(out.get(key), int):
            out[key] = str(out[key])
    if not out.get("messageId"):
        digest = hashlib.sha256(orjson.dumps(message, option=orjson.OPT_SORT_KEYS)).hexdigest()
        out["messageId"] = f"content-{digest[:40]}"
    out["receivedAt"] = _iso(received)
    sent = _instant(out.get("sentAt") or sent_at)
    when = _instant(out.get("timestamp") or out.get("originalTimestamp"))
    if when is None:
        out["timestamp"] = _iso(received)
    elif sent is not None:
        out.setdefault("originalTimestamp", out.get("timestamp"))
        out["timestamp"] = _iso(received - (sent - when))
    return out


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
