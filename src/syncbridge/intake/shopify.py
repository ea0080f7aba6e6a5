"""Shopify webhooks on the daemon's HTTP server: `POST /webhooks/shopify`.

Shopify posts a REST-shaped JSON body with these headers (case-insensitive): `X-Shopify-Topic`,
`X-Shopify-Hmac-Sha256`, `X-Shopify-Shop-Domain`, `X-Shopify-API-Version`,
`X-Shopify-Webhook-Id`, `X-Shopify-Event-Id`, `X-Shopify-Triggered-At`. It wants a 2xx within
5 s, else it retries the same delivery (same webhook id, same body) up to 8 times over about
4 hours, and deletes a subscription that keeps failing. So:

- The source is the enabled `connector = "shopify"` source whose `shop` option names the
  `X-Shopify-Shop-Domain` ("acme" and "acme.myshopify.com" alike). Its secret (the app's
  client secret) is read from the environment variable its `webhook_secret_env` names
  (default `SHOPIFY_WEBHOOK_SECRET`). The body's base64 HMAC-SHA256 under that secret is
  compared, in constant time, with `X-Shopify-Hmac-Sha256` over the raw bytes, before anything
  parses them. An unknown shop, a missing secret and a bad signature get the same 401.
- Topics: `customers/create|update` → `customers` (and `customers/email_marketing_consent_update`:
  the consent alone, with the rest of the stored customer kept), `customers/delete` and the
  compliance topic `customers/redact` → the customer's record deleted (redact: with the orders
  it names),
  `orders/create|updated` → `orders`, `checkouts/create|update` → `checkouts`, each payload
  converted to the connector's node (`shopify_payloads.py`). `customers/data_request` and
  `shop/redact` are answered 200 and logged; nothing is stored (syncbridge keeps no data of its
  own to report, and the shop's records go with its source). Any other topic, or one whose
  stream the source does not have, is answered 200 and ignored (counted), so that Shopify
  does not drop the subscription.
- A delivery is answered once its records are committed, with its webhook id in the same
  transaction (`shopify_webhook`): a delivery seen before is answered 200 without writing
  (also after a restart); ids are kept 48 hours. Concurrent deliveries are stored together,
  one transaction per group (as the event intake's group commit does).
- Out of order: a record whose `updatedAt` is older than the stored one's is not written
  (`ingest.write_unless_stale`); a delete is applied regardless, and a late update does not
  bring a deleted customer back.
- 400 for a signed body that is not a JSON object or has no id, or a delivery without a
  webhook id; 413 past `MAX_BODY_BYTES`; 503 while the cache cannot be written (Shopify retries).

Secrets never reach a log line or an answer: the secret is registered for masking, and only
the variable's name is ever mentioned.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Engine, delete
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import metrics
from ..ingest import write_unless_stale
from ..redaction import register_secret
from ..store.rawsql import insert_many, select_in
from ..store.tables import ShopifyWebhook
from . import shopify_payloads as payloads
from .grouping import GroupWriter
from .setup import PerSettings, serving_alone

if TYPE_CHECKING:
    from ..config.loader import Settings
    from ..config.models import Config
    from ..ingest import StreamIngest

log = logging.getLogger(__name__)

CONNECTOR = "shopify"
PATH = "/webhooks/shopify"
SECRET_ENV = "SHOPIFY_WEBHOOK_SECRET"
"""The environment variable holding the app's client secret, unless `webhook_secret_env`
names another."""
VERSION = "updatedAt"
"""The node field that orders versions of a record (the connector's cursor)."""
MAX_BODY_BYTES = 10 * 1024 * 1024
"""Shopify documents no limit; an order with hundreds of lines stays far below this."""
KEEP_IDS = timedelta(hours=48)
"""How long an applied webhook id is remembered: Shopify retries for about 4 hours."""
PRUNE_EVERY_S = 600.0
MAX_WEBHOOK_ID = 100
WEBHOOKS = ShopifyWebhook.__table__
_TOPIC_LABEL = re.compile(r"[a-z_]{1,40}/[a-z_]{1,40}")
"""A topic is a metric label only when it looks like one (labels stay bounded)."""

Records = list[tuple[str, dict[str, Any]]]
"""(stream, record) pairs a delivery stores."""


def shop_domain(value: str) -> str:
    """A shop as `X-Shopify-Shop-Domain` names it: "acme", "acme.myshopify.com" and
    "https://acme.myshopify.com/" are all `acme.myshopify.com`."""
    text = value.strip().lower().removeprefix("https://").removeprefix("http://")
    text = text.split("/", 1)[0]
    return text if "." in text or not text else f"{text}.myshopify.com"


@dataclass(frozen=True)
class ShopSource:
    """What a webhook needs of a Shopify source, read from its config alone (not from the
    connector), so that webhooks work with any connector version that keeps these options."""

    name: str
    domain: str
    secret_env: str
    streams: frozenset[str]


def shopify_sources(config: Config) -> dict[str, ShopSource]:
    """The enabled Shopify sources with a `shop`, by shop domain (the first of two that name
    the same shop)."""
    found: dict[str, ShopSource] = {}
    for source in config.sources:
        if not source.enabled or source.connector != CONNECTOR:
            continue
        options = source.options()
        shop, env = options.get("shop"), options.get("webhook_secret_env") or SECRET_ENV
        if not isinstance(shop, str) or not shop.strip():
            continue
        domain = shop_domain(shop)
        if domain in found:
            log.warning("sources %s and %s both name shop %s: webhooks go to %s",
                        found[domain].name, source.name, domain, found[domain].name)  # fmt: skip
            continue
        streams = frozenset(s.name for s in source.streams)
        found[domain] = ShopSource(source.name, domain, str(env), streams)
    return found


# --- topics


@dataclass(frozen=True)
class Topic:
    stream: str
    """The stream the topic needs: without it in the source, the topic is ignored."""
    records: Callable[[dict[str, Any], frozenset[str]], Records]


def _one(stream: str, convert: payloads.Converter) -> Topic:
    return Topic(stream, lambda payload, _streams: [(stream, convert(payload))])


def _redact(payload: dict[str, Any], streams: frozenset[str]) -> Records:
    out: Records = [("customers", payloads.redacted_customer(payload))]
    if "orders" in streams:
        out += [("orders", o) for o in payloads.redacted_orders(payload)]
    return out


TOPICS: dict[str, Topic] = {
    "customers/create": _one("customers", payloads.customer),
    "customers/update": _one("customers", payloads.customer),
    "customers/delete": _one("customers", payloads.deleted_customer),
    "customers/email_marketing_consent_update": _one("customers", payloads.consent_update),
    "customers/redact": Topic("customers", _redact),
    "orders/create": _one("orders", payloads.order),
    "orders/updated": _one("orders", payloads.order),
    "checkouts/create": _one("checkouts", payloads.checkout),
    "checkouts/update": _one("checkouts", payloads.checkout),
}
LOGGED_ONLY = frozenset({"customers/data_request", "shop/redact"})
"""Mandatory compliance topics answered 200 and logged, storing nothing."""


# --- the writer


@dataclass
class Delivery:
    webhook_id: str
    source: str
    records: Records
    received_at: datetime
    done: Future[str] = field(default_factory=Future)
    """Its outcome once committed: `applied`, `stale` (a newer version is stored) or
    `duplicate` (this webhook id was applied before)."""


class WebhookWriter(GroupWriter[Delivery]):
    """Stores deliveries in group commits (`grouping.GroupWriter`, up to `max_group`), each
    group in one transaction with their webhook ids. A group that fails is retried one
    delivery at a time, so that one bad delivery (or a webhook id another agent just stored)
    fails alone."""

    def __init__(
        self,
        engine: Engine,
        jobs: Callable[[str], Mapping[str, StreamIngest]],
        max_group: int = 500,
    ) -> None:
        """`jobs(source)` gives that source's stream jobs by stream name, as the setup is now."""
        self.engine, self.jobs = engine, jobs
        self._pruned = 0.0
        super().__init__(max_group, "shopify-webhooks")

    def submit(self, delivery: Delivery) -> Future[str]:
        self.put(delivery)
        return delivery.done

    def size(self, item: Delivery) -> int:
        return 1

    def refuse(self, item: Delivery, error: Exception) -> None:
        item.done.set_exception(error)

    def write(self, group: list[Delivery]) -> None:
        self._write(group)

    def _write(self, group: list[Delivery]) -> None:
        try:
            with self.engine.begin() as conn:
                outcomes = self._apply(conn, group)
        except BaseException as exc:
            if len(group) > 1:
                for delivery in group:
                    self._write([delivery])
                return
            log.error("storing Shopify webhook %s failed: %s", group[0].webhook_id,
                      type(exc).__name__)  # fmt: skip
            group[0].done.set_exception(exc)
            return
        for delivery, outcome in zip(group, outcomes, strict=True):
            delivery.done.set_result(outcome)

    def _apply(self, conn: Connection, group: list[Delivery]) -> list[str]:
        """Write the group's new deliveries; returns each delivery's outcome."""
        seen = applied_ids(conn, [d.webhook_id for d in group])
        outcomes = ["duplicate"] * len(group)
        todo: list[int] = []
        for index, delivery in enumerate(group):
            if delivery.webhook_id not in seen:
                seen.add(delivery.webhook_id)
                todo.append(index)
        by_stream: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for index in todo:
            for stream, record in group[index].records:
                by_stream[(group[index].source, stream)].append((index, record))
        written: set[int] = set()
        for (source, stream), items in by_stream.items():
            job = self.jobs(source).get(stream)
            if job is None:
                raise RuntimeError(f"source {source!r} has no stream {stream!r} any more")
            stale = write_unless_stale(
                conn, job, [r for _, r in items], VERSION, payloads.carry_over
            )
            written.update(index for n, (index, _) in enumerate(items) if n not in stale)
        for index in todo:
            outcomes[index] = "applied" if index in written else "stale"
        rows = [{"webhook_id": group[i].webhook_id, "received_at": group[i].received_at}
                for i in todo]  # fmt: skip
        insert_many(conn, WEBHOOKS, rows)
        if time.monotonic() - self._pruned > PRUNE_EVERY_S:
            prune(conn, datetime.now(UTC))
            self._pruned = time.monotonic()
        return outcomes


def applied_ids(conn: Connection, ids: list[str]) -> set[str]:
    """The webhook ids among `ids` applied before."""
    sql = "SELECT webhook_id FROM shopify_webhook WHERE webhook_id IN ({in})"
    return {row[0] for row in select_in(conn, sql, (), ids)}


def prune(conn: Connection, now: datetime) -> int:
    """Forget the webhook ids received more than `KEEP_IDS` ago; returns how many."""
    result = conn.execute(delete(WEBHOOKS).where(WEBHOOKS.c.received_at < now - KEEP_IDS))
    return int(result.rowcount or 0)


# --- the endpoint


def shopify_webhook_routes(
    sources: Callable[[], Mapping[str, ShopSource]],
    writer: WebhookWriter,
    environ: Mapping[str, str] = os.environ,
) -> list[BaseRoute]:
    """`POST /webhooks/shopify`; `sources()` gives the Shopify sources by shop domain as the
    setup is now (a reload may add a shop)."""
    warned: set[str] = set()
    masked: set[str] = set()

    def secret_of(source: ShopSource) -> bytes:
        secret = environ.get(source.secret_env, "")
        if not secret and source.secret_env not in warned:
            warned.add(source.secret_env)
            log.warning("Shopify webhooks for source %s are refused: the environment variable "
                        "%s (the app's client secret) is not set", source.name,
                        source.secret_env)  # fmt: skip
        if secret and secret not in masked:  # masked in every log record from now on
            masked.add(secret)
            register_secret(secret)
        return secret.encode()

    async def receive(request: Request) -> Response:
        received = datetime.now(UTC)
        headers = request.headers
        raw = await _body(request)
        if raw is None:
            metrics.shopify_webhook("unknown", "too_large")
            return JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, 413)
        source = sources().get(shop_domain(headers.get("x-shopify-shop-domain", "")))
        secret = secret_of(source) if source is not None else b""
        if not _signed(raw, headers.get("x-shopify-hmac-sha256", ""), secret) or not source:
            metrics.shopify_webhook("unknown", "unauthorized")
            return JSONResponse({"error": "unknown shop or invalid X-Shopify-Hmac-Sha256"}, 401)
        topic = headers.get("x-shopify-topic", "").strip().lower()
        label = topic if _TOPIC_LABEL.fullmatch(topic) else "other"
        webhook_id = headers.get("x-shopify-webhook-id", "").strip()
        shown = webhook_id[:MAX_WEBHOOK_ID]
        where = f"{topic or '(no topic)'} for {source.name} ({source.domain}), webhook {shown}"
        if topic in LOGGED_ONLY:
            log.info("Shopify compliance webhook %s: answered; syncbridge stores nothing for it",
                     where)  # fmt: skip
            metrics.shopify_webhook(label, "logged")
            return JSONResponse({"status": "logged"})
        handled = TOPICS.get(topic)
        if handled is None or handled.stream not in source.streams:
            log.debug("Shopify webhook %s ignored: no stream of the source takes it", where)
            metrics.shopify_webhook(label, "ignored")
            return JSONResponse({"status": "ignored"})
        try:
            if not webhook_id or len(webhook_id) > MAX_WEBHOOK_ID:
                raise ValueError(f"X-Shopify-Webhook-Id missing or over {MAX_WEBHOOK_ID} chars")
            payload = orjson.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            records = handled.records(payload, source.streams)
        except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError, NoId too
            metrics.shopify_webhook(label, "invalid")
            why = "invalid JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            return JSONResponse({"error": why}, 400)
        delivery = Delivery(webhook_id, source.name, records, received)
        try:
            outcome = await asyncio.wrap_future(writer.submit(delivery))
        except Exception:  # logged by the writer; Shopify retries the delivery
            metrics.shopify_webhook(label, "store_error")
            return JSONResponse({"error": "the cache cannot be written now; retry"}, 503,
                                headers={"Retry-After": "5"})  # fmt: skip
        log.debug("Shopify webhook %s: %s", where, outcome)
        metrics.shopify_webhook(label, outcome)
        return JSONResponse({"status": outcome})

    return [Route(PATH, receive, methods=["POST"])]


