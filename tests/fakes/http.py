"""The loopback HTTP server the API fakes share: threads, real sockets, scripted resets.

A fake implements `_handle(method, target, raw_body, headers)` and returns a reply with
`status`, `body`, `content_type`, `headers` and `reset` (drop the connection instead).
"""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self, TypeVar


class Reply(Protocol):
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    reset: bool


class Scripted(Protocol):
    """A scripted failure: how many more requests it hits, and which paths (None: any)."""

    remaining: int
    path_contains: str | None


FaultT = TypeVar("FaultT", bound=Scripted)


def take_fault(faults: list[FaultT], path: str) -> FaultT | None:
    """The first scripted fault for this path, counted down and dropped once used up."""
    for fault in faults:
        if fault.path_contains is None or fault.path_contains in path:
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.remove(fault)
            return fault
    return None


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


class LoopbackFake:
    """Lifecycle of a fake served by a LoopbackServer: start/stop, `with`, and its port.

    Subclasses implement `_handle` and may override `_on_start(port)` to learn the port.
    """

    _server: LoopbackServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        server = self._server = LoopbackServer(self)  # type: ignore[arg-type]
        self._on_start(server.server_address[1])
        poll = {"poll_interval": 0.01}  # stop() waits for the next poll, so poll often
        self._thread = threading.Thread(target=server.serve_forever, kwargs=poll, daemon=True)
        self._thread.start()
        return self

    def _on_start(self, port: int) -> None:
        """Called with the bound port before requests are served."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST `body` to a server under test; (status, the JSON answer or None), error statuses
    included (the tests of the intake and of the webhooks read both)."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
