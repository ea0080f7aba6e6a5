"""Shopify webhooks on the daemon's HTTP server (`POST /webhooks/shopify`).

A live server (uvicorn on 127.0.0.1, the daemon's app with the webhook route) over a migrated
cache; deliveries go over real HTTP, signed with a real HMAC of their raw body and carrying
the headers Shopify sends (tests/fakes/shopify_webhooks.py). Two shops: `acme` (customers,
orders, checkouts; its secret in TEST_SHOP_SECRET) and `acme-outlet` (customers only; the
default SHOPIFY_WEBHOOK_SECRET).
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from syncbridge.config.loader import Settings
from syncbridge.identity import resolve_pending
from syncbridge.ingest import append_records
from syncbridge.intake import shopify_payloads as payloads
from syncbridge.intake.shopify import prune, serving, shop_domain
from syncbridge.pipeline import stream_jobs
from syncbridge.settings import load_settings
from syncbridge.store.engine import open_engine
from tests.fakes.http import post
from tests.fakes.shopify_webhooks import (
    CHECKOUT,
    CHECKOUT_NODE,
    CUSTOMER,
    CUSTOMER_NODE,
    ORDER,
    ORDER_NODE,
    REDACT,
    customer,
    delivery,
    use_shopify_connector,
)

REPO = Path(__file__).resolve().parents[1]
SECRET = "shpss_test_0b7c1d2e3f"
OUTLET_SECRET = "shpss_outlet_9a8b7c"
OUTLET = "acme-outlet.myshopify.com"
GID = CUSTOMER_NODE["id"]
ORDER_GID = ORDER_NODE["id"]
CONFIG = """
[store]
url = "{url}"

[[sources]]
name = "shop"
connector = "shopify"
shop = "acme"
token_env = "SHOPIFY_TEST_TOKEN"
webhook_secret_env = "TEST_SHOP_SECRET"
base_url = "http://127.0.0.1:9"
streams = [
  {{ name = "customers", mapping = "{customers}" }},
  {{ name = "orders", mapping = "{orders}" }},
  {{ name = "checkouts", mapping = "{checkouts}" }},
]

[[sources]]
name = "outlet"
connector = "shopify"
shop = "{outlet}"
token_env = "SHOPIFY_TEST_TOKEN"
base_url = "http://127.0.0.1:9"
streams = [{{ name = "customers", mapping = "{customers}" }}]
"""
MAPPINGS = {
    "customers": """
[record]
timestamp = { field = "updatedAt", type = "datetime" }
[identifiers]
email = "defaultEmailAddress.emailAddress"
external = { "shopify:customer" = "id" }
[attributes]
first_name = "firstName"
last_name = "lastName"
""",
    "orders": """
[identifiers]
email = "email"
external = { "shopify:customer" = "customer.id" }
[attributes]
last_order_name = "name"
""",
    "checkouts": """
[identifiers]
email = "customer.defaultEmailAddress.emailAddress"
external = { "shopify:customer" = "customer.id" }
[attributes]
checkout_url = "abandonedCheckoutUrl"
""",
}


def mapping_for(folder: Path, stream: str) -> Path:
    """The repository's mapping of the stream once it exists, else a minimal one."""
    shipped = REPO / "mappings" / f"shopify_{stream}.toml"
    if shipped.exists():
        return shipped
    path = folder / f"shopify_{stream}.toml"
    path.write_text(MAPPINGS[stream], encoding="utf-8")
    return path


