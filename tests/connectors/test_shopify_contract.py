"""The Shopify connector (GraphQL Admin API) against the stateful Shopify fake: the connector
contract, then bulk first loads, incremental pages, throttling, child pages, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from syncbridge_connectors.shopify import ShopifyConnector
from syncbridge_connectors.shopify_client import GraphQL

from syncbridge.config.loader import Settings
from syncbridge.errors import AuthError, FatalError, RetriableError
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Event, Profile, SourceRecord

from ..builders import settings_from
from ..fakes.shopify import FakeShopify
from .contract import ConnectorContract, Harness

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
TOKEN_ENV = "SYNCBRIDGE_TEST_SHOPIFY_TOKEN"
R = SourceRecord.__table__.c
P = Profile.__table__.c
E = Event.__table__.c


class Clock:
    """Stands in for time on both sides: the connector's sleeps move the fake's bucket."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(GraphQL, "sleep", staticmethod(clock.sleep))
    monkeypatch.setattr(GraphQL, "clock", staticmethod(clock))
    return clock


@pytest.fixture
def fake(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShopify]:
    with FakeShopify(bucket_clock=clock) as server:
        monkeypatch.setenv(TOKEN_ENV, server.token)
        yield server


STREAM_MAPPINGS = {s: str(MAPPINGS / f"shopify_{s}.toml") for s in
                   ("customers", "orders", "checkouts")}  # fmt: skip
"""The default mappings; products have none (their categories come with each order's line
items), so a test reading them maps them itself (`PRODUCTS_MAPPING`)."""
PRODUCTS_MAPPING = """
[record]
timestamp = { field = "updatedAt", type = "datetime" }
[identifiers]
external = { "shopify:product" = "id" }
"""


def shop_settings(fake: FakeShopify, tmp: Path, store_url: str, *streams: str,
                  parallel: bool = False, **source: Any) -> Settings:  # fmt: skip
    """A config reading `streams` of the fake shop. Not `parallel` by default: a first read in
    a producer process would sleep on a copy of the test's clock, not on the fake's."""
    data = {
        "store": {"url": store_url},
        "ingest": {"parallel": parallel},
        "sources": [{"name": "shopify", "connector": "shopify", "shop": "acme",
                     "base_url": fake.base_url, "token_env": TOKEN_ENV, "bulk_poll_s": 0,
                     "retry_backoff_s": 0, **source,
                     "streams": [{"name": s, "mapping": STREAM_MAPPINGS.get(s) or products(tmp)}
                                 for s in streams or ("customers",)]}],
    }  # fmt: skip
    return settings_from(data, tmp)


def products(tmp: Path) -> str:
    path = tmp / "products.toml"
    path.write_text(PRODUCTS_MAPPING)
    return str(path)


class ShopifyHarness(Harness):
    def __init__(self, fake: FakeShopify, tmp: Path) -> None:
        self.fake, self.tmp = fake, tmp
        self.ids: dict[str, str] = {}
        self.secret = fake.token

    def put(self, people: list[dict[str, Any]]) -> None:
        self.fake.advance(5)
        for p in people:
            if p["id"] in self.ids:
                self.fake.update(self.ids[p["id"]], email=p["email"], firstName=p["first_name"])
            else:
                self.ids[p["id"]] = self.fake.add_customer(p["email"], p["first_name"])

    def put_older(self, people: list[dict[str, Any]]) -> None:
        now = self.fake.now
        self.fake.set_clock(now - timedelta(days=1))
        self.put(people)
        self.fake.set_clock(now)

    def delete(self, ids: list[str]) -> None:
        self.fake.advance(5)
        for i in ids:
            self.fake.delete(self.ids[i])

    def break_record(self, person_id: str) -> str:
        self.fake.advance(5)
        self.fake.update(self.ids[person_id], email="person4(at)gmail.com")
        return self.ids[person_id]

    def break_credentials(self) -> None:
        self.fake.revoke_token()

    def settings(self, store_url: str) -> Settings:
        return shop_settings(self.fake, self.tmp, store_url, page_size=self.page_size,
                             bulk_page_size=self.page_size, reconcile_every_h=0,
                             parallel=True)  # fmt: skip


class TestShopifyContract(ConnectorContract):
    @pytest.fixture
    def harness(self, fake: FakeShopify, tmp_path: Path) -> ShopifyHarness:
        return ShopifyHarness(fake, tmp_path)


