"""What each Shopify stream selects, and the GraphQL documents built from it.

One selection per stream serves every road: the paged query of incremental reads (with its
child connections paged too), the query that pages one node's children further, and the bulk
query of first reads (no `first` on child connections: a bulk operation returns them all, as
separate JSONL lines). Keeping the selection in one place is what makes a record look the
same whichever road it took (see shopify_records.py).

Query cost (Shopify's calculated cost: an object 1, a scalar or enum 0, a connection 2 plus
`first` times the cost of its node) must stay within the single-query limit of 1,000 points,
so the page sizes are derived from it (`fields_cost`, `node_cost`, `fitting_page`): with
`lineItems(first: 250)` a single order would cost more than 1,000, so child connections are
paged in smaller steps (`child_page_size`) and the rest of a long list is fetched for its node
alone.

**Product categories come with the order.** Products have no person, so they are not mapped;
what purchases need of them (type, vendor, tags, collections) is read on each line item's
`product`, collections as `collections(first: K)` (K = `line_collections`, the first K only,
never paged further). A line item then costs 7 + K points (1 + `originalUnitPriceSet{shopMoney}`
2 + `product` 1 + `collections` 2 + K + `variant` 1), an order with `lineItems(first: 25)`
6 + 2 + 25 x 12 = 308 at K = 5: 3 orders a page. A bulk query cannot select those collections:
Shopify allows connections nested two levels deep at most, and orders > lineItems >
product.collections is three (an object between them does not reset the count). So the bulk
query selects `product{id productType vendor tags}` (objects under a non-connection field stay
inline in their node's JSONL line; only connections become lines of their own, with
``__parentId``), and the first read fills each product's collections afterwards, a page of
records at a time, through `nodes(ids:)` queries for the distinct products (`collections_query`,
each product looked up once a read). Both roads hand `record` the same node, so a record read
in bulk equals its paged read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUERY_COST = 1000
"""Shopify refuses a single query whose requested cost is above this (MAX_COST_EXCEEDED)."""
MAX_PAGE = 250
"""The largest `first` a connection takes."""


@dataclass(frozen=True)
class Selection:
    """One stream: its root connection, node type and selected fields."""

    connection: str
    """The QueryRoot connection, e.g. `abandonedCheckouts`."""
    node_type: str
    """The node's GraphQL type (for `... on Order` in child page queries)."""
    fields: str
    """The node's fields other than child connections (objects nested as they come)."""
    children: dict[str, str] = field(default_factory=dict)
    """Child connection name -> its node's fields (flattened to a list in the record)."""
    child_types: dict[str, str] = field(default_factory=dict)
    """A child's GID type -> its connection, to place bulk JSONL lines (`LineItem`)."""
    sort_key: str | None = "UPDATED_AT"
    """The sort key giving updatedAt order; None where the connection has none (abandoned
    checkouts sort by id, created_at, ...): such reads are checkpointed only at their end."""
    bulk_children: dict[str, str] | None = None
    """The children's fields in a bulk query, where they differ (no connection nested below
    a child: bulk queries nest connections two levels deep at most)."""
    line_collections: int = 0
    """Collections per line item product that a bulk read fills by lookup (0: none)."""

    def columns(self) -> list[str]:
        """The record's top-level keys (for `validate`)."""
        return [*_top_level(self.fields), *self.children]


MONEY = "shopMoney{amount currencyCode}"
LINE_COLLECTIONS = 5
"""Collections read per line item product by default (`line_collections`)."""
PRODUCT = "id productType vendor tags"
"""A line item's product: what purchases are categorised by (its collections aside)."""
COLLECTION = "handle title"


def line_product(collections: int) -> str:
    """A line item's `product{...}` selection with its first `collections` collections."""
    if collections <= 0:
        return f"product{{{PRODUCT}}}"
    return f"product{{{PRODUCT} collections(first: {collections}){{nodes{{{COLLECTION}}}}}}}"


def _order_line(collections: int) -> str:
    return (
        f"id name sku quantity vendor originalUnitPriceSet{{{MONEY}}} "
        f"{line_product(collections)} variant{{id}}"
    )


def orders(line_collections: int = LINE_COLLECTIONS) -> Selection:
    """The orders stream, its line items' products with `line_collections` collections."""
    return Selection(
        "orders",
        "Order",
        "id name email customer{id} createdAt updatedAt processedAt cancelledAt currencyCode "
        f"displayFinancialStatus displayFulfillmentStatus totalPriceSet{{{MONEY}}} "
        f"totalRefundedSet{{{MONEY}}}",
        {"lineItems": _order_line(line_collections)},
        {"LineItem": "lineItems"},
        bulk_children={"lineItems": _order_line(0)},
        line_collections=max(0, line_collections),
    )


