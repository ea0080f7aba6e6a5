"""Shopify webhooks end to end: the fake shop sends them from its own state, the real endpoint
stores them, and the real connector reads the same shop afterwards.

The fake (tests/fakes/shopify.py) is subscribed to the endpoint (`intake.shopify.serving`,
a live server on 127.0.0.1 over a migrated cache): each change it makes is delivered as
Shopify delivers it (REST body of that object, real HMAC, every header, a background sender
retrying failures with the same webhook id). The check that matters: a record stored by
webhooks alone equals what the connector reads of the same version over GraphQL (same
content hash), so the read afterwards writes nothing — `shopify_payloads.py` and the
connector agree, field by field, on objects neither test wrote by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from syncbridge.config.loader import Settings
from syncbridge.intake import shopify as intake
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine

from .builders import settings_from
from .fakes import shopify_rest as rest
from .fakes.shopify import FakeShopify
from .fakes.shopify_webhooks import use_shopify_connector

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
SECRET = "shpss_end_to_end_5e1f"
SECRET_ENV = "SYNCBRIDGE_TEST_SHOPIFY_SECRET"
TOKEN_ENV = "SYNCBRIDGE_TEST_SHOPIFY_TOKEN"
FAST = (0.05,) * 8
"""Shopify's 8 retries, a few hundredths of a second apart instead of over 4 hours."""
DEADLINE_S = 60.0


