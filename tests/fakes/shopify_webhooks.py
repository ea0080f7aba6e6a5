"""Shopify webhook deliveries as Shopify sends them: REST-shaped bodies, signed, with headers.

`sign(body, secret)` (shopify_sender.py, which the fake shop sends its webhooks with) is
Shopify's signature: base64 of the HMAC-SHA256 of the raw body under
the app's client secret. `delivery(...)` builds the headers Shopify sends with a body
(`X-Shopify-Topic`, `-Hmac-Sha256`, `-Shop-Domain`, `-API-Version`, `-Webhook-Id`, `-Event-Id`,
`-Triggered-At`). The sample payloads follow the shapes of Shopify's webhook reference samples
(abridged to the fields that matter here, with the same field names and formats: numeric ids,
`admin_graphql_api_id`, money as strings, times with the shop's UTC offset).

`use_shopify_connector(monkeypatch)` makes connector = "shopify" resolvable in tests: the
registered connector, else `syncbridge_connectors.shopify` when it is there, else a stand-in
that only declares the streams (webhooks need a source's config and stream jobs, no read).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from importlib.metadata import EntryPoint, EntryPoints
from typing import Any

import pytest
from pydantic import ConfigDict

from syncbridge import connectors
from syncbridge.connectors import Connector, Page, SourceOptions, Stream

from .shopify_sender import API_VERSION, sign, webhook_headers

__all__ = ["API_VERSION", "delivery", "sign", "use_shopify_connector"]


def delivery(
    topic: str,
    payload: Any,
    secret: str,
    shop: str = "acme.myshopify.com",
    *,
    webhook_id: str | None = None,
    triggered_at: str = "2026-12-01T10:00:00.000000000Z",
    raw: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one delivery; `raw` overrides the body (still signed)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = webhook_headers(topic, body, secret, shop, webhook_id or str(uuid.uuid4()),
                              str(uuid.uuid4()), triggered_at)  # fmt: skip
    return body, headers


CUSTOMER: dict[str, Any] = {
    "id": 706405506930370084,
    "email": "bob@biller.com",
    "created_at": "2021-12-31T19:00:00-05:00",
    "updated_at": "2021-12-31T19:00:00-05:00",
    "first_name": "Bob",
    "last_name": "Biller",
    "orders_count": 3,
    "state": "enabled",
    "total_spent": "199.90",
    "last_order_id": 450789469,
    "note": "This customer loves ice cream",
    "verified_email": True,
    "multipass_identifier": None,
    "tax_exempt": False,
    "tags": "VIP, newsletter",
    "last_order_name": "#1003",
    "currency": "USD",
    "phone": "+16136120707",
    "addresses": [],
    "tax_exemptions": [],
    "email_marketing_consent": {
        "state": "subscribed",
        "opt_in_level": "confirmed_opt_in",
        "consent_updated_at": "2021-12-31T19:00:00-05:00",
    },
    "sms_marketing_consent": None,
    "admin_graphql_api_id": "gid://shopify/Customer/706405506930370084",
    "default_address": {
        "id": 207119551,
        "customer_id": 706405506930370084,
        "first_name": "Bob",
        "last_name": "Biller",
        "company": None,
        "address1": "151 O'Connor Street",
        "address2": "",
        "city": "Ottawa",
        "province": "Ontario",
        "country": "Canada",
        "zip": "K2P 2L8",
        "phone": "555-625-1199",
        "name": "Bob Biller",
        "province_code": "ON",
        "country_code": "CA",
        "country_name": "Canada",
        "default": True,
    },
}

CUSTOMER_NODE: dict[str, Any] = {
    "id": "gid://shopify/Customer/706405506930370084",
    "firstName": "Bob",
    "lastName": "Biller",
    "defaultEmailAddress": {"emailAddress": "bob@biller.com", "marketingState": "SUBSCRIBED"},
    "defaultPhoneNumber": {"phoneNumber": "+16136120707"},
    "emailMarketingConsent": {
        "marketingState": "SUBSCRIBED",
        "marketingOptInLevel": "CONFIRMED_OPT_IN",
        "consentUpdatedAt": "2022-01-01T00:00:00Z",
    },
    "amountSpent": {"amount": "199.9", "currencyCode": "USD"},
    "numberOfOrders": "3",
    "tags": ["VIP", "newsletter"],
    "createdAt": "2022-01-01T00:00:00Z",
    "updatedAt": "2022-01-01T00:00:00Z",
    "defaultAddress": {
        "company": None,
        "city": "Ottawa",
        "provinceCode": "ON",
        "countryCodeV2": "CA",
        "zip": "K2P 2L8",
    },
}
"""`CUSTOMER` as the connector reads it (the GraphQL node of its selection)."""

ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "name": "#9999",
    "email": "bob@biller.com",
    "created_at": "2021-12-31T19:00:00-05:00",
    "updated_at": "2021-12-31T19:00:00-05:00",
    "processed_at": "2021-12-31T19:00:00-05:00",
    "cancelled_at": None,
    "currency": "USD",
    "presentment_currency": "USD",
    "financial_status": "partially_refunded",
    "fulfillment_status": None,
    "total_price": "403.00",
    "total_price_set": {
        "shop_money": {"amount": "403.00", "currency_code": "USD"},
        "presentment_money": {"amount": "403.00", "currency_code": "USD"},
    },
    "customer": {
        "id": 706405506930370084,
        "email": "bob@biller.com",
        "admin_graphql_api_id": "gid://shopify/Customer/706405506930370084",
    },
    "line_items": [
        {
            "id": 487817672276298554,
            "admin_graphql_api_id": "gid://shopify/LineItem/487817672276298554",
            "name": "Aviator sunglasses",
            "price": "89.99",
            "price_set": {
                "shop_money": {"amount": "89.99", "currency_code": "USD"},
                "presentment_money": {"amount": "89.99", "currency_code": "USD"},
            },
            "product_id": 788032119674292922,
            "quantity": 1,
            "sku": "SKU2006-001",
            "title": "Aviator sunglasses",
            "variant_id": None,
            "vendor": None,
        },
        {
            "id": 976318377106520349,
            "admin_graphql_api_id": "gid://shopify/LineItem/976318377106520349",
            "name": "Mid-century lounger",
            "price": "159.00",
            "price_set": {
                "shop_money": {"amount": "159.00", "currency_code": "USD"},
                "presentment_money": {"amount": "159.00", "currency_code": "USD"},
            },
            "product_id": 788032119674292922,
            "quantity": 2,
            "sku": "SKU2006-020",
            "title": "Mid-century lounger",
            "variant_id": 49148385,
            "vendor": "Lounge Co",
        },
    ],
    "refunds": [
        {
            "id": 509562969,
            "transactions": [
                {"kind": "refund", "status": "success", "amount": "41.94"},
                {"kind": "refund", "status": "failure", "amount": "10.00"},
            ],
        }
    ],
}

ORDER_NODE: dict[str, Any] = {
    "id": "gid://shopify/Order/820982911946154508",
    "name": "#9999",
    "email": "bob@biller.com",
    "customer": {"id": "gid://shopify/Customer/706405506930370084"},
    "createdAt": "2022-01-01T00:00:00Z",
    "updatedAt": "2022-01-01T00:00:00Z",
    "processedAt": "2022-01-01T00:00:00Z",
    "cancelledAt": None,
    "currencyCode": "USD",
    "displayFinancialStatus": "PARTIALLY_REFUNDED",
    "displayFulfillmentStatus": "UNFULFILLED",
    "totalPriceSet": {"shopMoney": {"amount": "403.0", "currencyCode": "USD"}},
    "totalRefundedSet": {"shopMoney": {"amount": "41.94", "currencyCode": "USD"}},
    "lineItems": [
        {
            "id": "gid://shopify/LineItem/487817672276298554",
            "name": "Aviator sunglasses",
            "sku": "SKU2006-001",
            "quantity": 1,
            "vendor": None,
            "originalUnitPriceSet": {"shopMoney": {"amount": "89.99", "currencyCode": "USD"}},
            "product": {"id": "gid://shopify/Product/788032119674292922"},
            "variant": None,
        },
        {
            "id": "gid://shopify/LineItem/976318377106520349",
            "name": "Mid-century lounger",
            "sku": "SKU2006-020",
            "quantity": 2,
            "vendor": "Lounge Co",
            "originalUnitPriceSet": {"shopMoney": {"amount": "159.0", "currencyCode": "USD"}},
            "product": {"id": "gid://shopify/Product/788032119674292922"},
            "variant": {"id": "gid://shopify/ProductVariant/49148385"},
        },
    ],
}
"""`ORDER` as a node, but for the line items' product categories (`productType`, `vendor`,
`tags`, `collections`), which no webhook carries."""

CHECKOUT: dict[str, Any] = {
    "id": 981820079255243537,
    "token": "123123123",
    "cart_token": "eeafa272cebfd4b22385bc4b645e762c",
    "email": "bob@biller.com",
    "created_at": "2021-12-31T19:00:00-05:00",
    "updated_at": "2021-12-31T19:30:00-05:00",
    "completed_at": None,
    "abandoned_checkout_url": "https://acme.myshopify.com/548380009/checkouts/123123123/recover"
    "?key=example",
    "currency": "USD",
    "presentment_currency": "USD",
    "total_price": "398.00",
    "customer": {
        "id": 706405506930370084,
        "email": "bob@biller.com",
        "admin_graphql_api_id": "gid://shopify/Customer/706405506930370084",
    },
    "line_items": [
        {
            "key": "49148385",
            "product_id": 632910392,
            "variant_id": 49148385,
            "sku": "IPOD2008RED",
            "title": "IPod Nano - 8GB",
            "quantity": 1,
            "price": "199.00",
        }
    ],
}

CHECKOUT_NODE: dict[str, Any] = {
    "id": "gid://shopify/AbandonedCheckout/981820079255243537",
    "createdAt": "2022-01-01T00:00:00Z",
    "updatedAt": "2022-01-01T00:30:00Z",
    "completedAt": None,
    "abandonedCheckoutUrl": CHECKOUT["abandoned_checkout_url"],
    "customer": {
        "id": "gid://shopify/Customer/706405506930370084",
        "defaultEmailAddress": {"emailAddress": "bob@biller.com"},
    },
    "totalPriceSet": {"shopMoney": {"amount": "398.0", "currencyCode": "USD"}},
    "lineItems": [
        {
            "id": "gid://shopify/AbandonedCheckoutLineItem/49148385",
            "title": "IPod Nano - 8GB",
            "sku": "IPOD2008RED",
            "quantity": 1,
            "variant": {"id": "gid://shopify/ProductVariant/49148385"},
            "product": {"id": "gid://shopify/Product/632910392"},
        }
    ],
}

REDACT: dict[str, Any] = {
    "shop_id": 954889,
    "shop_domain": "acme.myshopify.com",
    "customer": {"id": 706405506930370084, "email": "bob@biller.com", "phone": "555-625-1199"},
    "orders_to_redact": [820982911946154508],
}


def customer(**changes: Any) -> dict[str, Any]:
    """A copy of `CUSTOMER` with some fields changed (another `id`: its GID too)."""
    if "id" in changes:
        changes.setdefault("admin_graphql_api_id", f"gid://shopify/Customer/{changes['id']}")
    return {**copy.deepcopy(CUSTOMER), **changes}


# --- connector = "shopify" in tests


class _StandInOptions(SourceOptions):
    model_config = ConfigDict(frozen=True, extra="allow")


class _StandInStream(Stream):
    def __init__(self, name: str) -> None:
        self.name = name
        self.primary_key = ("id",)
        self.cursor_field = "updatedAt"

    def read(self, cursor: Any | None) -> Iterator[Page]:
        return iter(())


class StandInShopifyConnector(Connector):
    """Declares the configured streams (key `id`) and reads nothing."""

    source_options = _StandInOptions

    def streams(self) -> list[Stream]:
        return [_StandInStream(s.name) for s in self.stream_configs]


def _shopify_class() -> str:
    """The connector's class when its module is there (not yet registered), else the stand-in."""
    try:
        from syncbridge_connectors.shopify import ShopifyConnector  # noqa: F401
    except ImportError:
        return f"{__name__}:StandInShopifyConnector"
    return "syncbridge_connectors.shopify:ShopifyConnector"


def use_shopify_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    real = connectors.entry_points

    def with_shopify(**kwargs: Any) -> EntryPoints:
        points = real(**kwargs)
        group = kwargs.get("group")
        if group != connectors.ENTRY_POINT_GROUP or "shopify" in points.names:
            return points
        return EntryPoints([*points, EntryPoint("shopify", _shopify_class(), group)])

    monkeypatch.setattr(connectors, "entry_points", with_shopify)
