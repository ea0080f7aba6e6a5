"""The daemon's HTTP server: health, readiness, Prometheus metrics and the admin endpoints.

    GET  /                        the status page (`page.py`; the admin token when one is set)
    GET  /healthz                 200 while the process serves requests
    GET  /readyz                  200, or 503 with the reasons as JSON (cache unreachable,
                                  a consumer failing for longer than `[daemon] ready_failing_s`)
    GET  /metrics                 the default Prometheus registry (`syncbridge_*`)
    POST /v1/admin/run/{source}   pull a source now (202), Bearer `[daemon] admin_token`
    GET  /v1/admin/status         the jobs as this agent sees them, same token

Without an admin token configured the admin routes do not exist (404). The token is compared
in constant time. The app is built from a small `DaemonView` and lists of routes, so the next
stages (event intake, webhooks) mount their own routes beside these (`build_app(extra=...)`).
Uvicorn serves it from a thread of its own on a socket bound before the daemon starts work,
so a port already in use stops the daemon at once with a clear message.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ..errors import FatalError

log = logging.getLogger(__name__)


class DaemonView(Protocol):
    """What the endpoints read from and ask of the running daemon."""

    def readiness(self) -> dict[str, Any]:
        """{"ready": bool, "reasons": [...]}"""
        ...

    def status(self) -> dict[str, Any]: ...

    def run_source(self, source: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of asking for a pull of `source` now."""
        ...


class IdleView:
    """The view of a server that runs no jobs (the intake served alone: the demo, a bench, a
    test): always ready, nothing to show, no source to pull."""

    def readiness(self) -> dict[str, Any]:
        return {"ready": True, "reasons": []}

    def status(self) -> dict[str, Any]:
        return {}

    def run_source(self, source: str) -> tuple[int, dict[str, Any]]:
        return 404, {"error": "no source is pulled here"}


def health_routes(view: DaemonView) -> list[BaseRoute]:
    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    def readyz(request: Request) -> Response:
        state = view.readiness()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def admin_routes(view: DaemonView, token: str | None) -> list[BaseRoute]:
    """The admin endpoints under /v1/admin, or none without a token (they are then off)."""
    if not token:
        return []
    expected = f"Bearer {token}".encode()

    def authorised(request: Request) -> Response | None:
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return JSONResponse(
            {"error": "this endpoint needs Authorization: Bearer <[daemon] admin_token>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="syncbridge"'},
        )

    def run_source(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        status, body = view.run_source(request.path_params["source"])
        return JSONResponse(body, status_code=status)

    def status(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        return JSONResponse(view.status())

    return [
        Mount(
            "/v1/admin",
            routes=[
                Route("/run/{source}", run_source, methods=["POST"]),
                Route("/status", status, methods=["GET"]),
            ],
        )
    ]


def build_app(
    view: DaemonView, admin_token: str | None, extra: Sequence[BaseRoute] = ()
) -> Starlette:
    routes = [*health_routes(view), *admin_routes(view, admin_token), *extra]

    def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", status_code=404)

    return Starlette(routes=routes, exception_handlers={404: not_found})


class HttpServer:
    """Uvicorn serving `app` on `address` ("host:port"; port 0: any free one) in a thread."""

    def __init__(self, app: Starlette, address: str) -> None:
        import uvicorn

        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, int(port)))
        except OSError as exc:
            self.sock.close()
            raise FatalError(
                f"[daemon] http = {address!r}: cannot listen there ({exc.strerror or exc}); "
                'choose another port, or set http = "" to run without the HTTP server'
            ) from None
        self.sock.listen(128)
        config = uvicorn.Config(
            app, log_config=None, lifespan="off", access_log=False, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="http"
        )

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info("HTTP server on http://%s (/healthz, /readyz, /metrics)", self.address)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