@dataclass
class Shop:
    """The fake shop subscribed to the live endpoint over one cache."""

    fake: FakeShopify
    engine: Engine
    settings: Settings

    def settle(self) -> None:
        """Every webhook triggered so far answered 2xx (or given up on)."""
        self.fake.wait_for_webhooks(DEADLINE_S)

    def pull(self) -> Any:
        """A connector read of the fake (first a bulk read, then paged ones)."""
        return run_cycle(self.settings, self.engine)

    def stored(self, stream: str) -> dict[str, tuple[dict[str, Any], bool]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT external_id, payload, deleted FROM source_record WHERE stream = :s"),
                {"s": stream},
            ).all()
        return {key: (_json(body), bool(gone)) for key, body, gone in rows}

    def written(self, key: str) -> tuple[Any, ...]:
        """The record's content hash and when and by which run it was last written: the
        same after a read that wrote nothing for it."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT content_hash, updated_at, run_id FROM source_record "
                                    "WHERE external_id = :k"), {"k": key}).one()  # fmt: skip
        return tuple(row)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def answers(self, key_topic: str) -> list[tuple[int | None, str]]:
        """(status, outcome) of every POST of `key_topic` so far, in order."""
        return [(a.status, _outcome(a.answer)) for a in self.fake.webhook_attempts
                if a.topic == key_topic]  # fmt: skip


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _outcome(answer: bytes) -> str:
    try:
        return str(json.loads(answer).get("status") or json.loads(answer).get("error"))
    except (ValueError, AttributeError):
        return ""


@pytest.fixture
def shop(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    use_shopify_connector(monkeypatch)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with FakeShopify() as fake:
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        streams = [{"name": s, "mapping": str(MAPPINGS / f"shopify_{s}.toml")}
                   for s in ("customers", "orders", "checkouts")]  # fmt: skip
        data = {
            "store": {"url": store_url},
            "ingest": {"parallel": False},
            "sources": [{"name": "shopify", "connector": "shopify", "shop": "acme",
                         "base_url": fake.base_url, "token_env": TOKEN_ENV,
                         "webhook_secret_env": SECRET_ENV, "bulk_poll_s": 0,
                         "retry_backoff_s": 0, "streams": streams}],
        }  # fmt: skip
        settings = settings_from(data, tmp_path)
        engine = open_engine(store_url)
        try:
            with intake.serving(lambda: settings, engine) as base:
                fake.subscribe(base + intake.PATH, SECRET, retry_delays=FAST)
                yield Shop(fake, engine, settings)
                fake.wait_for_webhooks(DEADLINE_S)  # nothing in flight when the server stops
        finally:
            engine.dispose()


def test_a_customer_created_and_updated_by_webhooks_alone_is_what_a_read_finds(
    shop: Shop,
) -> None:
    fake = shop.fake
    ann = fake.add_customer("ann@gmail.com", "Ann", last_name="Lee", marketing_state="SUBSCRIBED",
                            tags=["newsletter", "vip"], defaultPhoneNumber={"phoneNumber": "+4790000001"},
                            defaultAddress={"company": "Acme", "city": "Oslo", "provinceCode": None,
                                            "countryCodeV2": "NO", "zip": "0150"},
                            amountSpent={"amount": "129.9", "currencyCode": "USD"},
                            numberOfOrders="2")  # fmt: skip
    fake.update(ann, emailMarketingConsent={"marketingState": "SUBSCRIBED",
                                            "marketingOptInLevel": "CONFIRMED_OPT_IN",
                                            "consentUpdatedAt": "2026-03-01T11:30:00Z"})  # fmt: skip
    fake.advance(60)
    fake.update(ann, firstName="Annie", tags=["vip"])
    shop.settle()
    assert [(a.topic, a.status) for a in fake.webhook_attempts] == [
        ("customers/create", 200), ("customers/update", 200), ("customers/update", 200)]  # fmt: skip
    record, deleted = shop.stored("customers")[ann]
    assert not deleted and record["firstName"] == "Annie" and record["tags"] == ["vip"]
    assert record["updatedAt"] == "2026-03-01T12:01:00Z"  # REST's -05:00 time, in UTC
    by_webhook = shop.written(ann)

    report = shop.pull()  # the connector reads the fake: the same record, nothing written
    assert (report.totals.inserted, report.totals.updated, report.totals.unchanged) == (0, 0, 1)
    assert shop.written(ann) == by_webhook
    assert shop.stored("customers")[ann] == (record, False)


def test_an_order_by_webhook_is_completed_by_a_read_and_kept_by_the_next_webhook(
    shop: Shop,
) -> None:
    """REST line items carry `product_id` only: the first webhook of a never-read order stores
    the products without their type, vendor, tags and collections; the read completes them;
    a webhook after the read keeps them, and stores exactly what the next read finds."""
    fake = shop.fake
    bo = fake.add_customer("bo@gmail.com", "Bo")
    shirt = fake.add_product("Linen shirt", product_type="Shirts", vendor="Acme",
                             tags=["linen", "summer"], collections=["Summer", "Sale"])  # fmt: skip
    socks = fake.add_product("Wool socks", product_type="Socks", vendor="Knitwear Co")
    order = fake.add_order(bo, [
        {"title": "Linen shirt", "sku": "SH-1", "price": 39.9, "quantity": 2, "product": shirt,
         "vendor": "Acme"},
        {"title": "Socks", "sku": "SO-1", "price": 5, "product": socks},
        {"title": "Gift wrap", "sku": "GW-1", "price": 2.5}], email="bo@gmail.com")  # fmt: skip
    shop.settle()
    first, _ = shop.stored("orders")[order]
    assert [line["product"] for line in first["lineItems"]] == [
        {"id": shirt}, {"id": socks}, None]  # fmt: skip
    assert first["totalPriceSet"] == {"shopMoney": {"amount": "87.3", "currencyCode": "USD"}}

    report = shop.pull()  # completes the products; the customer was already as read
    assert report.totals.inserted == 0
    read, _ = shop.stored("orders")[order]
    shirt_line = read["lineItems"][0]
    assert shirt_line["product"] == {
        "id": shirt, "productType": "Shirts", "vendor": "Acme", "tags": ["linen", "summer"],
        "collections": [{"handle": "summer", "title": "Summer"},
                        {"handle": "sale", "title": "Sale"}]}  # fmt: skip
    assert {k: v for k, v in read.items() if k != "lineItems"} == {
        k: v for k, v in first.items() if k != "lineItems"}  # fmt: skip

    fake.advance(120)
    fake.update(order, displayFulfillmentStatus="FULFILLED", displayFinancialStatus="PARTIALLY_REFUNDED",
                totalRefundedSet={"shopMoney": {"amount": "5.0", "currencyCode": "USD"},
                                  "presentmentMoney": {"amount": "5.0", "currencyCode": "USD"}})  # fmt: skip
    shop.settle()
    assert shop.answers("orders/updated") == [(200, "applied")]
    updated, _ = shop.stored("orders")[order]
    assert updated["displayFulfillmentStatus"] == "FULFILLED"
    assert updated["totalRefundedSet"]["shopMoney"]["amount"] == "5.0"
    assert updated["lineItems"][0]["product"] == shirt_line["product"]  # kept from the read
    by_webhook = shop.written(order)
    report = shop.pull()
    assert (report.totals.inserted, report.totals.updated) == (0, 0)
    assert shop.written(order) == by_webhook


def test_a_checkout_by_webhook_is_what_a_read_finds(shop: Shop) -> None:
    fake = shop.fake
    cy = fake.add_customer("cy@gmail.com", "Cy")
    checkout = fake.add_checkout(cy, [{"title": "Lamp", "sku": "LA-1", "price": 80}])
    fake.advance(30)
    fake.update(checkout, completedAt=None)
    shop.settle()
    by_webhook = shop.written(checkout)
    report = shop.pull()
    assert (report.totals.inserted, report.totals.updated, report.totals.unchanged) == (0, 0, 2)
    assert shop.written(checkout) == by_webhook


def test_a_delivery_answered_503_is_retried_and_stored_once(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache cannot be written for the first delivery: the endpoint answers 503, the
    fake retries the same delivery (same webhook id, same body) and it is stored once."""
    real = intake.write_unless_stale
    failures = [OperationalError("INSERT", {}, Exception("database is locked"))]

    def unwritable_once(*args: Any, **kwargs: Any) -> set[int]:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "write_unless_stale", unwritable_once)
    dee = shop.fake.add_customer("dee@gmail.com", "Dee")
    shop.settle()
    attempts = shop.fake.webhook_attempts
    assert [(a.status, _outcome(a.answer)) for a in attempts] == [
        (503, "the cache cannot be written now; retry"), (200, "applied")]  # fmt: skip
    assert attempts[0].webhook_id == attempts[1].webhook_id
    (delivery,) = shop.fake.webhooks.deliveries
    assert delivery.attempts == 2 and not delivery.gave_up
    assert shop.stored("customers")[dee][0]["firstName"] == "Dee"
    assert shop.count("shopify_webhook") == 1 and shop.count("source_record") == 1


