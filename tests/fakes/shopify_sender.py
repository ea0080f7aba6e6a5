"""How Shopify delivers webhooks, for the fake shop: signed POSTs from a background thread.

Shopify sends each subscribed event to the subscription's URL asynchronously (the change is
committed first; the delivery follows), as a REST-shaped JSON body with these headers:
`X-Shopify-Topic`, `X-Shopify-Hmac-Sha256` (base64 of the HMAC-SHA256 of the exact raw body
under the app's client secret), `X-Shopify-Shop-Domain`, `X-Shopify-API-Version`,
`X-Shopify-Webhook-Id` (one per delivery: the same on every retry of it),
`X-Shopify-Event-Id` (one per event, whatever the subscription) and
`X-Shopify-Triggered-At`. It wants a 2xx within 5 s (1 s to connect); anything else, a timeout
or a refused connection is retried with the original body and the same webhook id, 8 times
over about 4 hours (exponential backoff), then given up. Order is not promised, and a
delivery may arrive twice (at-least-once).

`WebhookSender` does that with one thread, so deliveries go out in the order they fall due;
`Subscription.retry_delays` (tests: tiny) replace Shopify's schedule, `timeout_s` its 5 s.
Every attempt is kept in `WebhookSender.attempts` for tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import http.client
import itertools
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

API_VERSION = "2025-10"
RETRY_DELAYS: tuple[float, ...] = (60, 120, 300, 600, 1200, 2400, 3600, 6000)
"""Shopify's 8 retries over about 4 hours (the exact schedule is not documented)."""
TIMEOUT_S = 5.0


def sign(body: bytes, secret: str) -> str:
    """Shopify's signature of a delivery: base64 of HMAC-SHA256(raw body, client secret)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(
    topic: str,
    body: bytes,
    secret: str,
    shop: str,
    webhook_id: str,
    event_id: str,
    triggered_at: str,
    api_version: str = API_VERSION,
) -> dict[str, str]:
    """Every header Shopify sends with a delivery of `body`."""
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": api_version,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Triggered-At": triggered_at,
    }


@dataclass(frozen=True)
class Subscription:
    """Where a shop's webhooks go: an address, the secret they are signed with, the topics."""

    url: str
    secret: str
    topics: frozenset[str]
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    timeout_s: float = TIMEOUT_S


@dataclass
class Delivery:
    """One event for one subscription: its body and headers are fixed when it is triggered."""

    subscription: Subscription
    topic: str
    body: bytes
    headers: dict[str, str]
    copies: int = 1
    """How many times it is delivered successfully (2: Shopify sends it twice)."""
    attempts: int = 0
    delivered: int = 0
    gave_up: bool = False

    @property
    def webhook_id(self) -> str:
        return self.headers["X-Shopify-Webhook-Id"]


@dataclass(frozen=True)
class Attempt:
    """One POST of a delivery and how it ended: an HTTP status, or None (timeout, refused)."""

    webhook_id: str
    topic: str
    status: int | None
    answer: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery: Delivery = field(compare=False)


class WebhookSender:
    """Sends deliveries from a background thread, retrying as Shopify does (module docstring)."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.deliveries: list[Delivery] = []
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._busy = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Queue a delivery (sent as soon as the thread gets to it, or after `delay`)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fake-shopify-webhooks",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            if delivery.attempts == 0 and delivery.delivered == 0:
                self.deliveries.append(delivery)
            heapq.heappush(self._due, _Due(time.monotonic() + delay, next(self._seq), delivery))
            self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing queued (retries included) and nothing being sent."""
        with self._cond:
            return not self._due and not self._busy

    def wait(self, timeout: float = 60.0) -> None:
        """Until `idle()`; fails after `timeout` (a generous deadline, not a measurement)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhooks still pending after {timeout}s: "
                                         f"{[d.delivery.topic for d in self._due]}")  # fmt: skip
                self._cond.wait(min(left, 0.05))

    def close(self) -> None:
        """Stop sending (what is queued is dropped)."""
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0].at > time.monotonic()):
                    wait = self._due[0].at - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                delivery = heapq.heappop(self._due).delivery
                self._busy += 1
            try:
                self._send(delivery)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _send(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        attempt = post(delivery)
        with self._cond:
            self.attempts.append(attempt)
        if attempt.ok:
            delivery.delivered += 1
            if delivery.delivered < delivery.copies:
                self.put(delivery)
            return
        delays = delivery.subscription.retry_delays
        retries = delivery.attempts - 1
        if retries < len(delays):
            self.put(delivery, delays[retries])
        else:
            delivery.gave_up = True


def post(delivery: Delivery) -> Attempt:
    """One POST of the delivery, its exact bytes and header names as Shopify writes them
    (http.client: urllib would re-case them), within the subscription's timeout."""
    target = urllib.parse.urlsplit(delivery.subscription.url)
    topic, webhook_id = delivery.topic, delivery.webhook_id
    connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80,
                                            timeout=delivery.subscription.timeout_s)  # fmt: skip
    try:
        path = target.path + (f"?{target.query}" if target.query else "")
        connection.request("POST", path or "/", delivery.body, delivery.headers)
        answer = connection.getresponse()
        return Attempt(webhook_id, topic, answer.status, answer.read())
    except (OSError, http.client.HTTPException) as exc:  # timeout, refused, reset, cut short
        return Attempt(webhook_id, topic, None, error=type(exc).__name__)
    finally:
        connection.close()