# -- beyond the contract --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    yield engine
    engine.dispose()


def payload(engine: Engine, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found: dict[str, Any] = conn.execute(
            select(R.payload).where(R.external_id == key)
        ).scalar_one()
    return found


def live(engine: Engine, stream: str = "customers") -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(R.stream == stream, R.deleted.is_(False))
        ).scalar_one()


def queries(fake: FakeShopify, marker: str) -> list[Any]:
    return [r for r in fake.requests if r.query and marker in r.query]


def shop_with_orders(fake: FakeShopify) -> tuple[str, list[str]]:
    """Ann's order of a shirt (in two collections), socks (a type, no collection) and a hat
    (no product: a custom line item), and a cancelled order of a scarf."""
    ann = fake.add_customer("ann@gmail.com", "Ann", marketing_state="SUBSCRIBED")
    shirt = fake.add_product(
        "Linen shirt",
        product_type="Shirts",
        vendor="Acme",
        tags=["linen", "summer"],
        collections=["Summer", "Sale"],
    )
    socks = fake.add_product(
        "Wool socks", product_type="Socks", vendor="Knitwear Co", tags=["wool"]
    )
    scarf = fake.add_product("Silk scarf", product_type="Scarves", collections=["Sale"])
    orders = [
        fake.add_order(ann, [{"title": "Linen shirt", "sku": "SH-1", "price": 40, "quantity": 2,
                              "product": shirt, "vendor": "Acme"},
                             {"title": "Socks", "sku": "SO-1", "price": 5, "product": socks},
                             {"title": "Hat", "sku": "HA-1", "price": 15}], email="ann@gmail.com"),
        fake.add_order(ann, [{"title": "Scarf", "sku": "SC-1", "price": 25, "product": scarf}],
                       cancelled=True),
    ]  # fmt: skip
    return ann, orders