def test_a_delivery_to_a_server_not_listening_yet_is_retried_until_it_is(
    shop: Shop, tmp_path: Path
) -> None:
    """Refused connections are failures like a 5xx: retried with the same id and body."""
    fake = shop.fake
    fake.subscriptions.clear()
    with intake.serving(lambda: shop.settings, shop.engine) as base:
        url = base + intake.PATH
    fake.subscribe(url, SECRET, retry_delays=(0.05,) * 3)  # that server has stopped
    eli = fake.add_customer("eli@gmail.com", "Eli")
    shop.settle()
    (delivery,) = fake.webhooks.deliveries
    assert delivery.gave_up and delivery.attempts == 4  # the first try and its 3 retries
    assert {a.status for a in fake.webhook_attempts} == {None}
    assert eli not in shop.stored("customers")


def test_a_duplicate_delivery_is_stored_once(shop: Shop) -> None:
    shop.fake.deliver_twice_next()
    fay = shop.fake.add_customer("fay@gmail.com", "Fay")
    shop.settle()
    attempts = shop.fake.webhook_attempts
    assert [(a.status, _outcome(a.answer)) for a in attempts] == [
        (200, "applied"), (200, "duplicate")]  # fmt: skip
    assert attempts[0].webhook_id == attempts[1].webhook_id
    assert shop.count("shopify_webhook") == 1 and shop.count("source_record") == 1
    assert shop.stored("customers")[fay][0]["firstName"] == "Fay"


def test_two_updates_delivered_out_of_order_leave_the_newer(shop: Shop) -> None:
    fake = shop.fake
    gus = fake.add_customer("gus@gmail.com", "Gus")
    shop.settle()
    fake.reorder_next(2)
    fake.advance(10)
    fake.update(gus, firstName="Gustav")
    fake.advance(10)
    fake.update(gus, firstName="Gustavo")
    shop.settle()
    assert shop.answers("customers/update") == [(200, "applied"), (200, "stale")]
    sent = [json.loads(d.body)["first_name"] for d in fake.webhooks.deliveries[1:]]
    assert sent == ["Gustavo", "Gustav"]  # triggered the other way round
    record, _ = shop.stored("customers")[gus]
    assert record["firstName"] == "Gustavo" and record["updatedAt"] == "2026-03-01T12:00:20Z"
    by_webhook = shop.written(gus)
    assert shop.pull().totals.updated == 0 and shop.written(gus) == by_webhook


def test_a_customer_deleted_in_the_shop_is_deleted_by_its_webhook(shop: Shop) -> None:
    fake = shop.fake
    hal = fake.add_customer("hal@gmail.com", "Hal")
    ivy = fake.add_customer("ivy@gmail.com", "Ivy")
    shop.settle()
    fake.advance(5)
    fake.delete(hal)
    shop.settle()
    assert shop.answers("customers/delete") == [(200, "applied")]
    stored = shop.stored("customers")
    assert stored[hal] == ({"id": hal}, True) and stored[ivy][1] is False


def test_customer_webhooks_without_tags_and_consent_keep_the_stored_ones(shop: Shop) -> None:
    """From API version 2025-01 customers/create|update carry no `tags` and no
    `email_marketing_consent`: a payload without them must not empty what a read stored."""
    fake = shop.fake
    fake.customer_webhook_omits = rest.NOT_IN_CUSTOMER_WEBHOOKS
    ida = fake.add_customer("ida@gmail.com", "Ida", marketing_state="SUBSCRIBED", tags=["vip"])
    shop.settle()
    first, _ = shop.stored("customers")[ida]
    assert "tags" not in first and "emailMarketingConsent" not in first
    assert first["defaultEmailAddress"] == {"emailAddress": "ida@gmail.com"}
    assert shop.pull().totals.updated == 1  # the read completes the record
    read, _ = shop.stored("customers")[ida]
    fake.advance(60)
    fake.update(ida, firstName="Idun")
    shop.settle()
    updated, _ = shop.stored("customers")[ida]
    assert updated == {**read, "firstName": "Idun", "updatedAt": "2026-03-01T12:01:00Z"}
    assert updated["tags"] == ["vip"] and updated["defaultEmailAddress"]["marketingState"] == (
        "SUBSCRIBED")  # fmt: skip
    by_webhook = shop.written(ida)
    report = shop.pull()
    assert (report.totals.inserted, report.totals.updated) == (0, 0)
    assert shop.written(ida) == by_webhook
