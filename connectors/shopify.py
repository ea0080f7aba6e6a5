"""Shopify connector (GraphQL Admin API): customers, orders, abandoned checkouts, products.

    [[sources]]
    name = "shopify"
    connector = "shopify"
    shop = "acme"                       # or "acme.myshopify.com"
    # api_version = "2025-10"; the token is read from $SHOPIFY_ACCESS_TOKEN (token_env)
    [[sources.streams]]
    name = "customers"                  # also: orders, checkouts (and products, not mapped)
    mapping = "mappings/shopify_customers.toml"

Each record is the GraphQL node as the Admin API returns it for the stream's selection
(shopify_queries.py), its connections flattened to lists (shopify_records.py, shared with the
webhooks). The key is the node's GID (`id`); the declared cursor is `updatedAt`.

**Products are read with the orders**: each line item's `product` brings its type, vendor,
tags and first `line_collections` collections, so purchases can be categorised without a
product lookup table. The `products` stream still reads the catalogue, but no default mapping
maps it (a product is no person: mapped, each would become a profile of its own).

**First read: a bulk operation** (shopify_bulk.py): Shopify runs the whole query in the
background and hands back a JSONL file, streamed here line by line, children re-joined to
their parents. Its lines are in no cursor order, so its pages are not checkpoints
(`Page.checkpoint=False`) until the last: a crash repeats the operation. The operation's
creation time is kept in the stream's state, and the next read starts there at the latest
(a record changed while the operation ran may be in the file in its old version).

**Later reads are paged queries** of ``updated_at:>='<mark - overlap_s>'``, sorted by
UPDATED_AT (every page a checkpoint), child connections paged within the query and the rest of
a longer list fetched for its node alone. Abandoned checkouts have no UPDATED_AT sort key, so
their read is checkpointed at its end only. Page sizes follow from Shopify's query cost (the
single-query limit of 1,000 points); requests are paced by the bucket Shopify reports, and a
throttled request waits and asks again (shopify_client.py).

**Deleted customers** are found by reconciliation: Shopify's API does not list deleted
customers (the `customers/delete` webhook reports them as they happen). Every
`reconcile_every_h` hours (0: every read; the time of the last one is kept in the stream's
state beside the cursor) a read of the customers stream ends with a scan of every live
customer id (``customers(first: 250, sortKey: ID){nodes{id}}``, 252 points a page), handed to
the engine as `Page.live_keys` and closed with a complete page: the stream is a `snapshot`
stream, so customers the cache holds and the scan did not list are deleted. A first (bulk)
read is complete by itself. Orders, checkouts and products are not reconciled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator

from syncbridge.cleaning import format_datetime
from syncbridge.connectors import Connector, Page, SourceOptions, Stream, StreamOptions
from syncbridge.cursors import Cursor, Resume, stored_moment
from syncbridge.remote import RetryPolicy

from . import shopify_queries as q
from .shopify_bulk import rejoin, run_bulk
from .shopify_client import POLICY_TABLE, GraphQL, make_remote, stream_lines
from .shopify_records import record

log = logging.getLogger(__name__)
STREAMS = tuple(q.SELECTIONS)
LOOKED_UP_MAX = 50_000
"""Products whose collections a bulk read keeps at most (then it starts afresh)."""


class ShopifyOptions(SourceOptions):
    """Which shop, which API version, where the token is, and how the shop is read."""

    shop: str = Field(min_length=1)
    """The shop's myshopify name, `acme` or `acme.myshopify.com` (normalised to the domain)."""
    api_version: str = "2025-10"
    token_env: str = "SHOPIFY_ACCESS_TOKEN"
    """The environment variable holding the Admin API access token (never the config file)."""
    webhook_secret_env: str = "SHOPIFY_WEBHOOK_SECRET"
    """The environment variable holding the app's client secret, for webhook HMACs."""
    base_url: str | None = None
    """Another origin for the Admin API (a proxy, a local fake): default https://{shop}."""
    page_size: int = Field(default=250, ge=1, le=250)
    """Nodes per page of a paged read (fewer when the query cost needs it)."""
    child_page_size: int = Field(default=25, ge=1, le=250)
    """Child nodes (line items, collections) per node within a page; longer lists are fetched
    for their node alone, as many at a time as the query cost allows (83 line items)."""
    line_collections: int = Field(default=q.LINE_COLLECTIONS, ge=0, le=50)
    """Collections read per line item product (the first ones only; 0: none). Each costs a
    point per line item in a page's requested cost: 5 makes 3 orders a page at 25 lines."""
    bulk_first_read: bool = True
    """Read a stream with no cursor yet through a bulk operation (False: paged queries)."""
    bulk_page_size: int = Field(default=1000, ge=1, le=100_000)
    """Records per page handed to the engine from a bulk result file."""
    bulk_poll_s: float = Field(default=2.0, ge=0)
    bulk_timeout_s: float = Field(default=6 * 3600, gt=0)
    overlap_s: int = Field(default=300, ge=0)
    """An incremental read starts this long before the mark (late commits, equal stamps)."""
    reconcile_every_h: float = Field(default=24.0, ge=0)
    """How often the customers stream checks for deleted customers (0: every read)."""
    retries: int = Field(default=4, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    throttle_patience_s: float = Field(default=900.0, gt=0)
    """Most seconds one request waits out Shopify's throttling before the run gives up on it."""

    @field_validator("shop")
    @classmethod
    def _domain(cls, value: str) -> str:
        shop = re.sub(r"^https?://", "", value.strip().lower()).strip("/")
        if "." not in shop:
            shop = f"{shop}.myshopify.com"
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", shop):
            raise ValueError(f"{value!r} is not a shop name like 'acme' or 'acme.myshopify.com'")
        return shop

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-(01|04|07|10)|unstable", value):
            raise ValueError(f"{value!r} is not a Shopify API version like '2025-10'")
        return value

    @field_validator("base_url")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/]+", value):
            raise ValueError("base_url must be an http:// or https:// origin")
        return value.rstrip("/") if value else value


