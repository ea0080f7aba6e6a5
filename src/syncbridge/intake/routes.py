"""The intake's HTTP endpoints, mounted on the daemon's server beside /healthz and /metrics.

    POST /v1/track | identify | page | screen | group | alias    one message
    POST /v1/batch                                              {"batch": [...]}
    POST /v1/t | i | p | s | g | a | b                          the same, as analytics.js names them

Authenticated as Segment's and RudderStack's libraries send it: HTTP Basic with a write key
as the user name (empty password), or `writeKey` in the body; keys are compared in constant
time. Bodies may be gzip-compressed (`Content-Encoding: gzip`, as analytics-python's
`gzip=True` sends them). Answers: 200 `{"success": true}` once every event of the request is
committed to the cache; 400 with the field at fault; 401 without a valid key; 503 while the
cache cannot be written (the client retries). Browsers may post from any origin (CORS): a
write key is public by design, as Segment's is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import metrics
from .commit import GroupCommit
from .segment import (
    MAX_REQUEST_BYTES,
    SHORT,
    TOO_LARGE,
    TYPES,
    Invalid,
    messages_of,
    parse_body,
    stamped,
)

log = logging.getLogger(__name__)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
    "Access-Control-Max-Age": "86400",
}
KINDS = {**{t: t for t in TYPES}, **SHORT, "batch": "batch", "b": "batch"}


def intake_routes(write_keys: Sequence[str], commit: GroupCommit) -> list[BaseRoute]:
    keys = [k.encode() for k in write_keys]

    def known(key: Any) -> bool:
        given = key.encode() if isinstance(key, str) else b""
        found = False
        for expected in keys:  # every key compared, so the time tells nothing
            found |= hmac.compare_digest(given, expected)
        return found

    async def receive(request: Request) -> Response:
        kind = KINDS.get(request.path_params["kind"])
        if kind is None:
            return JSONResponse({"success": False, "message": "not found"}, 404, headers=CORS)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        try:
            raw = await _body(request)
            body = parse_body(raw)
            if not known(_basic_user(request) or body.get("writeKey")):
                metrics.intake_refused("auth")
                return JSONResponse(
                    {"success": False, "message": "a valid write key is needed (HTTP Basic user "
                     "name, or writeKey in the body)"}, 401,
                    headers={**CORS, "WWW-Authenticate": 'Basic realm="syncbridge"'},
                )  # fmt: skip
            messages = messages_of(body, kind)
        except Invalid as exc:
            metrics.intake_refused("invalid")
            return JSONResponse(exc.body(), 400, headers=CORS)
        received = datetime.now(UTC)
        records = [stamped(_without_key(m), received, body.get("sentAt")) for m in messages]
        try:
            await asyncio.wrap_future(commit.submit(records))
        except Exception:  # logged by the writer; the client keeps the events and retries
            metrics.intake_refused("store")
            return JSONResponse(
                {"success": False, "message": "the cache cannot be written now; retry"}, 503,
                headers={**CORS, "Retry-After": "5"},
            )  # fmt: skip
        metrics.intake_accepted(len(records))
        return JSONResponse({"success": True}, headers=CORS)

    return [Route("/v1/{kind}", receive, methods=["POST", "OPTIONS"])]


async def _body(request: Request) -> bytes:
    """The body, decompressed; refused past the batch limit without reading further."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise Invalid(TOO_LARGE)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(raw, MAX_REQUEST_BYTES + 1)  # more: refused as too large
        except zlib.error:
            raise Invalid("Content-Encoding is gzip but the body is not gzip data") from None
    return raw


def _basic_user(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, _password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user


def _without_key(message: dict[str, Any]) -> dict[str, Any]:
    """A write key is a credential: it is never stored with the event."""
    return {k: v for k, v in message.items() if k != "writeKey"}
