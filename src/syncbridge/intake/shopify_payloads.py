"""Shopify webhook payloads (REST-shaped JSON) as the GraphQL nodes the Shopify connector reads.

A webhook and a connector read of the same object must store the same record — the same
keys, the same values, so the same content hash — or each would overwrite the other and the
mappings would need two shapes. So each payload becomes exactly the node of the connector's
selection: camelCase keys, GIDs for ids, enum values in upper case, money as
`{amount, currencyCode}` bags, times in UTC as GraphQL prints them (`2026-01-02T03:04:05Z`),
connections as plain lists, and `null` where GraphQL gives `null`.

Conversions, from the REST resources Shopify documents for these topics:

- ids: `admin_graphql_api_id` when the payload has it, else `gid://shopify/<Type>/<id>`.
  Checkouts: the body of `checkouts/create|update` is the REST (abandoned) checkout, whose
  numeric `id` is the id the REST `checkouts.json` endpoint lists and the GraphQL
  `AbandonedCheckout` wraps: `gid://shopify/AbandonedCheckout/<id>`. Its `token` (hex) and
  `cart_token` are other ids and never part of the GID.
- `email_marketing_consent{state, opt_in_level, consent_updated_at}` → `emailMarketingConsent
  {marketingState, marketingOptInLevel, consentUpdatedAt}` with `subscribed` → `SUBSCRIBED`,
  `not_subscribed` → `NOT_SUBSCRIBED`, … (the enum values are the REST values upper-cased).
- `financial_status` → `displayFinancialStatus` (`paid` → `PAID`); `fulfillment_status` →
  `displayFulfillmentStatus` (`null` → `UNFULFILLED`, `partial` → `PARTIALLY_FULFILLED`).
- `total_price` + `currency` (or `*_set.shop_money`) → `totalPriceSet.shopMoney`; amounts
  are written as GraphQL's Decimal prints them (`"10.00"` → `"10.0"`, `"19.90"` → `"19.9"`).
- `tags` ("a, b") → `["a", "b"]`; `orders_count` → `numberOfOrders` (a string: UnsignedInt64).

Fields a webhook does not carry (a line item's product categories: `product.productType`,
`vendor`, `tags`, `collections`, the REST line item having only `product_id`; `amountSpent`
and `numberOfOrders` where the API version leaves them out of customer webhooks, and `tags`
and `email_marketing_consent`, which customer webhooks no longer carry from API version
2025-01 (Shopify's changelog: customers/tags_added|tags_removed and
customers/email_marketing_consent_update report them instead): a payload without the key is
not a customer without tags or consent) are left out here and kept from the stored record
by `carry_over`, so a webhook never erases what the connector read; a new record lacks them
until the connector's next read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ..connectors import DELETED

Payload = dict[str, Any]
Node = dict[str, Any]


class NoId(ValueError):
    """The payload has no id to key its record by (answered 400)."""


def gid(kind: str, payload: Any, field: str = "id") -> str | None:
    """The object's GID: its `admin_graphql_api_id`, else built from its numeric id."""
    if not isinstance(payload, dict):
        return None
    given = payload.get("admin_graphql_api_id")
    if isinstance(given, str) and given.startswith("gid://"):
        return given
    return gid_of(kind, payload.get(field))


def gid_of(kind: str, value: Any) -> str | None:
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        return None
    text = str(value).strip()
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{text}"


def customer(payload: Payload) -> Node:
    """customers/create, customers/update: the `customers` stream's node."""
    key = _required(gid("Customer", payload))
    consent = payload.get("email_marketing_consent")
    state = _enum(consent.get("state")) if isinstance(consent, dict) else None
    email = payload.get("email") or None
    address: Node | None = None
    if email is not None:  # without a consent in the payload, the state is the stored one's
        address = {"emailAddress": email}
        if "email_marketing_consent" in payload:
            address["marketingState"] = state
    node: Node = {
        "id": key,
        "firstName": payload.get("first_name"),
        "lastName": payload.get("last_name"),
        "defaultEmailAddress": address,
        "defaultPhoneNumber": ({"phoneNumber": payload["phone"]} if payload.get("phone") else None),
        "createdAt": _time(payload.get("created_at")),
        "updatedAt": _time(payload.get("updated_at")),
        "defaultAddress": _address(payload.get("default_address")),
    }
    if "email_marketing_consent" in payload:  # left out of customer webhooks from 2025-01
        node["emailMarketingConsent"] = _consent(consent)
    if "tags" in payload:  # idem (customers/tags_added, tags_removed say what changed)
        node["tags"] = _tags(payload.get("tags"))
    if "total_spent" in payload:
        node["amountSpent"] = _money(payload.get("total_spent"), payload.get("currency"))
    if payload.get("orders_count") is not None:
        node["numberOfOrders"] = str(payload["orders_count"])
    return node


