"""Shopify bulk query operations: run one, wait for it, stream its JSONL re-joined.

A first read goes through `bulkOperationRunQuery`: Shopify runs the query in the background
and hands back a URL of a JSONL file, one object per line, in which nested connections are
flattened: a child (an order's line item) is a line of its own with ``__parentId`` naming its
parent. Only connections become lines: an object under a non-connection field (a line item's
``product{...}``) stays inline in its node's line, as in a paged answer. Connections nest two
levels deep at most (orders > lineItems; a line item product's collections would be a third,
so the orders bulk query leaves them out and the connector looks them up). The operation is
started with ``groupObjects: true``, so each parent's children come right after it, and
`rejoin` needs to hold one parent and its children at a time, never the file. Statuses:
CREATED, RUNNING, then COMPLETED, or FAILED (with ``errorCode``), CANCELING, CANCELED,
EXPIRED. A completed operation that found nothing has no ``url`` (and ``objectCount`` "0"):
an empty stream, not an error.

A shop runs one bulk query at a time per app before API version 2026-01: when another is
running (another stream's first read, another tool of the same app), Shopify answers with a
user error and the start is tried again every `poll_s` until `timeout_s`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from syncbridge.errors import AuthError, FatalError, RetriableError

from .shopify_client import GraphQL
from .shopify_queries import BULK_POLL, BULK_RUN

log = logging.getLogger("syncbridge_connectors.shopify")
DONE = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})


@dataclass(frozen=True)
class BulkResult:
    url: str | None
    object_count: int
    root_object_count: int
    created_at: str | None
    """When Shopify created the operation (its clock): records changed after it may be missing
    from the file, so the next incremental read starts there at the latest."""


def run_bulk(gql: GraphQL, query: str, what: str, poll_s: float, timeout_s: float) -> BulkResult:
    """Start a bulk query operation and wait until it is done."""
    operation = _start(gql, query, what, poll_s, timeout_s)
    waited = 0.0
    while True:
        data = gql.execute(BULK_POLL, {"id": operation}, f"{what} bulk poll", cost=1)
        node = (data or {}).get("node") or {}
        status = node.get("status")
        if status in DONE:
            return _finished(node, what)
        if waited >= timeout_s:
            raise RetriableError(
                f"Shopify bulk operation for {what} still {status} after {timeout_s:.0f} s"
            )
        type(gql).sleep(poll_s)
        waited += max(poll_s, 0.001)


def _start(gql: GraphQL, query: str, what: str, poll_s: float, timeout_s: float) -> str:
    waited = 0.0
    while True:
        data = gql.execute(BULK_RUN, {"query": query}, f"{what} bulk start", cost=10)
        payload = (data or {}).get("bulkOperationRunQuery") or {}
        errors = payload.get("userErrors") or []
        operation = payload.get("bulkOperation") or {}
        if not errors and operation.get("id"):
            log.info("%s: Shopify bulk operation %s started", what, operation["id"])
            return str(operation["id"])
        busy = [e for e in errors if _in_progress(e)]
        if busy and waited < timeout_s:
            log.info("%s: another bulk query is running on the shop; waiting", what)
            type(gql).sleep(poll_s)
            waited += max(poll_s, 0.001)
            continue
        said = "; ".join(str(e.get("message")) for e in errors) or "no operation returned"
        raise FatalError(f"Shopify refused the bulk query of {what}: {said}")


def _in_progress(error: dict[str, Any]) -> bool:
    return error.get("code") == "OPERATION_IN_PROGRESS" or "in progress" in str(
        error.get("message", "")
    )


def _finished(node: dict[str, Any], what: str) -> BulkResult:
    status, code = node.get("status"), node.get("errorCode")
    if status == "COMPLETED":
        count, roots = int(node.get("objectCount") or 0), int(node.get("rootObjectCount") or 0)
        return BulkResult(node.get("url"), count, roots, node.get("createdAt"))
    if code == "ACCESS_DENIED":
        raise AuthError(f"Shopify bulk operation for {what} failed: ACCESS_DENIED (app scopes)")
    raise RetriableError(
        f"Shopify bulk operation for {what} ended {status}"
        + (f" ({code})" if code else "")
        + "; the next run starts it again"
    )


@dataclass
class Rejoined:
    node: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


def rejoin(lines: Iterator[bytes], children: dict[str, str], what: str) -> Iterator[Rejoined]:
    """Parents with their children re-joined, one at a time, from grouped JSONL lines.

    `children` maps the GID type of a child (``LineItem``) to the connection it belongs to
    (``lineItems``); every parent gets an empty list for each connection, as a paged read's
    ``nodes: []``. A line that is not JSON, or a child whose parent is not the one being
    built, is an error (where, why) and is skipped."""
    parent: dict[str, Any] | None = None
    connections = list(dict.fromkeys(children.values()))
    for number, line in enumerate(lines, start=1):
        where = f"{what} bulk results line {number}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Rejoined(error=(where, f"not JSON: {exc}"))
            continue
        parent_id = item.pop("__parentId", None)
        if parent_id is None:
            if parent is not None:
                yield Rejoined(parent)
            parent = {**item, **{name: [] for name in connections}}
            continue
        connection = children.get(_gid_type(str(item.get("id", ""))))
        if parent is None or parent.get("id") != parent_id or connection is None:
            yield Rejoined(error=(where, f"a child of {parent_id} out of place; skipped"))
            continue
        parent[connection].append(item)
    if parent is not None:
        yield Rejoined(parent)


def _gid_type(gid: str) -> str:
    """`gid://shopify/LineItem/1` -> `LineItem`."""
    parts = gid.split("/")
    return parts[3] if len(parts) > 4 and gid.startswith("gid://") else ""
