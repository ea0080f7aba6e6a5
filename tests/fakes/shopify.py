"""A stateful fake of Shopify's GraphQL Admin API, over real HTTP on 127.0.0.1.

Facts are from /work/shared/reference/sources.md section 2 and shopify.dev (2025-10).

Requests
    ``POST /admin/api/{version}/graphql.json`` with ``X-Shopify-Access-Token``; a wrong or
    missing token is 401 ``{"errors": "[API] Invalid API key or access token ..."}``. The body's
    ``query`` is parsed and validated by graphql-core against the schema in shopify_schema.py
    (the real names, types and arguments), so an unknown field, connection or argument is a
    GraphQL error (HTTP 200, ``errors`` with ``locations``), as at Shopify.

Connections
    ``first`` or ``last`` is required (at most 250); cursors are opaque (base64 of the sort
    position), so a record updated while a client pages moves to its new place, as with
    Shopify's keyset cursors. ``sortKey`` sorts (then by id); ``query`` takes the search syntax
    ``updated_at:>='2024-01-01T00:00:00Z'`` (also ``<``, ``<=``, ``>``, ``:`` and
    ``created_at``, ``id``), terms joined by spaces or AND; another field is an error here
    (Shopify would ignore it with a search warning: the fake is stricter).

Cost and throttling
    Every answer carries ``extensions.cost``: the requested cost is computed from the query
    (object 1, scalar 0, connection 2 + first x its node's cost, an interface the dearest of
    its fragments, ``nodes(ids:)`` that for each id, the bulk mutation 10), the actual cost
    from what was returned. A query over 1,000 is refused (MAX_COST_EXCEEDED). The leaky
    bucket (``maximum_available`` 1000, ``restore_rate`` 50 a second by default) refills on
    ``clock`` (``time.monotonic``, or a test's); a request whose requested cost exceeds what
    is available is answered ``THROTTLED`` (HTTP 200, nothing done, nothing charged).

Bulk operations
    ``bulkOperationRunQuery`` validates the inner query (at least one connection, at most
    five, nested two deep at most, counted through objects: orders > lineItems > product >
    collections is three; no top-level ``node`` or ``nodes``), runs it at once on the data as
    it is (no ``first`` needed), and returns an operation CREATED; each poll (``node(id:)`` or
    ``currentBulkOperation``) moves it on: RUNNING, then COMPLETED on poll ``bulk_polls``
    (with ``url`` to the JSONL it serves, ``objectCount`` and ``rootObjectCount`` as text;
    ``url`` null when nothing matched), or FAILED when ``fail_next_bulk`` said so. Children
    are lines of their own with ``__parentId``, right below their parent with
    ``groupObjects: true`` and all after the parents otherwise; an object under a
    non-connection field (a line item's ``product{...}``) stays inline in its node's line.
    One bulk query runs at a time: another start is a user error (OPERATION_IN_PROGRESS).

Webhooks
    ``subscribe(url, secret, topics=...)``: from then on every change the data methods make
    (``add_customer``, ``update`` and ``delete`` of a customer; ``add_order`` and ``update``
    of an order; ``add_checkout`` and ``update`` of an abandoned checkout) is delivered as
    Shopify's webhook (customers/create|update|delete, orders/create|updated,
    checkouts/create|update): the object's REST body rendered from the fake's state
    (shopify_rest.py), with every header Shopify sends and a real HMAC under ``secret``
    (``shop_domain``, ``api_version``), POSTed from a background thread that retries a non-2xx
    answer, a timeout or a refused connection with the same webhook id and body
    (shopify_sender.py; ``retry_delays`` and ``timeout_s`` are the subscription's). Sabotage:
    ``deliver_twice_next``, ``reorder_next``; inspection: ``webhook_attempts``,
    ``wait_for_webhooks``. Money is printed as GraphQL prints a Decimal (``"10.0"``) and as
    REST writes it (``"10.00"``), times in UTC (``…Z``) and in the shop's zone (-05:00).

Test-facing API (:class:`FakeShopify`)
    Data: ``add_customer``, ``update``, ``delete``, ``add_order`` (a line item's ``product``
    is a product's id: its type, vendor, tags and collections are served under it),
    ``add_checkout``, ``add_product``, ``get``, ``records``; clock of the data: ``now``,
    ``advance``, ``set_clock``; bucket: ``bucket``, ``clock``; sabotage: ``fail_next`` (5xx,
    once or n times), ``throttle_next`` (HTTP 429 with ``Retry-After``),
    ``throttle_graphql_next`` (THROTTLED in a 200), ``reset_next``, ``revoke_token``,
    ``fail_next_bulk``; inspection: ``requests`` (every request: path, headers, query,
    variables).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import Message
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    execute_sync,
    get_named_type,
    get_nullable_type,
    is_interface_type,
    is_list_type,
    is_object_type,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values

from . import shopify_rest as rest
from .http import LoopbackFake, take_fault
from .shopify_schema import ROOT_CONNECTIONS, SDL
from .shopify_sender import (
    API_VERSION,
    RETRY_DELAYS,
    TIMEOUT_S,
    Attempt,
    Delivery,
    Subscription,
    WebhookSender,
    webhook_headers,
)

JSON = dict[str, Any]
MAX_COST = 1000
MAX_FIRST = 250
DEFAULT_CLOCK = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def gid_type(value: str) -> str:
    parts = value.split("/")
    return parts[3] if len(parts) == 5 else ""


def gid_number(value: str) -> int:
    tail = value.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def money(amount: Any, currency: str = "USD") -> JSON:
    """A MoneyV2 as the Admin API prints it: its Decimal without trailing zeros but one
    (`"10.0"`, `"19.9"`, `"0.0"`), not two decimals as REST writes money (`"10.00"`)."""
    return {"amount": decimal_text(amount), "currencyCode": currency}


def decimal_text(amount: Any) -> str:
    text = format(Decimal(str(amount)).quantize(Decimal("0.01")).normalize(), "f")
    return text if "." in text else f"{text}.0"


def money_bag(amount: Any, currency: str = "USD") -> JSON:
    return {"shopMoney": money(amount, currency), "presentmentMoney": money(amount, currency)}


# ------------------------------------------------------------------------ the leaky bucket


@dataclass
class Bucket:
    maximum: float = 1000.0
    restore_rate: float = 50.0
    available: float = 1000.0
    clock: Callable[[], float] = time.monotonic
    last: float | None = None

    def refill(self) -> None:
        now = self.clock()
        if self.last is not None:
            self.available = min(
                self.maximum, self.available + (now - self.last) * self.restore_rate
            )
        self.last = now

    def status(self) -> JSON:
        return {"maximumAvailable": self.maximum, "currentlyAvailable": int(self.available),
                "restoreRate": self.restore_rate}  # fmt: skip


# ------------------------------------------------------------------------ search syntax

_TERM = re.compile(r"""(\w+):(<=|>=|<|>)?('[^']*'|"[^"]*"|\S+)""")
_SEARCHABLE = {"updated_at": "updatedAt", "created_at": "createdAt", "id": "id"}