def consent_update(payload: Payload) -> Node:
    """customers/email_marketing_consent_update (how customer consent changes arrive from API
    version 2025-01, customer webhooks no longer carrying it): the customer's consent, and its
    address when given; the rest of the record is kept from the stored one (`carry_over`)."""
    key = _required(gid("Customer", payload, "customer_id") or gid("Customer", payload))
    consent = payload.get("email_marketing_consent")
    node: Node = {"id": key, "emailMarketingConsent": _consent(consent)}
    email = payload.get("email_address") or None
    if email is not None:
        state = _enum(consent.get("state")) if isinstance(consent, dict) else None
        node["defaultEmailAddress"] = {"emailAddress": email, "marketingState": state}
    return node


def _consent(consent: Any) -> Node | None:
    if not isinstance(consent, dict):
        return None
    return {
        "marketingState": _enum(consent.get("state")),
        "marketingOptInLevel": _enum(consent.get("opt_in_level")),
        "consentUpdatedAt": _time(consent.get("consent_updated_at")),
    }


def deleted_customer(payload: Payload) -> Node:
    """customers/delete: the record of a deleted customer, as the connector stores one."""
    return {"id": _required(gid("Customer", payload)), DELETED: True}


def order(payload: Payload) -> Node:
    """orders/create, orders/updated: the `orders` stream's node."""
    currency = payload.get("currency")
    buyer = payload.get("customer")
    fulfillment = payload.get("fulfillment_status")
    node: Node = {
        "id": _required(gid("Order", payload)),
        "name": payload.get("name"),
        "email": payload.get("email"),
        "customer": {"id": gid("Customer", buyer)} if gid("Customer", buyer) else None,
        "createdAt": _time(payload.get("created_at")),
        "updatedAt": _time(payload.get("updated_at")),
        "processedAt": _time(payload.get("processed_at")),
        "cancelledAt": _time(payload.get("cancelled_at")),
        "currencyCode": currency,
        "displayFinancialStatus": _enum(payload.get("financial_status")),
        "displayFulfillmentStatus": FULFILLMENT.get(fulfillment, _enum(fulfillment)),
        "totalPriceSet": _money_set(payload, "total_price", currency),
        "lineItems": [_order_line(line, currency) for line in payload.get("line_items") or []],
    }
    refunded = _refunded(payload.get("refunds"), currency)
    if refunded is not None:
        node["totalRefundedSet"] = refunded
    return node


def checkout(payload: Payload) -> Node:
    """checkouts/create, checkouts/update: the `checkouts` stream's node (AbandonedCheckout)."""
    buyer = payload.get("customer")
    buyer_id = gid("Customer", buyer)
    return {
        "id": _required(gid_of("AbandonedCheckout", payload.get("id"))),
        "createdAt": _time(payload.get("created_at")),
        "updatedAt": _time(payload.get("updated_at")),
        "completedAt": _time(payload.get("completed_at")),
        "abandonedCheckoutUrl": payload.get("abandoned_checkout_url"),
        "customer": {"id": buyer_id, "defaultEmailAddress": _email_of(buyer)} if buyer_id else None,
        "totalPriceSet": _money_set(payload, "total_price", payload.get("currency")),
        "lineItems": [_checkout_line(line) for line in payload.get("line_items") or []],
    }


def _email_of(buyer: Any) -> Node | None:
    email = buyer.get("email") if isinstance(buyer, dict) else None
    return {"emailAddress": email} if email else None


def redacted_customer(payload: Payload) -> Node:
    """customers/redact: `{"shop_domain", "customer": {"id", "email", "phone"},
    "orders_to_redact": [...]}` → the customer's record, deleted."""
    return {"id": _required(gid("Customer", payload.get("customer"))), DELETED: True}


def redacted_orders(payload: Payload) -> list[Node]:
    """customers/redact: the orders Shopify names as the customer's, deleted too (they hold
    the person's email and address)."""
    found = (gid_of("Order", i) for i in payload.get("orders_to_redact") or [])
    return [{"id": key, DELETED: True} for key in found if key]


FULFILLMENT = {None: "UNFULFILLED", "partial": "PARTIALLY_FULFILLED"}
"""REST fulfillment_status values whose GraphQL OrderDisplayFulfillmentStatus is not the
value upper-cased."""


def carry_over(record: Node, stored: Node) -> Node:
    """`record` completed with what `stored` holds and a webhook does not carry: top-level
    fields it lacks, the email's `marketingState` when the payload had no consent, and each
    line item's product fields it lacks (type, vendor, tags, collections: the purchase's
    categories), matched by line item and product id."""
    out = {**{k: v for k, v in stored.items() if k not in record}, **record}
    email, before_email = out.get("defaultEmailAddress"), stored.get("defaultEmailAddress")
    if isinstance(email, dict) and isinstance(before_email, dict):
        out["defaultEmailAddress"] = _filled(email, before_email)
    lines = out.get("lineItems")
    before = {line.get("id"): line for line in stored.get("lineItems") or []
              if isinstance(line, dict)}  # fmt: skip
    if isinstance(lines, list) and before:
        out["lineItems"] = [_line_carried(line, before.get(line.get("id"))) for line in lines]
    return out