@dataclass
class Shop:
    url: str
    engine: Engine
    settings: Settings

    def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        return post(self.url + "/webhooks/shopify", body, headers)

    def deliver(self, topic: str, payload: Any, **options: Any) -> tuple[int, Any]:
        secret = options.pop("secret", SECRET)
        return self.send(*delivery(topic, payload, secret, **options))

    def stored(self, stream: str = "customers") -> dict[str, tuple[dict[str, Any], bool]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT external_id, payload, deleted FROM source_record WHERE stream = :s"),
                {"s": stream},
            ).all()
        return {key: (_json(payload), bool(deleted)) for key, payload, deleted in rows}

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def settings(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    use_shopify_connector(monkeypatch)
    monkeypatch.setenv("TEST_SHOP_SECRET", SECRET)
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", OUTLET_SECRET)
    monkeypatch.setenv("SHOPIFY_TEST_TOKEN", "shpat_test_token")
    body = CONFIG.format(
        url=store_url,
        outlet=OUTLET,
        **{stream: mapping_for(tmp_path, stream) for stream in MAPPINGS},
    )
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return load_settings(path)


@pytest.fixture
def engine(settings: Settings, store_url: str) -> Iterator[Engine]:
    engine = open_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def shop(settings: Settings, engine: Engine) -> Iterator[Shop]:
    with serving(lambda: settings, engine) as base:
        yield Shop(base, engine, settings)


def counted(topic: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "syncbridge_shopify_webhooks_total", {"topic": topic, "outcome": outcome}
    )
    return value or 0.0


# --- the payloads, without a server


def test_documented_payloads_become_exactly_the_connectors_nodes() -> None:
    assert payloads.customer(copy.deepcopy(CUSTOMER)) == CUSTOMER_NODE
    assert payloads.order(copy.deepcopy(ORDER)) == ORDER_NODE
    assert payloads.checkout(copy.deepcopy(CHECKOUT)) == CHECKOUT_NODE
    assert payloads.deleted_customer({"id": 706405506930370084}) == {
        "id": GID,
        "__deleted__": True,
    }
    bare = {"id": 7, "email": None, "tags": "", "email_marketing_consent": None, "phone": None}
    node = payloads.customer(bare)
    assert node["id"] == "gid://shopify/Customer/7"  # no admin_graphql_api_id: built
    assert node["defaultEmailAddress"] is None and node["emailMarketingConsent"] is None
    assert node["tags"] == [] and "amountSpent" not in node  # not carried: kept from the cache
    consent = {"state": "pending", "opt_in_level": "unknown", "consent_updated_at": None}
    pending = payloads.customer(customer(email_marketing_consent=consent))
    assert pending["emailMarketingConsent"] == {
        "marketingState": "PENDING",
        "marketingOptInLevel": "UNKNOWN",
        "consentUpdatedAt": None,
    }
    paid = payloads.order({**ORDER, "financial_status": "paid", "fulfillment_status": "partial"})
    assert paid["displayFinancialStatus"] == "PAID"
    assert paid["displayFulfillmentStatus"] == "PARTIALLY_FULFILLED"
    with pytest.raises(payloads.NoId):
        payloads.order({"name": "#1"})
    assert shop_domain("acme") == shop_domain("https://ACME.myshopify.com/") == "acme.myshopify.com"


def connector_read() -> dict[str, Any]:
    """`ORDER_NODE` as the connector reads it: each line item's product with the categories
    no webhook carries (the orders selection's `product{...}`)."""
    read = copy.deepcopy(ORDER_NODE)
    for line in read["lineItems"]:
        line["product"] = {
            "id": line["product"]["id"],
            "productType": "Sunglasses",
            "vendor": "Acme Optics",
            "tags": ["summer", "uv400"],
            "collections": [
                {"handle": "summer", "title": "Summer"},
                {"handle": "sale", "title": "Sale"},
            ],
        }
    return read


def test_a_webhook_keeps_the_stored_orders_product_categories() -> None:
    """A REST line item has only `product_id`: the stored product's type, vendor, tags and
    collections are kept (in their order: the same record as the read), unless the line
    item's product changed or is gone."""
    stored = connector_read()
    webhook = payloads.order(copy.deepcopy(ORDER))
    assert [line["product"] for line in webhook["lineItems"]] == [
        {"id": "gid://shopify/Product/788032119674292922"}] * 2  # fmt: skip
    completed = payloads.carry_over(webhook, stored)
    assert completed == stored
    assert list(completed["lineItems"][0]["product"]) == [
        "id", "productType", "vendor", "tags", "collections"]  # fmt: skip
    swapped = copy.deepcopy(webhook)
    swapped["lineItems"][0]["product"] = {"id": "gid://shopify/Product/1"}
    swapped["lineItems"][1]["product"] = None
    lines = payloads.carry_over(swapped, stored)["lineItems"]
    assert lines[0]["product"] == {"id": "gid://shopify/Product/1"} and lines[1]["product"] is None
    fresh = payloads.carry_over(webhook, {})  # a new order: nothing to keep until a read
    assert fresh["lineItems"][0]["product"] == {"id": "gid://shopify/Product/788032119674292922"}


def test_a_webhook_and_a_connector_read_store_the_same_record(
    settings: Settings, engine: Engine
) -> None:
    """The connector stored the order (with the product categories, which no webhook
    carries); the webhook of the same version converts and completes to the very same
    record: unchanged."""
    read = connector_read()
    job = stream_jobs(settings, only="shop")["shop/orders"]
    assert append_records(engine, job, [copy.deepcopy(read)]) == 1
    with serving(lambda: settings, engine) as base:
        shop = Shop(base, engine, settings)
        journal = shop.count("change")
        assert shop.deliver("orders/updated", ORDER) == (200, {"status": "applied"})
        assert shop.stored("orders")[ORDER_GID] == (read, False)
        assert shop.count("change") == journal  # same content hash: nothing written


def test_old_webhook_ids_are_pruned(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO shopify_webhook (webhook_id, received_at) VALUES (:i, :t)"),
            [{"i": "old", "t": now - timedelta(hours=49)}, {"i": "new", "t": now}],
        )
        assert prune(conn, now) == 1
        left = conn.execute(text("SELECT webhook_id FROM shopify_webhook")).scalars().all()
    assert left == ["new"]


# --- a live server


@pytest.mark.postgres
def test_only_a_delivery_signed_with_the_shops_secret_is_accepted(shop: Shop) -> None:
    body, headers = delivery("customers/create", CUSTOMER, SECRET)
    refused = [
        {k: v for k, v in headers.items() if k != "X-Shopify-Hmac-Sha256"},  # no signature
        {**headers, "X-Shopify-Hmac-Sha256": "bm90IHRoZSBzaWduYXR1cmU="},  # a wrong one
        {**headers, "X-Shopify-Shop-Domain": "someone-else.myshopify.com"},  # unknown shop
        {**headers, "X-Shopify-Shop-Domain": OUTLET},  # another shop: another secret
    ]
    answers = [shop.send(body, h) for h in refused]
    tampered = body.replace(b"Bob", b"Eve")  # the signature of the original body
    answers.append(shop.send(tampered, headers))
    assert {status for status, _ in answers} == {401}
    assert len({json.dumps(answer) for _, answer in answers}) == 1  # one answer for all
    assert SECRET not in json.dumps(answers)
    assert shop.stored() == {} and shop.count("shopify_webhook") == 0
    assert shop.send(body, headers) == (200, {"status": "applied"})
    outlet = shop.deliver("customers/create", customer(id=5), shop=OUTLET, secret=OUTLET_SECRET)
    assert outlet == (200, {"status": "applied"})
    stored = shop.stored()
    assert stored[GID] == (CUSTOMER_NODE, False)
    assert "gid://shopify/Customer/5" in stored


@pytest.mark.postgres
def test_a_repeated_webhook_id_is_applied_once_also_after_a_restart(
    shop: Shop, settings: Settings, engine: Engine
) -> None:
    first = shop.deliver("customers/update", CUSTOMER, webhook_id="wh-1")
    assert first == (200, {"status": "applied"})
    changed = customer(first_name="Robert", updated_at="2022-01-02T10:00:00-05:00")
    again = shop.deliver("customers/update", changed, webhook_id="wh-1")
    assert again == (200, {"status": "duplicate"})
    journal = shop.count("change")
    with serving(lambda: settings, engine) as base:  # a second server: as after a restart
        restarted = Shop(base, engine, settings)
        assert restarted.deliver("customers/update", changed, webhook_id="wh-1") == (
            200,
            {"status": "duplicate"},
        )
    assert shop.stored()[GID][0]["firstName"] == "Bob"
    assert shop.count("change") == journal and shop.count("shopify_webhook") == 1
    assert counted("customers/update", "duplicate") >= 2


@pytest.mark.postgres
def test_an_older_update_after_a_newer_one_keeps_the_newer(shop: Shop) -> None:
    newer = customer(first_name="Robert", updated_at="2022-01-02T10:00:00-05:00")
    assert shop.deliver("customers/update", newer) == (200, {"status": "applied"})
    assert shop.deliver("customers/update", CUSTOMER) == (200, {"status": "stale"})
    stored, deleted = shop.stored()[GID]
    assert stored["firstName"] == "Robert" and stored["updatedAt"] == "2022-01-02T15:00:00Z"
    assert not deleted
    assert shop.deliver("customers/delete", {"id": CUSTOMER["id"]})[0] == 200
    assert shop.stored()[GID] == ({"id": GID}, True)  # applied whatever its time
    late = customer(updated_at="2022-01-03T10:00:00-05:00")  # a retry after the delete
    assert shop.deliver("customers/update", late) == (200, {"status": "stale"})
    assert shop.stored()[GID] == ({"id": GID}, True)  # a deleted customer stays deleted


@pytest.mark.postgres
def test_concurrent_deliveries_are_all_stored(shop: Shop) -> None:
    answers: list[tuple[int, Any]] = []

    def send(n: int) -> None:
        answers.append(shop.deliver("customers/create", customer(id=1000 + n, email=f"c{n}@x.io")))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [(200, {"status": "applied"})] * 40
    assert len(shop.stored()) == 40 and shop.count("shopify_webhook") == 40


def test_redact_deletes_the_customer_and_the_requests_that_store_nothing_are_logged(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    assert shop.deliver("customers/create", CUSTOMER)[0] == 200
    assert shop.deliver("orders/create", ORDER)[0] == 200
    caplog.set_level("INFO", logger="syncbridge.intake.shopify")
    request = {"shop_id": 954889, "shop_domain": "acme.myshopify.com",
               "customer": REDACT["customer"], "orders_requested": [820982911946154508],
               "data_request": {"id": 9999}}  # fmt: skip
    assert shop.deliver("customers/data_request", request) == (200, {"status": "logged"})
    gone = {"shop_id": 954889, "shop_domain": "acme.myshopify.com"}
    assert shop.deliver("shop/redact", gone) == (200, {"status": "logged"})
    assert "customers/data_request" in caplog.text and "shop/redact" in caplog.text
    assert "bob@biller.com" not in caplog.text
    assert shop.stored()[GID][1] is False
    assert shop.deliver("customers/redact", REDACT) == (200, {"status": "applied"})
    assert shop.stored()[GID] == ({"id": GID}, True)
    assert shop.stored("orders")[ORDER_GID] == ({"id": ORDER_GID}, True)  # its orders too


def test_other_topics_and_streams_the_source_lacks_are_answered_and_ignored(
    shop: Shop,
) -> None:
    before = counted("products/create", "ignored")
    product = {"id": 632910392, "title": "IPod Nano - 8GB", "updated_at": "2022-01-01T00:00:00Z"}
    assert shop.deliver("products/create", product) == (200, {"status": "ignored"})
    outlet_order = shop.deliver("orders/create", ORDER, shop=OUTLET, secret=OUTLET_SECRET)
    assert outlet_order == (200, {"status": "ignored"})  # outlet has no orders stream
    assert counted("products/create", "ignored") == before + 1
    assert shop.count("source_record") == 0 and shop.count("shopify_webhook") == 0


def test_a_signed_body_that_is_not_json_or_has_no_id_is_400(shop: Shop) -> None:
    status, answer = shop.deliver("customers/create", None, raw=b"{not json")
    assert status == 400 and answer == {"error": "invalid JSON"}
    assert shop.deliver("customers/create", [1, 2])[0] == 400
    status, answer = shop.deliver("orders/create", {"name": "#1001"})
    assert status == 400 and "no id" in answer["error"]
    body, headers = delivery("customers/create", CUSTOMER, SECRET)
    del headers["X-Shopify-Webhook-Id"]
    assert shop.send(body, headers)[0] == 400
    assert shop.count("source_record") == 0


def test_stored_webhooks_map_into_a_profile(shop: Shop) -> None:
    assert shop.deliver("customers/create", CUSTOMER)[0] == 200
    assert shop.deliver("orders/create", ORDER)[0] == 200
    assert shop.deliver("checkouts/create", CHECKOUT)[0] == 200
    assert shop.stored("checkouts")[CHECKOUT_NODE["id"]] == (CHECKOUT_NODE, False)
    resolve_pending(shop.engine, shop.settings.config.identity)
    with shop.engine.connect() as conn:
        profiles = conn.execute(text("SELECT email, record_count FROM profile")).all()
    assert profiles == [("bob@biller.com", 3)]  # the customer, their order and checkout


def test_the_daemon_serves_the_webhooks_beside_its_other_routes(
    settings: Settings, engine: Engine
) -> None:
    from syncbridge.daemon.service import Daemon, DaemonOptions

    path = settings.path
    assert path is not None
    path.write_text(path.read_text() + '\n[daemon]\nhttp = "127.0.0.1:0"\n', encoding="utf-8")
    daemon = Daemon(load_settings(path), DaemonOptions())
    daemon.engine = engine
    daemon._start_http()
    assert daemon.http is not None and daemon.shopify is not None
    try:
        shop = Shop(f"http://{daemon.http.address}", engine, settings)
        assert shop.deliver("customers/create", CUSTOMER) == (200, {"status": "applied"})
        with urllib.request.urlopen(shop.url + "/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        daemon.http.stop()
        daemon.shopify.close()
    assert shop.stored()[GID] == (CUSTOMER_NODE, False)


@pytest.mark.postgres
def test_a_consent_update_changes_only_the_customers_consent(shop: Shop) -> None:
    """From API version 2025-01 a customer's consent arrives by
    customers/email_marketing_consent_update, not with customers/update: an unsubscribe in
    the shop reaches the cache (an opt-out for Mailchimp) without waiting for a pull, and the
    rest of the stored customer stays as it was."""
    assert shop.deliver("customers/create", CUSTOMER)[0] == 200
    before, _ = shop.stored()[GID]
    update = {"customer_id": CUSTOMER["id"], "email_address": CUSTOMER["email"],
              "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": "single_opt_in",
                                          "consent_updated_at": "2022-01-05T10:00:00-05:00"}}  # fmt: skip
    assert shop.deliver("customers/email_marketing_consent_update", update) == (
        200, {"status": "applied"},
    )  # fmt: skip
    after, deleted = shop.stored()[GID]
    assert after["emailMarketingConsent"] == {"marketingState": "UNSUBSCRIBED",
        "marketingOptInLevel": "SINGLE_OPT_IN", "consentUpdatedAt": "2022-01-05T15:00:00Z"}  # fmt: skip
    assert after["defaultEmailAddress"]["marketingState"] == "UNSUBSCRIBED"
    assert {k: v for k, v in after.items() if k not in ("emailMarketingConsent",
            "defaultEmailAddress")} == {k: v for k, v in before.items() if k not in (
            "emailMarketingConsent", "defaultEmailAddress")}  # fmt: skip
    assert not deleted
    job = next(j for j in stream_jobs(shop.settings, only="shop").values()
               if j.stream.name == "customers")  # fmt: skip
    assert job.transformer.apply(after).attributes["email_opt_out"] is True