class ShopifyStreamOptions(StreamOptions):
    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STREAMS:
            raise ValueError(f"unknown Shopify stream {value!r} (streams: {', '.join(STREAMS)})")
        return value


class ShopifyStream(Stream):
    def __init__(self, connector: ShopifyConnector, options: ShopifyStreamOptions) -> None:
        self.connector, self.options = connector, options
        self.name = options.name
        self.selection = q.selection(options.name, connector.options.line_collections)
        self.primary_key = ("id",)
        self.cursor_field = "updatedAt"
        self.cursor = Cursor("updatedAt", "datetime")
        self.snapshot = options.name == "customers"  # complete reads: bulk, and reconciliation

    def columns(self) -> list[str]:
        return self.selection.columns()

    def read(self, cursor: Any | None) -> Iterator[Page]:
        resume = cursor if isinstance(cursor, Resume) else self.resume(cursor)
        state = dict(resume.state) if isinstance(resume.state, dict) else {}
        o = self.connector.options
        if resume.mark is None and o.bulk_first_read:
            yield from self._bulk(state)
            return
        since = resume.mark if isinstance(resume.mark, datetime) else None
        started = stored_moment(state.get("bulk_started_at"))
        if since is not None and started is not None:
            since = min(since, started)
        if since is not None:
            since -= timedelta(seconds=o.overlap_s)
        after = {k: v for k, v in state.items() if k != "bulk_started_at"}
        yield from self._pages(since, state, after)
        if self._reconcile_due(after):
            yield from self._reconcile(after)

    # ------------------------------------------------------------------ bulk first read

    def _bulk(self, state: dict[str, Any]) -> Iterator[Page]:
        o, gql = self.connector.options, self.connector.gql
        log.info("%s: first read through a Shopify bulk operation", self.name)
        result = run_bulk(gql, q.bulk_query(self.selection), self.name, o.bulk_poll_s,
                          o.bulk_timeout_s)  # fmt: skip
        final = {**state, "bulk_started_at": result.created_at}
        if self.snapshot:
            final = self._reconciled(final)
        if result.url is None:  # nothing at all: an empty stream
            yield Page([], final, complete=self.snapshot)
            return
        expected = result.root_object_count or None
        nodes: list[dict[str, Any]] = []
        errors: list[tuple[str, str]] = []
        looked_up: dict[str, list[Any]] = {}
        lines = stream_lines(self.connector.remote, result.url, o.retries)
        for item in rejoin(lines, self.selection.child_types, self.name):
            if item.error is not None:
                errors.append(item.error)
            if item.node is not None:
                nodes.append(item.node)
            if len(nodes) >= o.bulk_page_size:
                records = [record(n) for n in self._fill_collections(nodes, looked_up)]
                yield Page(records, None, errors=errors, checkpoint=False, expected=expected)
                nodes, errors = [], []
        records = [record(n) for n in self._fill_collections(nodes, looked_up)]
        yield Page(records, final, errors=errors, complete=self.snapshot, expected=expected)

    def _fill_collections(
        self, nodes: list[dict[str, Any]], looked_up: dict[str, list[Any]]
    ) -> list[dict[str, Any]]:
        """Bulk nodes with each line item's `product.collections` as a paged read selects it
        (`collections(first: K){nodes{...}}`), looked up by product id: a bulk query cannot
        nest that connection (three levels). `looked_up` keeps what this read has fetched,
        so a product bought in many orders is asked for once (bounded: emptied when full)."""
        k, gql = self.selection.line_collections, self.connector.gql
        if k <= 0:
            return nodes
        products = [p for n in nodes for line in n.get("lineItems") or []
                    if isinstance(line, dict) and isinstance(p := line.get("product"), dict)
                    and p.get("id")]  # fmt: skip
        ids = list(dict.fromkeys(str(p["id"]) for p in products))
        if len(looked_up) + len(ids) > LOOKED_UP_MAX:
            looked_up.clear()
        wanted = [gid for gid in ids if gid not in looked_up]
        while wanted:
            limit = min(q.MAX_QUERY_COST, int(gql.bucket.maximum))
            count, cost = q.collections_page(k, limit)
            batch, wanted = wanted[:count], wanted[count:]
            data = gql.execute(q.collections_query(k), {"ids": batch},
                               f"{self.name} line item collections", cost)  # fmt: skip
            found = {str(n["id"]): n for n in (data or {}).get("nodes") or []
                     if isinstance(n, dict) and n.get("id")}  # fmt: skip
            for gid in batch:
                connection = (found.get(gid) or {}).get("collections") or {}
                looked_up[gid] = list(connection.get("nodes") or [])
        for product in products:
            product["collections"] = {"nodes": [dict(c) for c in looked_up[str(product["id"])]]}
        return nodes

    # ------------------------------------------------------------------ paged reads

    def _pages(
        self, since: datetime | None, state: dict[str, Any], final: dict[str, Any]
    ) -> Iterator[Page]:
        """Nodes changed since `since`, page by page. Sorted by updatedAt, every page is a
        checkpoint; unsorted (checkouts), only the last. `state` is saved with the pages, the
        `final` state with the last (a bulk read's start time is kept until then)."""
        o, gql, sel = self.connector.options, self.connector.gql, self.selection
        if gql.bucket.seen_at is None:  # the bucket's size decides the page size: learn it
            self.connector.check()
        query = q.page_query(sel, o.child_page_size)
        search = f"updated_at:>='{format_datetime(since)}'" if since is not None else None
        sorted_read = sel.sort_key == "UPDATED_AT"
        after: str | None = None
        while True:
            limit = min(q.MAX_QUERY_COST, int(gql.bucket.maximum))
            first = q.fitting_page(sel, o.page_size, o.child_page_size, limit)
            cost = q.requested_cost(sel, first, o.child_page_size)
            variables = {"first": first, "after": after, "query": search}
            data = gql.execute(query, variables, f"{self.name} page", cost)
            connection = (data or {}).get(sel.connection) or {}
            nodes = [self._complete_children(n) for n in connection.get("nodes") or []]
            info = connection.get("pageInfo") or {}
            after = info.get("endCursor") if info.get("hasNextPage") else None
            done = after is None
            yield Page([record(n) for n in nodes], dict(final if done else state),
                       checkpoint=sorted_read or done)  # fmt: skip
            if done:
                return

    def _complete_children(self, node: dict[str, Any]) -> dict[str, Any]:
        """The node with every child connection read to its end (pages for this node alone)."""
        gql, sel = self.connector.gql, self.selection
        for child in sel.children:
            connection = node.get(child)
            if not isinstance(connection, dict):
                continue
            nodes = list(connection.get("nodes") or [])
            info = connection.get("pageInfo") or {}
            while info.get("hasNextPage"):
                limit = min(q.MAX_QUERY_COST, int(gql.bucket.maximum))
                first, cost = q.children_page(sel, child, limit)
                variables = {"id": node["id"], "first": first, "after": info["endCursor"]}
                data = gql.execute(q.children_query(sel, child), variables,
                                   f"{self.name} {child} of {node['id']}", cost)  # fmt: skip
                more = ((data or {}).get("node") or {}).get(child) or {}
                nodes.extend(more.get("nodes") or [])
                info = more.get("pageInfo") or {}
            node[child] = {"nodes": nodes}
        return node

    # ------------------------------------------------------------------ reconciliation

    def _reconcile_due(self, state: dict[str, Any]) -> bool:
        if not self.snapshot:
            return False
        hours = self.connector.options.reconcile_every_h
        last = stored_moment(state.get("reconciled_at"))
        now = type(self.connector).now()
        return hours == 0 or last is None or now - last >= timedelta(hours=hours)

    def _reconciled(self, state: dict[str, Any]) -> dict[str, Any]:
        """State after a complete read; with `reconcile_every_h` 0 there is no time to keep."""
        if self.connector.options.reconcile_every_h == 0:
            return {k: v for k, v in state.items() if k != "reconciled_at"}
        return {**state, "reconciled_at": format_datetime(type(self.connector).now())}

    def _reconcile(self, state: dict[str, Any]) -> Iterator[Page]:
        """Every live customer id, as `live_keys`; the last page says the read was complete,
        so the engine deletes the customers the scan did not list."""
        gql, sel = self.connector.gql, self.selection
        log.info("%s: reconciling ids with Shopify (deleted customers)", self.name)
        query, after, final = q.id_scan_query(sel), None, self._reconciled(state)
        while True:
            first = max(1, min(q.MAX_PAGE, int(min(q.MAX_QUERY_COST, gql.bucket.maximum)) - 2))
            variables = {"first": first, "after": after}
            data = gql.execute(query, variables, f"{self.name} id scan", 2 + first)
            connection = (data or {}).get(sel.connection) or {}
            ids = [str(n["id"]) for n in connection.get("nodes") or [] if n.get("id")]
            info = connection.get("pageInfo") or {}
            after = info.get("endCursor") if info.get("hasNextPage") else None
            if after is None:
                yield Page([], final, live_keys=ids, complete=True)
                return
            yield Page([], dict(state), live_keys=ids)


class ShopifyConnector(Connector):
    """Reads one shop through the GraphQL Admin API."""

    source_options = ShopifyOptions
    stream_options = ShopifyStreamOptions
    now: Callable[[], datetime] = staticmethod(lambda: datetime.now(UTC))
    """The wall clock of reconciliation (tests stand in for it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: ShopifyOptions
        o = self.options
        policy = RetryPolicy(POLICY_TABLE, attempts=o.retries + 1, backoff_s=o.retry_backoff_s,
                             backoff_max_s=60)  # fmt: skip
        self.remote = make_remote(policy, o.timeout_s, o.token_env)
        self.gql = GraphQL(self.endpoint, o.token_env, self.remote, o.throttle_patience_s)

    @property
    def endpoint(self) -> str:
        origin = self.options.base_url or f"https://{self.options.shop}"
        return f"{origin}/admin/api/{self.options.api_version}/graphql.json"

    def streams(self) -> list[Stream]:
        return [ShopifyStream(self, s) for s in self.stream_configs]  # type: ignore[arg-type]

    def check(self) -> None:
        self.gql.execute(q.CHECK, {}, "shop", cost=1)


__all__ = ["ShopifyConnector", "ShopifyOptions", "ShopifyStream"]