def _filled(value: Node, before: Node) -> Node:
    """`value` with the keys it lacks from `before`, in `before`'s order."""
    if set(before) <= set(value):
        return value
    return {**{key: value.get(key, item) for key, item in before.items()}, **value}


def _line_carried(line: Node, before: Node | None) -> Node:
    """The line item with the stored product's fields it lacks, in the stored order (so the
    record equals the connector's read, hash and all). Another product (the line item's
    product changed, or none) keeps nothing of the old one."""
    product, old = line.get("product"), (before or {}).get("product")
    if not isinstance(product, dict) or not isinstance(old, dict):
        return line
    if old.get("id") != product.get("id"):
        return line
    missing = {key: value for key, value in old.items() if key not in product}
    if not missing:
        return line
    merged = {key: product.get(key, value) for key, value in old.items()}
    return {**line, "product": {**merged, **product}}


def _order_line(line: Payload, currency: Any) -> Node:
    product = gid_of("Product", line.get("product_id"))
    variant = gid_of("ProductVariant", line.get("variant_id"))
    return {
        "id": gid("LineItem", line),
        "name": line.get("name"),
        "sku": line.get("sku"),
        "quantity": line.get("quantity"),
        "vendor": line.get("vendor"),
        "originalUnitPriceSet": _money_set(line, "price", currency),
        "product": {"id": product} if product else None,  # the rest: `carry_over`
        "variant": {"id": variant} if variant else None,
    }


def _checkout_line(line: Payload) -> Node:
    """A checkout's line item. REST checkout lines may have no numeric `id`, only a `key`;
    the AbandonedCheckoutLineItem GID is built from whichever is there."""
    product = gid_of("Product", line.get("product_id"))
    variant = gid_of("ProductVariant", line.get("variant_id"))
    return {
        "id": gid("AbandonedCheckoutLineItem", line)
        or gid_of("AbandonedCheckoutLineItem", line.get("key")),
        "title": line.get("title"),
        "sku": line.get("sku"),
        "quantity": line.get("quantity"),
        "variant": {"id": variant} if variant else None,
        "product": {"id": product} if product else None,
    }


def _money_set(payload: Payload, field: str, currency: Any) -> Node | None:
    """`<field>_set.shop_money` when the payload has it, else `<field>` in `currency`."""
    money = (payload.get(f"{field}_set") or {}).get("shop_money")
    if isinstance(money, dict):
        shop = _money(money.get("amount"), money.get("currency_code"))
    else:
        shop = _money(payload.get(field), currency)
    return {"shopMoney": shop} if shop is not None else None


def _refunded(refunds: Any, currency: Any) -> Node | None:
    """totalRefundedSet: the successful refund transactions' sum (`0.0` without refunds);
    None when a refund carries no transactions to add up (kept from the stored record)."""
    if refunds is None:
        return None
    total = Decimal(0)
    for refund in refunds:
        transactions = refund.get("transactions") if isinstance(refund, dict) else None
        if transactions is None:
            return None
        for t in transactions:
            if t.get("kind") == "refund" and t.get("status") == "success":
                shop = (t.get("amount_set") or {}).get("shop_money") or {}
                amount = _decimal(shop.get("amount", t.get("amount")))
                total += amount if amount is not None else 0
    return {"shopMoney": _money(str(total), currency)}


def _money(amount: Any, currency: Any) -> Node | None:
    value = _decimal(amount)
    if value is None:
        return None
    return {"amount": _graphql_decimal(value), "currencyCode": currency}


def _decimal(amount: Any) -> Decimal | None:
    if amount is None or isinstance(amount, bool) or amount == "":
        return None
    try:
        return Decimal(str(amount))
    except InvalidOperation:
        return None


def _graphql_decimal(value: Decimal) -> str:
    """As GraphQL's Decimal prints an amount: no trailing zeros, at least one decimal."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _time(value: Any) -> str | None:
    """An ISO 8601 time in UTC as GraphQL's DateTime prints it (`…T03:04:05Z`)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _enum(value: Any) -> str | None:
    return value.strip().upper() if isinstance(value, str) and value.strip() else None


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    if not isinstance(value, str):
        return []
    return [t.strip() for t in value.split(",") if t.strip()]


def _address(address: Any) -> Node | None:
    if not isinstance(address, dict):
        return None
    return {
        "company": address.get("company"),
        "city": address.get("city"),
        "provinceCode": address.get("province_code"),
        "countryCodeV2": address.get("country_code"),
        "zip": address.get("zip"),
    }


def _required(key: str | None) -> str:
    if key is None:
        raise NoId("the payload has no id")
    return key


Converter = Callable[[Payload], Node]