def _signed(raw: bytes, given: str, secret: bytes) -> bool:
    """Whether `given` is the body's base64 HMAC-SHA256 under `secret` (constant time; an
    empty secret never matches, but is computed all the same)."""
    expected = base64.b64encode(hmac.new(secret, raw, hashlib.sha256).digest())
    matches = hmac.compare_digest(expected, given.strip().encode("latin-1", "replace"))
    return matches and bool(secret)


async def _body(request: Request) -> bytes | None:
    """The raw body, or None past `MAX_BODY_BYTES` (not read further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# --- built from the setup


def build_shopify_webhooks(
    settings: Callable[[], Settings], engine: Engine
) -> tuple[list[BaseRoute], WebhookWriter] | None:
    """The webhook route and its writer, or None when no enabled Shopify source has a shop."""
    from ..pipeline import stream_jobs

    if not shopify_sources(settings().config):
        return None
    sources = PerSettings(settings, lambda current: shopify_sources(current.config))
    built: PerSettings[dict[str, dict[str, StreamIngest]]] = PerSettings(settings, lambda _: {})

    def jobs(source: str) -> dict[str, StreamIngest]:
        cache = built()
        if source not in cache:
            found = stream_jobs(settings(), only=source)
            cache[source] = {j.stream.name: j for j in found.values()}
        return cache[source]

    writer = WebhookWriter(engine, jobs)
    return shopify_webhook_routes(sources, writer), writer


@contextmanager
def serving(settings: Callable[[], Settings], engine: Engine) -> Iterator[str]:
    """The webhook endpoint alone on an HTTP server on a free local port (tests, a bench):
    yields its base URL; on exit the server stops, then the writer stores what it accepted."""
    from ..errors import FatalError

    found = build_shopify_webhooks(settings, engine)
    if found is None:
        raise FatalError('Shopify webhooks need an enabled connector = "shopify" source with shop')
    routes, writer = found
    with serving_alone(routes, writer.close) as url:
        yield url