def search_filter(text: str | None) -> Callable[[JSON], bool]:
    """A predicate for Shopify's search syntax (the subset the fake knows; others: error)."""
    if not text or not text.strip():
        return lambda _: True
    checks: list[Callable[[JSON], bool]] = []
    for word in re.findall(r"""\S+:(?:'[^']*'|"[^"]*"|\S+)|\S+""", text):
        if word.upper() == "AND":
            continue
        match = _TERM.fullmatch(word)
        if match is None or match.group(1) not in _SEARCHABLE:
            raise GraphQLError(f"the fake does not know the search term {word!r}")
        name, op, raw = match.group(1), match.group(2) or "=", match.group(3).strip("'\"")
        key = _SEARCHABLE[name]
        if key == "id":
            want: Any = int(raw)
            get: Callable[[JSON], Any] = lambda r: gid_number(r["id"])  # noqa: E731
        else:
            want = _moment(raw)
            get = lambda r, k=key: _moment(r[k]) if r.get(k) else None  # noqa: E731
        checks.append(_compare(get, op, want))
    return lambda record: all(check(record) for check in checks)


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise GraphQLError(f"invalid date in search: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _compare(get: Callable[[JSON], Any], op: str, want: Any) -> Callable[[JSON], bool]:
    def check(record: JSON) -> bool:
        have = get(record)
        if have is None:
            return False
        return {"=": have == want, "<": have < want, "<=": have <= want, ">": have > want,
                ">=": have >= want}[op]  # fmt: skip

    return check


# ------------------------------------------------------------------------ connections

SORT_FIELDS = {"UPDATED_AT": "updatedAt", "CREATED_AT": "createdAt", "PROCESSED_AT": "processedAt",
               "TITLE": "title", "ID": None}  # fmt: skip


def _encode(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor!r}") from None


def paginate(
    items: list[JSON], args: JSON, bulk: bool, positions: Callable[[JSON, int], Any]
) -> JSON:
    """A connection of `items` (already sorted), paged by `first`/`after`."""
    first, after = args.get("first"), args.get("after")
    if args.get("last") is not None or args.get("before") is not None:
        raise GraphQLError("the fake pages forwards only (first/after)")
    if not bulk:
        if first is None:
            raise GraphQLError("you must provide one of first or last")
        if first > MAX_FIRST or first < 0:
            raise GraphQLError(
                f"The maximum number of items per page is {MAX_FIRST} (first: {first})"
            )
    keyed = [(positions(item, index), item) for index, item in enumerate(items)]
    if after is not None:
        mark = _decode(after)
        keyed = [(p, i) for p, i in keyed if p > mark] if not args.get("reverse") else [
            (p, i) for p, i in keyed if p < mark]  # fmt: skip
    page = keyed if bulk or first is None else keyed[:first]
    return {
        "edges": [{"cursor": _encode(p), "node": i} for p, i in page],
        "nodes": [i for _, i in page],
        "pageInfo": {"hasNextPage": len(page) < len(keyed), "hasPreviousPage": after is not None,
                     "startCursor": _encode(page[0][0]) if page else None,
                     "endCursor": _encode(page[-1][0]) if page else None},
    }  # fmt: skip


# ------------------------------------------------------------------------ query cost


def query_cost(schema: GraphQLSchema, op: OperationDefinitionNode, variables: JSON,
               data: JSON | None = None) -> int:  # fmt: skip
    """Shopify's calculated cost of an operation; with `data`, the actual cost of its result."""
    root = schema.mutation_type if op.operation.value == "mutation" else schema.query_type
    assert root is not None
    if op.operation.value == "mutation":
        return 10
    return _selection_cost(schema, root, op.selection_set, variables, data)


def _selection_cost(schema: GraphQLSchema, parent: Any, selection: SelectionSetNode | None,
                    variables: JSON, data: Any) -> int:  # fmt: skip
    if selection is None:
        return 0
    total = 0
    for node in selection.selections:
        if isinstance(node, InlineFragmentNode):
            continue  # counted by the interface field that holds it
        if not isinstance(node, FieldNode) or node.name.value.startswith("__"):
            continue
        field_def = parent.fields[node.name.value]
        named = get_named_type(field_def.type)
        key = node.alias.value if node.alias else node.name.value
        value = data.get(key) if isinstance(data, dict) else None
        if named.name.endswith("Connection"):
            args = get_argument_values(field_def, node, variables)
            node_type = schema.get_type(named.name.removesuffix("Connection"))
            inner = _connection_node_selection(node)
            if data is not None:
                items = (value or {}).get("nodes") or [
                    e["node"] for e in (value or {}).get("edges") or []
                ]
                total += 2 + sum(
                    1 + _selection_cost(schema, node_type, inner, variables, i) for i in items
                )
            else:
                count = args.get("first") or args.get("last") or MAX_FIRST
                total += 2 + count * (
                    1 + _selection_cost(schema, node_type, inner, variables, None)
                )
        elif is_interface_type(named) and is_list_type(get_nullable_type(field_def.type)):
            # `nodes(ids:)`: each id an object of its own (requested), each found one (actual)
            if data is not None:
                items = [i for i in value or [] if i is not None]
            else:
                ids = get_argument_values(field_def, node, variables).get("ids") or []
                items = [None] * len(ids)
            total += sum(_interface_cost(schema, node, variables, i) for i in items)
        elif is_interface_type(named):
            if data is not None and value is None:
                continue
            total += _interface_cost(schema, node, variables, value)
        elif is_object_type(named):
            if data is not None and value is None:
                continue
            if named.name == "PageInfo":
                continue
            total += 1 + _selection_cost(schema, named, node.selection_set, variables, value)
    return total


def _interface_cost(schema: GraphQLSchema, node: FieldNode, variables: JSON, value: Any) -> int:
    """An interface: 1 + the dearest of its fragments (with `value`, of what was returned)."""
    costs, typename = [0], _typename(value)
    for frag in node.selection_set.selections if node.selection_set else []:
        if isinstance(frag, InlineFragmentNode) and frag.type_condition:
            if typename and frag.type_condition.name.value != typename:
                continue  # a returned object is costed by its own type's fragment
            frag_type = schema.get_type(frag.type_condition.name.value)
            costs.append(_selection_cost(schema, frag_type, frag.selection_set, variables, value))
    return 1 + max(costs)


def _typename(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return str(value.get("__typename") or gid_type(str(value.get("id", ""))))


def _connection_node_selection(node: FieldNode) -> SelectionSetNode | None:
    for sub in node.selection_set.selections if node.selection_set else []:
        if isinstance(sub, FieldNode) and sub.name.value == "nodes":
            return sub.selection_set
        if isinstance(sub, FieldNode) and sub.name.value == "edges" and sub.selection_set:
            for inner in sub.selection_set.selections:
                if isinstance(inner, FieldNode) and inner.name.value == "node":
                    return inner.selection_set
    return None


# ------------------------------------------------------------------------ the shop


@dataclass
class BulkOperation:
    id: str
    query: str
    created_at: str
    lines: list[bytes]
    roots: int
    polls: int = 0
    status: str = "CREATED"
    error_code: str | None = None
    completed_at: str | None = None
    fail_with: str | None = None

    def node(self, base_url: str) -> JSON:
        done = self.status == "COMPLETED"
        url = (
            f"{base_url}/bulk/{gid_number(self.id)}.jsonl?X-Goog-Signature=fake"
            if done and self.lines
            else None
        )
        return {
            "__typename": "BulkOperation", "id": self.id, "status": self.status,
            "errorCode": self.error_code, "query": self.query, "type": "QUERY",
            "objectCount": str(len(self.lines) if done else 0),
            "rootObjectCount": str(self.roots if done else 0),
            "fileSize": str(sum(len(line) for line in self.lines)) if url else None,
            "url": url, "partialDataUrl": None, "createdAt": self.created_at,
            "completedAt": self.completed_at,
        }  # fmt: skip


@dataclass
class Context:
    fake: FakeShopify
    bulk: bool = False


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False

    @classmethod
    def json(cls, status: int, doc: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(doc).encode(), "application/json", headers or {})


@dataclass
class Fault:
    remaining: int
    path_contains: str | None
    status: int | None
    retry_after: str | None = None
    graphql_throttle: bool = False


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    query: str | None = None
    variables: JSON = field(default_factory=dict)


class FakeShopify(LoopbackFake):
    """The fake shop and server; see the module docstring."""

    def __init__(self, *, token: str = "shpat_fake0123456789abcdef", clock: datetime = DEFAULT_CLOCK,
                 maximum_available: float = 1000, restore_rate: float = 50, bulk_polls: int = 2,
                 bucket_clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.token = token
        self.bulk_polls = bulk_polls
        self.bucket = Bucket(maximum_available, restore_rate, maximum_available, bucket_clock)
        self.requests: list[RecordedRequest] = []
        self.throttled = 0  # THROTTLED answers given (scripted or by the bucket)
        self.store: dict[str, dict[str, JSON]] = {t: {} for t in (
            "Customer", "Order", "AbandonedCheckout", "Product", "Collection", "ProductVariant")}  # fmt: skip
        self.bulk_operations: dict[str, BulkOperation] = {}
        self._clock = clock
        self._ids = itertools.count(1001)
        self._faults: list[Fault] = []
        self._bulk_failures: list[str] = []
        self._lock = threading.RLock()
        self.schema = build_schema(SDL)
        self._wire()
        self.shop_domain = "acme.myshopify.com"
        self.api_version = API_VERSION
        self.webhooks = WebhookSender()
        self.subscriptions: list[Subscription] = []
        self._twice = 0
        self._reorder = 0
        self._held: list[Delivery] = []
        self.customer_webhook_omits: tuple[str, ...] = ()
        """Keys left out of customers/create|update bodies: from API version 2025-01 Shopify
        sends no `tags`, `email_marketing_consent` or `sms_marketing_consent` there
        (`rest.NOT_IN_CUSTOMER_WEBHOOKS`); by default the fake sends the whole resource."""

    # --- connection

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.webhooks.close()
        super().stop()

    # --- webhooks

    def subscribe(self, url: str, secret: str, topics: Iterable[str] = rest.TOPICS, *,
                  retry_delays: Sequence[float] = RETRY_DELAYS,
                  timeout_s: float = TIMEOUT_S) -> Subscription:  # fmt: skip
        """From now on, each change the data methods make to a customer, an order or an
        abandoned checkout is POSTed to `url` as Shopify's webhook of `topics` would be: the
        object's REST body rendered from the state after the change (shopify_rest.py), signed
        with `secret`, from a background thread (shopify_sender.py). `retry_delays` replace
        Shopify's 8 retries over 4 hours (tests: tiny ones); `timeout_s` its 5 s."""
        unknown = set(topics) - rest.TOPICS
        if unknown:
            raise ValueError(f"the fake sends no {sorted(unknown)} webhooks")
        subscription = Subscription(url, secret, frozenset(topics), tuple(retry_delays),
                                    timeout_s)  # fmt: skip
        with self._lock:
            self.subscriptions.append(subscription)
        return subscription

    def deliver_twice_next(self, n: int = 1) -> None:
        """The next n deliveries are each sent twice (same webhook id, same body), as
        Shopify's at-least-once delivery may."""
        with self._lock:
            self._twice += n

    def reorder_next(self, n: int = 2) -> None:
        """The next n deliveries are held until the n-th is triggered, then sent newest
        first (Shopify does not promise the order: two updates may arrive swapped)."""
        with self._lock:
            self._reorder, self._held = n, []

    def wait_for_webhooks(self, timeout: float = 60.0) -> None:
        """Until every delivery is answered 2xx or given up (retries included)."""
        self.webhooks.wait(timeout)

    @property
    def webhook_attempts(self) -> list[Attempt]:
        """Every POST so far, in order, with its status (None: timeout, refused)."""
        return list(self.webhooks.attempts)

    def _emit(self, kind: str, change: str, record: JSON) -> None:
        """Queue the webhook of this change to every subscription taking its topic (with
        the lock held: the body is the state as of the change, kept for its retries)."""
        topic = rest.TOPIC_OF.get((kind, change))
        wanted = [s for s in self.subscriptions if topic in s.topics]
        if topic is None or not wanted:
            return
        document = rest.payload(topic, record, self._node)
        if topic in ("customers/create", "customers/update"):
            for key in self.customer_webhook_omits:
                document.pop(key, None)
        body = json.dumps(document).encode()
        event_id = str(uuid.uuid4())
        triggered = self._clock.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        for subscription in wanted:
            headers = webhook_headers(topic, body, subscription.secret, self.shop_domain,
                                      str(uuid.uuid4()), event_id, triggered,
                                      self.api_version)  # fmt: skip
            delivery = Delivery(subscription, topic, body, headers)
            if self._twice > 0:
                self._twice -= 1
                delivery.copies = 2
            if self._reorder > 0:
                self._held.append(delivery)
                if len(self._held) < self._reorder:
                    continue
                held, self._reorder, self._held = self._held, 0, []
                for late in reversed(held):
                    self.webhooks.put(late)
                continue
            self.webhooks.put(delivery)

    # --- clock of the data

    @property
    def now(self) -> datetime:
        return self._clock

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._clock += timedelta(seconds=seconds)

    def set_clock(self, moment: datetime) -> None:
        with self._lock:
            self._clock = moment

    # --- data

    def _new(self, kind: str, fields: JSON) -> str:
        stamp = iso(self._clock)
        record = {
            "id": gid(kind, next(self._ids)),
            "createdAt": stamp,
            "updatedAt": stamp,
            **fields,
        }
        self.store[kind][record["id"]] = record
        self._emit(kind, "create", record)
        return str(record["id"])

    def add_customer(self, email: str | None = None, first_name: str | None = None, *,
                     last_name: str | None = None, marketing_state: str = "NOT_SUBSCRIBED",
                     tags: list[str] | None = None, **fields: Any) -> str:  # fmt: skip
        """A customer (its email as defaultEmailAddress); other fields as the API names them."""
        with self._lock:
            record: JSON = {
                "firstName": first_name, "lastName": last_name,
                "displayName": " ".join(p for p in (first_name, last_name) if p) or (email or ""),
                "defaultEmailAddress": {"emailAddress": email, "marketingState": marketing_state}
                if email else None,
                "email": email, "defaultPhoneNumber": None,
                "emailMarketingConsent": {"marketingState": marketing_state,
                                          "marketingOptInLevel": "SINGLE_OPT_IN"
                                          if marketing_state == "SUBSCRIBED" else None,
                                          "consentUpdatedAt": None} if email else None,
                "amountSpent": money(0), "numberOfOrders": "0", "tags": tags or [],
                "defaultAddress": None,
            }  # fmt: skip
            return self._new("Customer", {**record, **fields})

    def update(self, record_id: str, **fields: Any) -> None:
        """Change fields (as the API names them); updatedAt moves to the clock's time. An
        `email` also changes defaultEmailAddress."""
        with self._lock:
            record = self.store[gid_type(record_id)][record_id]
            if "email" in fields and record.get("defaultEmailAddress") is not None:
                record["defaultEmailAddress"] = {**record["defaultEmailAddress"],
                                                 "emailAddress": fields["email"]}  # fmt: skip
            record.update(fields)
            record["updatedAt"] = iso(self._clock)
            self._emit(gid_type(record_id), "update", record)

    def delete(self, record_id: str) -> None:
        with self._lock:
            record = self.store[gid_type(record_id)].pop(record_id)
            self._emit(gid_type(record_id), "delete", record)

    def get(self, record_id: str) -> JSON:
        with self._lock:
            return dict(self.store[gid_type(record_id)][record_id])

    def records(self, kind: str) -> list[JSON]:
        with self._lock:
            return [dict(r) for r in self.store[kind].values()]

    def add_product(self, title: str, *, product_type: str = "", vendor: str = "Acme",
                    tags: list[str] | None = None, collections: list[str] | None = None) -> str:  # fmt: skip
        """A product; `collections` are titles (each collection made once)."""
        with self._lock:
            members = [self._collection(t) for t in collections or []]
            return self._new("Product", {"title": title, "handle": _handle(title),
                                         "productType": product_type, "vendor": vendor,
                                         "tags": tags or [], "collections": members})  # fmt: skip

    def _collection(self, title: str) -> str:
        for record in self.store["Collection"].values():
            if record["title"] == title:
                return str(record["id"])
        return self._new("Collection", {"title": title, "handle": _handle(title)})

    def _line(self, kind: str, item: JSON, order: bool) -> JSON:
        product = item.get("product")
        variant = self._new("ProductVariant", {"title": "Default Title", "sku": item.get("sku")})
        line = {"id": gid(kind, next(self._ids)), "sku": item.get("sku"),
                "quantity": int(item.get("quantity", 1)), "product": product, "variant": variant,
                "originalUnitPriceSet": money_bag(item.get("price", 10))}  # fmt: skip
        title = item.get("title") or item.get("name") or "Item"
        if order:
            line.update({"name": title, "title": title, "vendor": item.get("vendor")})
        else:
            line["title"] = title
        return line

    def add_order(self, customer: str | None, line_items: list[JSON], *, email: str | None = None,
                  cancelled: bool = False, financial_status: str = "PAID",
                  currency: str = "USD") -> str:  # fmt: skip
        """An order of `line_items` ({title, sku, quantity, price, vendor, product})."""
        with self._lock:
            number = len(self.store["Order"]) + 1001
            total = sum(float(i.get("price", 10)) * int(i.get("quantity", 1)) for i in line_items)
            stamp = iso(self._clock)
            return self._new("Order", {
                "name": f"#{number}", "email": email, "customer": customer, "processedAt": stamp,
                "cancelledAt": stamp if cancelled else None, "currencyCode": currency,
                "displayFinancialStatus": financial_status,
                "displayFulfillmentStatus": "UNFULFILLED",
                "totalPriceSet": money_bag(total, currency), "totalRefundedSet": money_bag(0, currency),
                "lineItems": [self._line("LineItem", i, True) for i in line_items],
            })  # fmt: skip

    def add_checkout(self, customer: str | None, line_items: list[JSON], *,
                     completed: bool = False) -> str:  # fmt: skip
        with self._lock:
            number = next(self._ids)
            total = sum(float(i.get("price", 10)) * int(i.get("quantity", 1)) for i in line_items)
            return self._new("AbandonedCheckout", {
                "name": f"#{number}", "customer": customer,
                "abandonedCheckoutUrl": f"https://acme.myshopify.com/checkouts/{number}/recover",
                "completedAt": iso(self._clock) if completed else None,
                "totalPriceSet": money_bag(total),
                "lineItems": [self._line("AbandonedCheckoutLineItem", i, False) for i in line_items],
            })  # fmt: skip

    # --- sabotage

    def fail_next(self, n: int = 1, status: int = 503, path_contains: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(n, path_contains, status))

    def reset_next(self, n: int = 1, path_contains: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(n, path_contains, None))

    def throttle_next(self, n: int = 1, retry_after: float = 1.0) -> None:
        """The next n requests are HTTP 429 with Retry-After."""
        with self._lock:
            self._faults.append(Fault(n, None, 429, retry_after=f"{retry_after:g}"))

    def throttle_graphql_next(self, n: int = 1) -> None:
        """The next n GraphQL requests are THROTTLED (HTTP 200), whatever the bucket holds."""
        with self._lock:
            self._faults.append(Fault(n, "graphql.json", 200, graphql_throttle=True))

    def revoke_token(self) -> None:
        with self._lock:
            self.token = "revoked-" + self.token

    def fail_next_bulk(self, error_code: str = "INTERNAL_SERVER_ERROR") -> None:
        with self._lock:
            self._bulk_failures.append(error_code)

    # --- HTTP

    def _handle(self, method: str, target: str, raw: bytes, headers: Message) -> Reply:
        path = target.split("?", 1)[0]
        with self._lock:
            recorded = RecordedRequest(method, path, dict(headers.items()))
            self.requests.append(recorded)
            fault = take_fault(self._faults, path)
            if fault is not None and not fault.graphql_throttle:
                if fault.status is None:
                    return Reply(0, reset=True)
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return Reply.json(fault.status, {"errors": "Scripted failure"}, extra)
            if method == "GET" and path.startswith("/bulk/"):
                return self._bulk_file(path)
            match = re.fullmatch(r"/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json", path)
            if method != "POST" or match is None:
                return Reply.json(404, {"errors": "Not Found"})
            if headers.get("X-Shopify-Access-Token") != self.token:
                return Reply.json(401, {"errors": INVALID_TOKEN})
            try:
                body = json.loads(raw or b"null")
                query, variables = body["query"], body.get("variables") or {}
            except (ValueError, KeyError, TypeError):
                return Reply.json(
                    400, {"errors": {"query": "Required parameter missing or invalid"}}
                )
            recorded.query, recorded.variables = query, variables
            return Reply.json(200, self._graphql(query, variables, bool(fault)))

    def _bulk_file(self, path: str) -> Reply:
        number = re.fullmatch(r"/bulk/(\d+)\.jsonl", path)
        operation = (
            self.bulk_operations.get(gid("BulkOperation", int(number.group(1)))) if number else None
        )
        if operation is None or operation.status != "COMPLETED":
            return Reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        return Reply(200, b"".join(line + b"\n" for line in operation.lines), "application/jsonl")

    def _graphql(self, query: str, variables: JSON, throttle: bool) -> JSON:
        try:
            document = parse(query)
        except GraphQLError as err:
            return {"errors": [err.formatted]}
        errors = validate(self.schema, document)
        if errors:
            return {"errors": [e.formatted for e in errors]}
        op = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        coerced = get_variable_values(self.schema, op.variable_definitions or (), variables)
        if isinstance(coerced, list):
            return {"errors": [e.formatted for e in coerced]}
        requested = query_cost(self.schema, op, coerced)
        self.bucket.refill()
        cost: JSON = {"requestedQueryCost": requested, "actualQueryCost": None,
                      "throttleStatus": self.bucket.status()}  # fmt: skip
        if requested > MAX_COST:
            message = (f"Query cost is {requested}, which exceeds the single query max cost "
                       f"limit ({MAX_COST}).")  # fmt: skip
            return {"errors": [{"message": message, "extensions": {
                "code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": MAX_COST}}],
                "extensions": {"cost": cost}}  # fmt: skip
        if throttle or requested > self.bucket.available:
            self.throttled += 1
            return {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": cost}}  # fmt: skip
        result = execute_sync(self.schema, document, context_value=Context(self),
                              variable_values=variables)  # fmt: skip
        answer: JSON = {"data": result.data}
        actual = query_cost(self.schema, op, coerced, result.data) if result.data else 0
        self.bucket.available -= actual
        cost.update(actualQueryCost=actual, throttleStatus=self.bucket.status())
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
        answer["extensions"] = {"cost": cost}
        return answer

    # --- resolvers

    def _wire(self) -> None:
        schema = self.schema
        query, mutation = schema.query_type, schema.mutation_type
        assert query is not None and mutation is not None
        for name, kind in ROOT_CONNECTIONS.items():
            query.fields[name].resolve = self._root_resolver(kind)
        query.fields["node"].resolve = lambda _, info, id: self._node(id)
        query.fields["nodes"].resolve = lambda _, info, ids: [self._node(i) for i in ids]
        query.fields["currentBulkOperation"].resolve = lambda _, info, **a: self._current_bulk()
        query.fields["shop"].resolve = lambda *_: {
            "name": "Acme",
            "myshopifyDomain": self.shop_domain,
        }
        mutation.fields["bulkOperationRunQuery"].resolve = self._run_bulk
        node_iface = schema.get_type("Node")
        node_iface.resolve_type = lambda value, *_: value.get("__typename") or gid_type(value["id"])  # type: ignore[union-attr]
        for type_name, child in (("Order", "lineItems"), ("AbandonedCheckout", "lineItems"),
                                 ("Product", "collections")):  # fmt: skip
            schema.get_type(type_name).fields[child].resolve = self._child_resolver(child)  # type: ignore[union-attr]
        for type_name in ("Order", "AbandonedCheckout"):
            schema.get_type(type_name).fields["customer"].resolve = self._ref("customer")  # type: ignore[union-attr]
        for type_name in ("LineItem", "AbandonedCheckoutLineItem"):
            fields = schema.get_type(type_name).fields  # type: ignore[union-attr]
            fields["product"].resolve = self._ref("product")
            fields["variant"].resolve = self._ref("variant")

    def _ref(self, key: str) -> Callable[..., Any]:
        def resolve(source: JSON, info: Any) -> Any:
            value = source.get(key)
            return self._node(value) if isinstance(value, str) else value

        return resolve

    def _root_resolver(self, kind: str) -> Callable[..., Any]:
        def resolve(_: Any, info: Any, **args: Any) -> JSON:
            sort = SORT_FIELDS.get(args.get("sortKey", "ID"))
            wanted = search_filter(args.get("query"))
            items = [r for r in self.store[kind].values() if wanted(r)]

            def position(item: JSON, _: int) -> Any:
                return (
                    [item.get(sort) or "", gid_number(item["id"])]
                    if sort
                    else [gid_number(item["id"])]
                )

            items.sort(key=lambda r: position(r, 0), reverse=bool(args.get("reverse")))
            return paginate(items, args, info.context.bulk, position)

        return resolve

    def _child_resolver(self, child: str) -> Callable[..., Any]:
        def resolve(source: JSON, info: Any, **args: Any) -> JSON:
            items = [self._node(i) if isinstance(i, str) else i for i in source.get(child) or []]
            return paginate(items, args, info.context.bulk, lambda _, index: index)

        return resolve

    def _node(self, value: str) -> JSON | None:
        if gid_type(value) == "BulkOperation":
            return self._poll(value)
        return self.store.get(gid_type(value), {}).get(value)

    # --- bulk operations

    def _current_bulk(self) -> JSON | None:
        if not self.bulk_operations:
            return None
        return self._poll(list(self.bulk_operations)[-1])

    def _poll(self, operation_id: str) -> JSON | None:
        operation = self.bulk_operations.get(operation_id)
        if operation is None:
            return None
        if operation.status in ("CREATED", "RUNNING"):
            operation.polls += 1
            operation.status = "RUNNING"
            if operation.polls >= self.bulk_polls:
                operation.completed_at = iso(self._clock)
                if operation.fail_with:
                    operation.status, operation.error_code = "FAILED", operation.fail_with
                    operation.lines = []
                else:
                    operation.status = "COMPLETED"
        return operation.node(self.base_url)

    def _run_bulk(self, _: Any, info: Any, query: str, groupObjects: bool) -> JSON:
        def refused(message: str, code: str = "INVALID") -> JSON:
            return {"bulkOperation": None,
                    "userErrors": [{"code": code, "field": ["query"], "message": message}]}  # fmt: skip

        running = [o for o in self.bulk_operations.values() if o.status in ("CREATED", "RUNNING")]
        if running:
            return refused("A bulk query operation for this app and shop is already in progress: "
                           f"{running[0].id}.", "OPERATION_IN_PROGRESS")  # fmt: skip
        try:
            document = parse(query)
        except GraphQLError as err:
            return refused(f"Invalid bulk query: {err.message}")
        errors = validate(self.schema, document)
        if errors:
            return refused(f"Invalid bulk query: {errors[0].message}")
        op = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        roots = [f.name.value for f in op.selection_set.selections if isinstance(f, FieldNode)]
        if {"node", "nodes"} & set(roots):
            return refused("The top-level node and nodes fields can't be used in bulk queries.")
        depth, count = _connections(op.selection_set, 0)
        if count == 0:
            return refused("Bulk queries must contain at least one connection.")
        if count > 5 or depth > 2:
            return refused("Bulk queries support up to five connections, nested two levels deep.")
        result = execute_sync(self.schema, document, context_value=Context(self, bulk=True))
        if result.errors:
            return refused(f"Invalid bulk query: {result.errors[0].message}")
        lines, roots = _jsonl(result.data or {}, groupObjects)
        number = next(self._ids)
        operation = BulkOperation(
            gid("BulkOperation", number), query, iso(self._clock), lines, roots
        )
        if self._bulk_failures:
            operation.fail_with = self._bulk_failures.pop(0)
        self.bulk_operations[operation.id] = operation
        return {"bulkOperation": operation.node(self.base_url), "userErrors": []}


def _connections(selection: SelectionSetNode | None, level: int) -> tuple[int, int]:
    """(deepest connection nesting, connections) of a bulk query's selection."""
    deepest, count = 0, 0
    for node in selection.selections if selection else []:
        if not isinstance(node, FieldNode):
            continue
        names = {s.name.value for s in (node.selection_set.selections if node.selection_set else [])
                 if isinstance(s, FieldNode)}  # fmt: skip
        here = 1 if names & {"edges", "nodes"} else 0
        inner_depth, inner_count = _connections(node.selection_set, level + here)
        deepest = max(deepest, level + here if here else 0, inner_depth)
        count += here + inner_count
    return deepest, count


def _jsonl(data: JSON, grouped: bool) -> tuple[list[bytes], int]:
    """The bulk result file: each node a line, children with `__parentId` (see the docstring)."""
    (connection,) = data.values()
    parents: list[bytes] = []
    late: list[bytes] = []
    roots = 0
    for node in _nodes(connection):
        roots += 1
        flat, children = {}, []
        for key, value in node.items():
            if isinstance(value, dict) and ("edges" in value or "nodes" in value):
                children += [{**child, "__parentId": node["id"]} for child in _nodes(value)]
            else:
                flat[key] = value
        parents.append(json.dumps(flat).encode())
        lines = [json.dumps(c).encode() for c in children]
        (parents if grouped else late).extend(lines)
    return parents + late, roots


def _nodes(connection: JSON) -> list[JSON]:
    if connection.get("nodes") is not None:
        return list(connection["nodes"])
    return [edge["node"] for edge in connection.get("edges") or []]


def _handle(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
