"""Shopify GraphQL nodes as syncbridge records: the one shape every Shopify stream stores.

A record is the node as the Admin API returns it for the stream's selection (camelCase keys,
nested objects as they come, ids as GIDs such as ``gid://shopify/Customer/1001``), with each
connection flattened to a plain list of its nodes: ``lineItems: {nodes: [...]}`` or
``lineItems: {edges: [{node: ...}]}`` becomes ``lineItems: [...]``. The paged reads, the
bulk reads (whose children arrive as separate JSONL lines) and the webhooks (REST bodies
converted to nodes) all end in `record`, so a record of one shape reaches the cache whatever
road it took, and its content hash does not change with the road.

A deleted customer is ``{"id": gid, "__deleted__": True}`` (`deleted`).
"""

from __future__ import annotations

from typing import Any

from syncbridge.connectors import DELETED

CONNECTION_KEYS = frozenset({"nodes", "edges", "pageInfo"})


def is_connection(value: Any) -> bool:
    """True for a GraphQL connection object (`nodes` and/or `edges`, maybe `pageInfo`)."""
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= CONNECTION_KEYS
        and ("nodes" in value or "edges" in value)
    )


def connection_nodes(value: dict[str, Any]) -> list[Any]:
    """The nodes of a connection, from `nodes` or from `edges[].node`."""
    if value.get("nodes") is not None:
        return list(value["nodes"])
    return [edge.get("node") for edge in value.get("edges") or [] if isinstance(edge, dict)]


def flatten(value: Any) -> Any:
    """`value` with every connection, at any depth, replaced by the list of its nodes."""
    if isinstance(value, dict):
        if is_connection(value):
            return [flatten(node) for node in connection_nodes(value)]
        return {key: flatten(item) for key, item in value.items()}
    if isinstance(value, list):
        return [flatten(item) for item in value]
    return value


def record(node: dict[str, Any]) -> dict[str, Any]:
    """A stream's record from a raw GraphQL node (any stream: customers, orders, checkouts,
    products). The node is not changed; `__typename` and bulk's `__parentId` are dropped."""
    flat = flatten(node)
    flat.pop("__parentId", None)
    flat.pop("__typename", None)
    return flat  # type: ignore[no-any-return]


def deleted(gid: str) -> dict[str, Any]:
    """The record of a resource deleted at Shopify (a customer gone from the id scan)."""
    return {"id": gid, DELETED: True}


customer_record = order_record = checkout_record = product_record = record
"""One function per stream, for callers that want to say which (they are all `record`)."""

__all__ = [
    "checkout_record",
    "connection_nodes",
    "customer_record",
    "deleted",
    "flatten",
    "is_connection",
    "order_record",
    "product_record",
    "record",
]
