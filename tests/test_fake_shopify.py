"""The Shopify fake behaves like the Admin GraphQL API where the connector relies on it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from .fakes.shopify import FakeShopify, gid_number
from .fakes.shopify_sender import sign

BULK = ("mutation($q: String!, $g: Boolean!) { bulkOperationRunQuery(query: $q, groupObjects: $g)"
        " { bulkOperation { id status } userErrors { code message } } }")  # fmt: skip
POLL = ("query($id: ID!) { node(id: $id) { ... on BulkOperation { status url objectCount "
        "rootObjectCount errorCode } } }")  # fmt: skip


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tick() -> Tick:
    return Tick()


@pytest.fixture
def shop(tick: Tick) -> Iterator[FakeShopify]:
    with FakeShopify(bucket_clock=tick) as fake:
        yield fake


def ask(shop: FakeShopify, query: str, token: str | None = None, **variables: Any) -> Any:
    response = requests.post(
        f"{shop.base_url}/admin/api/2025-10/graphql.json",
        json={"query": query, "variables": variables},
        headers={"X-Shopify-Access-Token": token or shop.token}, timeout=5,
    )  # fmt: skip
    return response.json() if response.status_code == 200 else response


def messages(answer: dict[str, Any]) -> list[str]:
    return [e["message"] for e in answer.get("errors") or []]


def test_an_unknown_field_is_a_graphql_error(shop: FakeShopify) -> None:
    answer = ask(shop, "{ customers(first: 1) { nodes { id emailAddress } } }")
    assert "data" not in answer
    assert messages(answer)[0].startswith("Cannot query field 'emailAddress' on type 'Customer'")


def test_a_connection_needs_first_and_at_most_250(shop: FakeShopify) -> None:
    assert messages(ask(shop, "{ products { nodes { id } } }")) == [
        "you must provide one of first or last"]  # fmt: skip
    assert "250" in messages(ask(shop, "{ products(first: 251) { nodes { id } } }"))[0]


def test_a_query_over_1000_points_is_refused(shop: FakeShopify) -> None:
    answer = ask(
        shop, "{ orders(first: 250) { nodes { id lineItems(first: 10) { nodes { id } } } } }"
    )
    assert answer["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 2 + 250 * (1 + 2 + 10)


def test_the_bucket_is_charged_the_actual_cost_throttles_and_refills(
    shop: FakeShopify, tick: Tick
) -> None:
    for i in range(3):
        shop.add_customer(f"c{i}@gmail.com", f"C{i}")
    answer = ask(shop, "{ customers(first: 100) { nodes { id amountSpent { amount } } } }")
    cost = answer["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (202, 2 + 3 * 2)
    assert cost["throttleStatus"] == {"maximumAvailable": 1000, "currentlyAvailable": 992,
                                      "restoreRate": 50}  # fmt: skip
    shop.bucket.available = 100
    throttled = ask(shop, "{ customers(first: 100) { nodes { id amountSpent { amount } } } }")
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED" and "data" not in throttled
    tick.now += 2.1  # 50 points a second
    assert "data" in ask(shop, "{ customers(first: 100) { nodes { id amountSpent { amount } } } }")


def test_search_sort_and_cursors(shop: FakeShopify) -> None:
    ids = []
    for i in range(5):
        shop.advance(10)
        ids.append(shop.add_customer(f"c{i}@gmail.com", f"C{i}"))
    query = ("query($after: String) { customers(first: 2, after: $after, sortKey: UPDATED_AT, "
             "query: \"updated_at:>='2026-03-01T12:00:20Z'\") { pageInfo { hasNextPage endCursor } "
             "nodes { id } } }")  # fmt: skip
    first = ask(shop, query)["data"]["customers"]
    assert [n["id"] for n in first["nodes"]] == ids[1:3] and first["pageInfo"]["hasNextPage"]
    shop.advance(10)
    shop.update(ids[1], firstName="Moved")  # now the newest: it comes again at the end
    rest = ask(shop, query, after=first["pageInfo"]["endCursor"])["data"]["customers"]
    assert [n["id"] for n in rest["nodes"]] == ids[3:5]
    last = ask(shop, query, after=rest["pageInfo"]["endCursor"])["data"]["customers"]
    assert [n["id"] for n in last["nodes"]] == [ids[1]] and not last["pageInfo"]["hasNextPage"]


def test_a_bulk_operation_runs_its_lifecycle_and_serves_jsonl(shop: FakeShopify) -> None:
    ann = shop.add_customer("ann@gmail.com", "Ann")
    order = shop.add_order(ann, [{"title": "A", "sku": "A1"}, {"title": "B", "sku": "B1"}])
    inner = "{ orders { edges { node { id lineItems { edges { node { id sku } } } } } } }"
    started = ask(shop, BULK, q=inner, g=True)["data"]["bulkOperationRunQuery"]
    assert started["userErrors"] == [] and started["bulkOperation"]["status"] == "CREATED"
    again = ask(shop, BULK, q=inner, g=True)["data"]["bulkOperationRunQuery"]
    assert again["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
    operation = started["bulkOperation"]["id"]
    assert ask(shop, POLL, id=operation)["data"]["node"]["status"] == "RUNNING"
    done = ask(shop, POLL, id=operation)["data"]["node"]
    assert (done["status"], done["objectCount"], done["rootObjectCount"]) == ("COMPLETED", "3", "1")
    lines = [json.loads(line) for line in requests.get(done["url"], timeout=5).text.splitlines()]
    assert lines[0] == {"id": order}
    assert [(x["sku"], x["__parentId"]) for x in lines[1:]] == [("A1", order), ("B1", order)]


def test_ungrouped_bulk_results_put_children_after_every_parent(shop: FakeShopify) -> None:
    orders = [shop.add_order(None, [{"title": "A", "sku": f"S{i}"}]) for i in range(2)]
    inner = "{ orders { edges { node { id lineItems { edges { node { id } } } } } } }"
    operation = ask(shop, BULK, q=inner, g=False)["data"]["bulkOperationRunQuery"]["bulkOperation"][
        "id"
    ]
    ask(shop, POLL, id=operation)
    url = ask(shop, POLL, id=operation)["data"]["node"]["url"]
    lines = [json.loads(line) for line in requests.get(url, timeout=5).text.splitlines()]
    assert [x["id"] for x in lines[:2]] == orders and all("__parentId" in x for x in lines[2:])


def test_an_empty_bulk_result_has_no_url_and_a_failure_is_reported(shop: FakeShopify) -> None:
    inner = "{ customers { edges { node { id } } } }"
    operation = ask(shop, BULK, q=inner, g=True)["data"]["bulkOperationRunQuery"]["bulkOperation"][
        "id"
    ]
    ask(shop, POLL, id=operation)
    done = ask(shop, POLL, id=operation)["data"]["node"]
    assert (done["status"], done["url"], done["objectCount"]) == ("COMPLETED", None, "0")
    shop.fail_next_bulk("TIMEOUT")
    failing = ask(shop, BULK, q=inner, g=True)["data"]["bulkOperationRunQuery"]["bulkOperation"][
        "id"
    ]
    ask(shop, POLL, id=failing)
    assert ask(shop, POLL, id=failing)["data"]["node"]["errorCode"] == "TIMEOUT"
    bad = ask(shop, BULK, q="{ shop { name } }", g=True)["data"]["bulkOperationRunQuery"]
    assert "at least one connection" in bad["userErrors"][0]["message"]


def test_refusals_throttles_and_failures_over_http(shop: FakeShopify) -> None:
    refused = ask(shop, "{ shop { name } }", token="shpat_wrong")
    assert refused.status_code == 401 and "Invalid API key" in refused.text
    shop.throttle_next(1, retry_after=2)
    limited = ask(shop, "{ shop { name } }")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    shop.fail_next(1, 502)
    assert ask(shop, "{ shop { name } }").status_code == 502
    assert ask(shop, "{ shop { name } }")["data"] == {"shop": {"name": "Acme"}}


def test_a_bulk_query_nests_connections_two_levels_deep_at_most(shop: FakeShopify) -> None:
    """orders > lineItems > product.collections is three levels (the object between them does
    not reset the count), as at Shopify; top-level `nodes` is no bulk query either."""
    deep = ("{ orders { edges { node { id lineItems { edges { node { id product { id "
            "collections { edges { node { title } } } } } } } } } } }")  # fmt: skip
    refused = ask(shop, BULK, q=deep, g=True)["data"]["bulkOperationRunQuery"]
    assert refused["bulkOperation"] is None
    assert "nested two levels deep" in refused["userErrors"][0]["message"]
    by_id = ask(shop, BULK, q='{ nodes(ids: ["gid://shopify/Product/1"]) { id } }', g=True)
    assert "node and nodes" in by_id["data"]["bulkOperationRunQuery"]["userErrors"][0]["message"]


def test_a_line_items_product_stays_inline_in_its_bulk_line(shop: FakeShopify) -> None:
    shirt = shop.add_product("Shirt", product_type="Shirts", vendor="Acme", tags=["linen"])
    order = shop.add_order(None, [{"title": "Shirt", "sku": "SH-1", "product": shirt}])
    inner = ("{ orders { edges { node { id lineItems { edges { node { id sku "
             "product { id productType vendor tags } } } } } } } }")  # fmt: skip
    started = ask(shop, BULK, q=inner, g=True)["data"]["bulkOperationRunQuery"]
    ask(shop, POLL, id=started["bulkOperation"]["id"])
    url = ask(shop, POLL, id=started["bulkOperation"]["id"])["data"]["node"]["url"]
    lines = [json.loads(line) for line in requests.get(url, timeout=5).text.splitlines()]
    assert len(lines) == 2 and lines[1]["__parentId"] == order
    assert lines[1]["product"] == {"id": shirt, "productType": "Shirts", "vendor": "Acme",
                                   "tags": ["linen"]}  # fmt: skip


def test_products_by_id_cost_each_id_and_a_line_items_collections_count(
    shop: FakeShopify,
) -> None:
    """`nodes(ids:)` is requested at 1 + the Product fragment per id and charged for the
    products found; a line item's product collections are a connection inside the page."""
    shirt = shop.add_product("Shirt", collections=["Summer", "Sale"])
    query = ("query($ids: [ID!]!) { nodes(ids: $ids) { ... on Product { id "
             "collections(first: 5) { nodes { handle title } } } } }")  # fmt: skip
    answer = ask(shop, query, ids=[shirt, "gid://shopify/Product/999999"])
    assert answer["data"]["nodes"][0]["collections"]["nodes"] == [
        {"handle": "summer", "title": "Summer"}, {"handle": "sale", "title": "Sale"}]  # fmt: skip
    assert answer["data"]["nodes"][1] is None
    cost = answer["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (2 * 8, 1 + 2 + 2)
    shop.add_order(None, [{"title": "Shirt", "product": shirt}])
    page = ("{ orders(first: 2) { nodes { id lineItems(first: 3) { nodes { id product { id "
            "collections(first: 5) { nodes { title } } } } } } } }")  # fmt: skip
    answer = ask(shop, page)
    line = answer["data"]["orders"]["nodes"][0]["lineItems"]["nodes"][0]
    assert [c["title"] for c in line["product"]["collections"]["nodes"]] == ["Summer", "Sale"]
    # 2 + 2 x (1 + lineItems 2 + 3 x (1 + product 1 + collections 2 + 5 x 1))
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 2 + 2 * (1 + 2 + 3 * 9)


class Receiver:
    """A webhook receiver on 127.0.0.1 recording each POST (headers, raw body); its first
    `slow` answers come later than the sender's timeout."""

    def __init__(self, slow: int = 0, delay_s: float = 1.0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.slow, self.delay_s = slow, delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(({k: v for k, v in self.headers.items()}, body))
                if receiver.slow > 0:
                    receiver.slow -= 1
                    time.sleep(receiver.delay_s)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_are_signed_rest_bodies_of_the_changed_object(shop: FakeShopify) -> None:
    receiver = Receiver()
    try:
        shop.subscribe(receiver.url, "shpss_x", topics=["customers/create", "orders/create"])
        ann = shop.add_customer("ann@gmail.com", "Ann", tags=["b", "a"])
        shop.update(ann, firstName="Annie")  # customers/update: not subscribed
        shop.add_order(ann, [{"title": "Hat", "sku": "HA-1", "price": 15, "quantity": 2}])
        shop.wait_for_webhooks(30)
    finally:
        receiver.close()
    (customer_headers, customer_body), (order_headers, order_body) = receiver.posts
    assert customer_headers["X-Shopify-Topic"] == "customers/create"
    assert customer_headers["X-Shopify-Hmac-Sha256"] == sign(customer_body, "shpss_x")
    assert customer_headers["X-Shopify-Shop-Domain"] == "acme.myshopify.com"
    assert customer_headers["X-Shopify-API-Version"] == "2025-10"
    assert customer_headers["X-Shopify-Triggered-At"] == "2026-03-01T12:00:00.000000000Z"
    ids = {h["X-Shopify-Webhook-Id"] for h in (customer_headers, order_headers)}
    events = {h["X-Shopify-Event-Id"] for h in (customer_headers, order_headers)}
    assert len(ids) == 2 and len(events) == 2
    body = json.loads(customer_body)
    assert (body["id"], body["admin_graphql_api_id"]) == (gid_number(ann), ann)
    assert (body["email"], body["first_name"], body["tags"]) == ("ann@gmail.com", "Ann", "b, a")
    assert body["created_at"] == "2026-03-01T07:00:00-05:00"  # the shop's zone
    assert body["email_marketing_consent"] == {"state": "not_subscribed", "opt_in_level": None,
                                               "consent_updated_at": None}  # fmt: skip
    order = json.loads(order_body)
    assert (order["total_price"], order["financial_status"], order["fulfillment_status"]) == (
        "30.00", "paid", None)  # fmt: skip
    assert order["customer"]["admin_graphql_api_id"] == ann
    (line,) = order["line_items"]
    assert (line["price"], line["quantity"], line["product_id"]) == ("15.00", 2, None)


def test_a_timed_out_delivery_is_retried_with_the_same_id_and_body(shop: FakeShopify) -> None:
    receiver = Receiver(slow=1, delay_s=2.0)
    try:
        shop.subscribe(receiver.url, "shpss_x", retry_delays=(0.05,), timeout_s=0.3)
        shop.add_customer("bo@gmail.com", "Bo")
        shop.wait_for_webhooks(30)
    finally:
        receiver.close()
    (first_headers, first_body), (again_headers, again_body) = receiver.posts
    assert first_body == again_body and first_headers == again_headers
    assert [a.status for a in shop.webhook_attempts] == [None, 200]
    assert shop.webhook_attempts[0].error == "TimeoutError"