SELECTIONS: dict[str, Selection] = {
    "customers": Selection(
        "customers",
        "Customer",
        "id firstName lastName defaultEmailAddress{emailAddress marketingState} "
        "defaultPhoneNumber{phoneNumber} "
        "emailMarketingConsent{marketingState marketingOptInLevel consentUpdatedAt} "
        "amountSpent{amount currencyCode} numberOfOrders tags createdAt updatedAt "
        "defaultAddress{company city provinceCode countryCodeV2 zip}",
    ),
    "orders": orders(),
    "checkouts": Selection(
        "abandonedCheckouts",
        "AbandonedCheckout",
        "id createdAt updatedAt completedAt abandonedCheckoutUrl "
        f"customer{{id defaultEmailAddress{{emailAddress}}}} totalPriceSet{{{MONEY}}}",
        {"lineItems": "id title sku quantity variant{id} product{id}"},
        {"AbandonedCheckoutLineItem": "lineItems"},
        sort_key=None,
    ),
    "products": Selection(
        "products",
        "Product",
        "id title productType vendor tags createdAt updatedAt",
        {"collections": "id handle title"},
        {"Collection": "collections"},
    ),
}
"""Every stream with its default options; `selection` builds one for a source's options."""


def selection(stream: str, line_collections: int = LINE_COLLECTIONS) -> Selection:
    """The stream's selection for a source's options (`line_collections` shapes orders)."""
    return orders(line_collections) if stream == "orders" else SELECTIONS[stream]


PAGE_INFO = "pageInfo{hasNextPage endCursor}"


Tree = list[tuple[str, str, "Tree | None"]]
"""A parsed selection: (field name, its arguments as written, its own selection or None)."""
_TOKEN = re.compile(r"\s*(?:(\w+)\s*(\([^)]*\))?|(\{)|(\}))")


def parse_fields(fields: str) -> Tree:
    """`a b(first: 5){c d{e}}` as a tree (the selections this module writes, no fragments)."""
    tree, _ = _parse(fields, 0)
    return tree


def _parse(text: str, at: int) -> tuple[Tree, int]:
    tree: Tree = []
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            if text[at:].strip():
                raise ValueError(f"cannot parse the selection at {text[at : at + 20]!r}")
            break
        name, args, opening, closing = match.groups()
        at = match.end()
        if closing:
            return tree, at
        if opening:
            if not tree or tree[-1][2] is not None:
                raise ValueError("a selection set without its field")
            inner, at = _parse(text, at)
            tree[-1] = (tree[-1][0], tree[-1][1], inner)
        elif name:
            tree.append((name, args or "", None))
    return tree, at


def fields_cost(fields: str) -> int:
    """The requested cost of a node's fields (the node itself not counted): each object 1, a
    connection 2 + `first` x (1 + its node's fields); scalars and `pageInfo` are free."""
    return _tree_cost(parse_fields(fields))


def _tree_cost(tree: Tree) -> int:
    total = 0
    for name, args, inner in tree:
        if inner is None or name == "pageInfo":
            continue
        node = _connection_node(inner)
        if node is None:
            total += 1 + _tree_cost(inner)
            continue
        first = re.search(r"\b(?:first|last):\s*(\d+)", args)
        total += 2 + (int(first.group(1)) if first else MAX_PAGE) * (1 + _tree_cost(node))
    return total


def _connection_node(inner: Tree) -> Tree | None:
    """The node selection of a connection (`nodes{...}` or `edges{node{...}}`), else None."""
    for name, _, sub in inner:
        if name == "nodes" and sub is not None:
            return sub
        if name == "edges" and sub is not None:
            for edge_name, _, node in sub:
                if edge_name == "node" and node is not None:
                    return node
    return None


def node_cost(selection: Selection, child_first: int) -> int:
    """The requested cost of one node with its child connections paged by `child_first`."""
    cost = 1 + fields_cost(selection.fields)
    for fields in selection.children.values():
        cost += 2 + child_first * (1 + fields_cost(fields))
    return cost


