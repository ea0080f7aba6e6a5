"""The loopback HTTP server the API fakes share: threads, real sockets, scripted resets.

A fake implements `_handle(method, target, raw_body, headers)` and returns a reply with
`status`, `body`, `content_type`, `headers` and `reset` (drop the connection instead).
"""

from __future__ import annotations

import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Reply(Protocol):
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    reset: bool


class Handles(Protocol):
    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Reply: ...


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (a free port) that hands requests to a fake."""

    request_queue_size = 64

    def __init__(self, fake: Handles) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = self.server.fake._handle(self.command, self.path, raw, self.headers)
        if reply.reset:  # SO_LINGER 0 makes close() send RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