def test_a_bulk_first_load_rejoins_line_items_to_their_orders(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    ann, (order, _cancelled) = shop_with_orders(fake)
    settings = shop_settings(fake, tmp_path, str(store.url), "customers", "orders")
    report = run_cycle(settings, store)
    assert report.totals.inserted == 3 and len(fake.bulk_operations) == 2
    assert not queries(fake, "SyncbridgePage")  # no paged reads on a first load
    record = payload(store, order)
    assert [i["sku"] for i in record["lineItems"]] == ["SH-1", "SO-1", "HA-1"]
    shirt_line, socks_line, hat_line = record["lineItems"]
    assert shirt_line["product"] == {
        "id": shirt_line["product"]["id"], "productType": "Shirts", "vendor": "Acme",
        "tags": ["linen", "summer"],
        "collections": [{"handle": "summer", "title": "Summer"},
                        {"handle": "sale", "title": "Sale"}]}  # fmt: skip
    assert socks_line["product"]["collections"] == [] and hat_line["product"] is None
    # the collections, three levels down, were looked up once for the three products (the
    # cancelled order's scarf too: it is read, only its events are not made)
    (lookup,) = queries(fake, "SyncbridgeCollections")
    scarf = payload(store, _cancelled)["lineItems"][0]["product"]
    assert sorted(lookup.variables["ids"]) == sorted(
        [shirt_line["product"]["id"], socks_line["product"]["id"], scarf["id"]])  # fmt: skip
    assert scarf["collections"] == [{"handle": "sale", "title": "Sale"}]
    assert record["customer"] == {"id": ann} and record["totalPriceSet"]["shopMoney"]["amount"]
    with store.connect() as conn:
        events = conn.execute(select(E.type, E.properties)).all()
    assert sorted((t, p["sku"], p["quantity"]) for t, p in events) == [
        ("purchase", "HA-1", 1), ("purchase", "SH-1", 2), ("purchase", "SO-1", 1)]  # fmt: skip
    shirt = next(p for t, p in events if p["sku"] == "SH-1")
    assert (shirt["price"], shirt["product_type"], shirt["order"]) == (40, "Shirts", "#1001")
    assert (shirt["vendor"], shirt["product_tags"], shirt["category"]) == (
        "Acme", ["linen", "summer"], "Shirts")  # fmt: skip
    assert [c["title"] for c in shirt["collections"]] == ["Summer", "Sale"]
    socks = next(p for t, p in events if p["sku"] == "SO-1")
    assert (socks["vendor"], socks["category"], socks.get("collections")) == (
        "Knitwear Co", "Socks", [])  # fmt: skip
    hat = next(p for t, p in events if p["sku"] == "HA-1")
    assert hat.get("category") is None and hat.get("product_tags") is None
    with store.connect() as conn:  # Ann only: products are no profiles
        assert conn.execute(select(func.count()).select_from(Profile)).scalar_one() == 1


def test_a_bulk_read_and_a_paged_read_store_the_same_order(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    """Collections looked up after a bulk read, or selected within a page: the same record."""
    _, (order, cancelled) = shop_with_orders(fake)
    run_cycle(shop_settings(fake, tmp_path, str(store.url), "orders"), store)
    assert len(queries(fake, "SyncbridgeCollections")) == 1
    other = open_engine(f"sqlite:///{tmp_path / 'paged.db'}")
    try:
        (tmp_path / "paged").mkdir()
        settings = shop_settings(fake, tmp_path / "paged", str(other.url), "orders",
                                 bulk_first_read=False)  # fmt: skip
        run_cycle(settings, other)
        (page,) = queries(fake, "SyncbridgePage")
        assert "collections(first: 5)" in page.query
        assert len(queries(fake, "SyncbridgeCollections")) == 1  # none for the paged read
        for key in (order, cancelled):
            assert payload(other, key) == payload(store, key)
    finally:
        other.dispose()


def test_order_pages_stay_within_the_query_cost_limit(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    """What the connector counts for a page of orders, with their line items' products and
    collections, is what Shopify (the fake) counts, and within 1,000 points."""
    from syncbridge_connectors import shopify_queries as q

    shop_with_orders(fake)
    for k in (5, 20):
        (tmp_path / str(k)).mkdir()
        settings = shop_settings(fake, tmp_path / str(k), str(store.url), "orders",
                                 bulk_first_read=False, line_collections=k)  # fmt: skip
        run_cycle(settings, store)
        page = queries(fake, "SyncbridgePage")[-1]
        selection = q.selection("orders", k)
        first = page.variables["first"]
        assert first == q.fitting_page(selection, 250, 25, 1000)
        expected = q.requested_cost(selection, first, 25)
        assert fake_cost(fake, page.query, page.variables) == expected <= 1000
    assert q.fitting_page(q.selection("orders", 5), 250, 25, 1000) == 3


def fake_cost(fake: FakeShopify, query: str, variables: dict[str, Any]) -> int:
    from graphql import OperationDefinitionNode, parse
    from graphql.execution.values import get_variable_values

    from ..fakes.shopify import query_cost

    op = next(d for d in parse(query).definitions if isinstance(d, OperationDefinitionNode))
    coerced = get_variable_values(fake.schema, op.variable_definitions or (), variables)
    assert not isinstance(coerced, list)
    return query_cost(fake.schema, op, coerced)


def test_collections_are_looked_up_in_batches_the_cost_allows(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    """50 collections a product: 53 points an id, 18 ids a lookup; 20 products, two lookups,
    each product asked for once however many orders hold it."""
    ids = [fake.add_product(f"P{i}", product_type="T", collections=[f"C{i}"]) for i in range(20)]
    for _ in range(2):
        fake.add_order(None, [{"title": f"P{i}", "sku": f"P{i}", "product": p}
                              for i, p in enumerate(ids)])  # fmt: skip
    settings = shop_settings(fake, tmp_path, str(store.url), "orders", line_collections=50,
                             bulk_page_size=1)  # fmt: skip
    assert run_cycle(settings, store).totals.inserted == 2
    lookups = queries(fake, "SyncbridgeCollections")
    assert [len(r.variables["ids"]) for r in lookups] == [18, 2]
    assert "collections(first: 50)" in lookups[0].query
    with store.connect() as conn:
        stored = conn.execute(select(R.payload).where(R.stream == "orders")).scalars().all()
    assert all(line["product"]["collections"] == [{"handle": f"c{i}", "title": f"C{i}"}]
               for record in stored for i, line in enumerate(record["lineItems"]))  # fmt: skip


def test_no_line_collections_selects_and_looks_up_none(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    _, (order, _cancelled) = shop_with_orders(fake)
    settings = shop_settings(fake, tmp_path, str(store.url), "orders", line_collections=0)
    run_cycle(settings, store)
    assert not queries(fake, "SyncbridgeCollections") and not queries(fake, "collections")
    shirt = payload(store, order)["lineItems"][0]["product"]
    assert set(shirt) == {"id", "productType", "vendor", "tags"}


def test_a_bulk_result_with_nothing_in_it_is_an_empty_stream(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    report = run_cycle(shop_settings(fake, tmp_path, str(store.url), "orders"), store)
    assert report.status == "ok" and report.totals.read == 0


def test_later_reads_page_from_the_mark_with_an_overlap(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    shop_with_orders(fake)
    settings = shop_settings(fake, tmp_path, str(store.url), "customers", "orders",
                             overlap_s=60)  # fmt: skip
    run_cycle(settings, store)
    fake.advance(600)
    bob = fake.add_customer("bob@gmail.com", "Bob")
    fake.add_order(bob, [{"title": "Belt", "sku": "BE-1", "price": 30}])
    report = run_cycle(settings, store)
    # from the bulk operation's start (12:00) less the overlap: the first load's records are
    # read again, at the cost of a hash comparison each
    assert (report.totals.inserted, report.totals.updated, report.totals.unchanged) == (2, 0, 3)
    paged = queries(fake, "SyncbridgePage")
    assert paged and all(r.variables["query"] == "updated_at:>='2026-03-01T11:59:00Z'"
                         for r in paged)  # fmt: skip
    assert "sortKey: UPDATED_AT" in paged[0].query


def test_a_long_child_list_is_read_to_its_end_for_its_node(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    cara = fake.add_customer("cara@gmail.com", "Cara")
    lines = [{"title": f"Item {i}", "sku": f"IT-{i:02d}", "price": 1} for i in range(60)]
    order = fake.add_order(cara, lines)
    settings = shop_settings(fake, tmp_path, str(store.url), "orders", bulk_first_read=False,
                             child_page_size=25)  # fmt: skip
    run_cycle(settings, store)
    assert [i["sku"] for i in payload(store, order)["lineItems"]] == [x["sku"] for x in lines]
    assert len(queries(fake, "SyncbridgeChildren")) == 1  # 25 in the page, then 35 at once
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 60


def test_a_throttled_answer_is_waited_out_not_failed(
    fake: FakeShopify, tmp_path: Path, store: Engine, clock: Clock
) -> None:
    fake.add_customer("dan@gmail.com", "Dan")
    settings = shop_settings(fake, tmp_path, str(store.url), bulk_first_read=False)
    fake.throttle_graphql_next(3)
    assert run_cycle(settings, store).totals.inserted == 1
    assert fake.throttled == 3 and len(clock.sleeps) >= 3


def test_a_429_with_retry_after_is_waited_out_not_failed(
    fake: FakeShopify, tmp_path: Path, store: Engine, clock: Clock
) -> None:
    fake.add_customer("eve@gmail.com", "Eve")
    settings = shop_settings(fake, tmp_path, str(store.url), bulk_first_read=False, retries=0)
    fake.throttle_next(6, retry_after=7)  # more than `retries` would allow: not counted
    assert run_cycle(settings, store).totals.inserted == 1
    assert clock.sleeps.count(7.0) == 6


def test_requests_are_paced_by_the_reported_bucket(
    clock: Clock, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeShopify(bucket_clock=clock, maximum_available=200, restore_rate=20) as small:
        monkeypatch.setenv(TOKEN_ENV, small.token)
        for i in range(150):
            small.add_customer(f"c{i}@gmail.com", f"C{i}", defaultAddress={"city": "Oslo"})
        settings = shop_settings(small, tmp_path, str(store.url), bulk_first_read=False)
        assert run_cycle(settings, store).totals.inserted == 150
        assert small.throttled == 0  # it waited before each page instead
        pages = queries(small, "SyncbridgePage")
        assert len(pages) > 4 and all(r.variables["first"] <= 33 for r in pages)
        assert sum(clock.sleeps) > 0


def test_a_server_error_is_retried(fake: FakeShopify, tmp_path: Path, store: Engine) -> None:
    fake.add_customer("fay@gmail.com", "Fay")
    fake.fail_next(1, 503)
    settings = shop_settings(fake, tmp_path, str(store.url), bulk_first_read=False)
    assert run_cycle(settings, store).totals.inserted == 1


def test_deleted_customers_go_at_the_next_reconciliation(
    fake: FakeShopify, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    monkeypatch.setattr(ShopifyConnector, "now", staticmethod(lambda: now[0]))
    gone = fake.add_customer("gus@gmail.com", "Gus")
    fake.add_customer("hal@gmail.com", "Hal")
    settings = shop_settings(fake, tmp_path, str(store.url), reconcile_every_h=24)
    run_cycle(settings, store)  # the bulk first read is complete: reconciled now
    fake.delete(gone)
    now[0] += timedelta(hours=2)
    assert run_cycle(settings, store).totals.deleted == 0 and live(store) == 2
    assert not queries(fake, "SyncbridgeIds")
    now[0] += timedelta(hours=23)
    report = run_cycle(settings, store)
    assert report.totals.deleted == 1 and live(store) == 1
    with store.connect() as conn:
        assert conn.execute(select(R.deleted).where(R.external_id == gone)).scalar_one()


def test_a_refused_token_stops_the_run_naming_the_variable_not_the_token(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    settings = shop_settings(fake, tmp_path, str(store.url))
    token = fake.token
    fake.revoke_token()
    with pytest.raises(AuthError) as info:
        run_cycle(settings, store)
    assert TOKEN_ENV in str(info.value) and "401" in str(info.value)
    assert token not in str(info.value)


def test_a_missing_token_variable_is_a_clear_error(
    fake: FakeShopify, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(FatalError, match=f"environment variable {TOKEN_ENV} is not set"):
        run_cycle(shop_settings(fake, tmp_path, str(store.url)), store)
    assert not fake.requests


def test_a_failed_bulk_operation_is_retried_by_the_next_run(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    fake.add_customer("ida@gmail.com", "Ida")
    fake.fail_next_bulk("INTERNAL_SERVER_ERROR")
    settings = shop_settings(fake, tmp_path, str(store.url))
    with pytest.raises(RetriableError, match="ended FAILED \\(INTERNAL_SERVER_ERROR\\)"):
        run_cycle(settings, store)
    assert run_cycle(settings, store).totals.inserted == 1


def test_a_bulk_query_waits_for_one_already_running(
    fake: FakeShopify, tmp_path: Path, store: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    fake.add_customer("jo@gmail.com", "Jo")
    other = requests.post(
        f"{fake.base_url}/admin/api/2025-10/graphql.json",
        json={"query": 'mutation { bulkOperationRunQuery(query: "{ products { edges { node '
                       '{ id } } } }") { bulkOperation { id } userErrors { message } } }'},
        headers={"X-Shopify-Access-Token": fake.token}, timeout=5,
    ).json()["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]  # fmt: skip

    def time_passes(seconds: float) -> None:  # the other tool polls its operation meanwhile
        clock.sleep(seconds)
        fake._poll(other)

    monkeypatch.setattr(GraphQL, "sleep", staticmethod(time_passes))
    settings = shop_settings(fake, tmp_path, str(store.url), bulk_poll_s=1)
    assert run_cycle(settings, store).totals.inserted == 1


def test_checkouts_become_checkout_started_events_until_completed(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    kim = fake.add_customer("kim@gmail.com", "Kim")
    open_one = fake.add_checkout(kim, [{"title": "Lamp", "sku": "LA-1", "price": 80}])
    fake.add_checkout(kim, [{"title": "Mug", "sku": "MU-1"}], completed=True)
    run_cycle(shop_settings(fake, tmp_path, str(store.url), "customers", "checkouts"), store)
    with store.connect() as conn:
        events = conn.execute(select(E.type, E.properties)).all()
    assert [(t, p["checkout"], p["total"]) for t, p in events] == [
        ("checkout_started", open_one, 80)]  # fmt: skip
    assert events[0][1]["recovery_url"].endswith("/recover")


def test_products_are_read_with_their_collections(
    fake: FakeShopify, tmp_path: Path, store: Engine
) -> None:
    """Not mapped by default (a product is no person); still read, with its collections."""
    product = fake.add_product("Linen shirt", product_type="Shirts", collections=["Summer", "Sale"])
    assert not (MAPPINGS / "shopify_products.toml").exists()
    run_cycle(shop_settings(fake, tmp_path, str(store.url), "products"), store)
    record = payload(store, product)
    assert [c["title"] for c in record["collections"]] == ["Summer", "Sale"]
    assert record["productType"] == "Shirts" and set(record["collections"][0]) == {
        "id", "handle", "title"}  # fmt: skip