def fitting_page(selection: Selection, wanted: int, child_first: int, limit: int) -> int:
    """The largest page (at most `wanted`) whose requested cost stays within `limit`."""
    per_node = node_cost(selection, child_first)
    return max(1, min(wanted, MAX_PAGE, (limit - 2) // per_node))


def requested_cost(selection: Selection, first: int, child_first: int) -> int:
    return 2 + first * node_cost(selection, child_first)


def _children(selection: Selection, child_first: int | None) -> str:
    parts = []
    children = selection.children
    if child_first is None and selection.bulk_children is not None:
        children = selection.bulk_children
    for name, fields in children.items():
        if child_first is None:  # bulk: every child, as JSONL lines of their own
            parts.append(f"{name}{{edges{{node{{{fields}}}}}}}")
        else:
            parts.append(f"{name}(first: {child_first}){{{PAGE_INFO} nodes{{{fields}}}}}")
    return " ".join(parts)


def _node(selection: Selection, child_first: int | None) -> str:
    return f"{selection.fields} {_children(selection, child_first)}".strip()


def page_query(selection: Selection, child_first: int) -> str:
    """One page of the stream's connection: variables `first`, `after`, `query`."""
    sort = f", sortKey: {selection.sort_key}" if selection.sort_key else ""
    return (
        "query SyncbridgePage($first: Int!, $after: String, $query: String) {"
        f"{selection.connection}(first: $first, after: $after, query: $query{sort}){{"
        f"{PAGE_INFO} nodes{{{_node(selection, child_first)}}}}}}}"
    )


def children_query(selection: Selection, child: str) -> str:
    """The next page of one node's child connection: variables `id`, `first`, `after`."""
    fields = selection.children[child]
    return (
        "query SyncbridgeChildren($id: ID!, $first: Int!, $after: String) {"
        f"node(id: $id){{... on {selection.node_type}{{"
        f"{child}(first: $first, after: $after){{{PAGE_INFO} nodes{{{fields}}}}}}}}}}}"
    )


def children_page(selection: Selection, child: str, limit: int) -> tuple[int, int]:
    """(first, requested cost) of the largest page of one node's children within `limit`."""
    per_child = 1 + fields_cost(selection.children[child])
    first = max(1, min(MAX_PAGE, (limit - 3) // per_child))
    return first, 3 + first * per_child


def bulk_query(selection: Selection, search: str | None = None) -> str:
    """The stream's bulk query: the whole connection (filtered by `search`), children too."""
    args = f"(query: {_quoted(search)})" if search else ""
    return f"{{{selection.connection}{args}{{edges{{node{{{_node(selection, None)}}}}}}}}}"


def collections_query(collections: int) -> str:
    """The first `collections` collections of products by id (a bulk read's line items):
    variable `ids`. Not a bulk query (bulk queries may not use `nodes`)."""
    return (
        "query SyncbridgeCollections($ids: [ID!]!) {nodes(ids: $ids){... on Product{id "
        f"collections(first: {collections}){{nodes{{{COLLECTION}}}}}}}}}}}"
    )


def collections_page(collections: int, limit: int) -> tuple[int, int]:
    """(ids, requested cost) of the largest `collections_query` within `limit`, counting each
    id as a Product of its own (1 + the connection's 2 + `collections`): the dearest reading
    of Shopify's "an interface costs its dearest selection", so a query never exceeds it."""
    per_id = 1 + 2 + collections * (1 + fields_cost(COLLECTION))
    ids = max(1, min(MAX_PAGE, limit // per_id))
    return ids, ids * per_id


def id_scan_query(selection: Selection) -> str:
    """Pages of live ids only (the delete reconciliation): variables `first`, `after`."""
    return (
        "query SyncbridgeIds($first: Int!, $after: String) {"
        f"{selection.connection}(first: $first, after: $after, sortKey: ID){{"
        f"{PAGE_INFO} nodes{{id}}}}}}"
    )


BULK_RUN = """
mutation SyncbridgeBulk($query: String!) {
  bulkOperationRunQuery(query: $query, groupObjects: true) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""
"""`groupObjects: true`: children directly below their parent (the 2025-10 default, no longer
from 2026-01), which lets the JSONL be re-joined one parent at a time."""

BULK_POLL = """
query SyncbridgeBulkPoll($id: ID!) {
  node(id: $id) {
    ... on BulkOperation {
      id status errorCode objectCount rootObjectCount url partialDataUrl createdAt completedAt
    }
  }
}
"""

CHECK = "query SyncbridgeCheck { shop { name myshopifyDomain } }"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _top_level(fields: str) -> list[str]:
    """The names at depth 0 of a selection (`a b{c} d` -> a, b, d)."""
    names, depth, word = [], 0, ""
    for ch in fields + " ":
        if ch == "{":
            if depth == 0 and word:
                names.append(word)
            depth, word = depth + 1, ""
        elif ch == "}":
            depth -= 1
        elif ch.isspace():
            if depth == 0 and word:
                names.append(word)
            word = ""
        elif depth == 0:
            word += ch
    return list(dict.fromkeys(names))
