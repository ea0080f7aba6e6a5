"""The fake shop's objects as Shopify's webhooks carry them: REST-shaped JSON.

A webhook body is the REST Admin resource of the object (shopify.dev, REST reference and
webhook samples), not the GraphQL node: snake_case keys, numeric `id` beside
`admin_graphql_api_id`, money as strings with two decimals (`"10.00"`) plus `*_set` bags
(`shop_money` / `presentment_money`), enum values in lower case (`financial_status: "paid"`,
`email_marketing_consent.state: "subscribed"`, `fulfillment_status: null` for an unfulfilled
order), `tags` as one comma-separated string, times in the shop's time zone with its offset
(`2026-03-01T07:00:00-05:00`), and a line item's product as `product_id` only (no type,
vendor, tags or collections). Rendered from the same state the GraphQL API serves, so a
webhook and a read of one object are two views of one version of it: what
`syncbridge.intake.shopify_payloads` must turn back into the very node the connector reads.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

JSON = dict[str, Any]
Lookup = Callable[[str], JSON | None]
SHOP_ZONE = timezone(timedelta(hours=-5))
"""The shop's time zone (Shopify's samples are at -05:00): REST times carry its offset."""

TOPIC_OF = {
    ("Customer", "create"): "customers/create",
    ("Customer", "update"): "customers/update",
    ("Customer", "delete"): "customers/delete",
    ("Order", "create"): "orders/create",
    ("Order", "update"): "orders/updated",
    ("AbandonedCheckout", "create"): "checkouts/create",
    ("AbandonedCheckout", "update"): "checkouts/update",
}
"""(GID type, change) -> the webhook topic Shopify sends for it."""
TOPICS = frozenset(TOPIC_OF.values())
NOT_IN_CUSTOMER_WEBHOOKS = ("tags", "email_marketing_consent", "sms_marketing_consent")
"""What customer webhooks no longer carry from API version 2025-01 (Shopify's changelog, "New
customer's webhook and changes to existing customer's webhooks payload")."""

FULFILLMENT = {"UNFULFILLED": None, "PARTIALLY_FULFILLED": "partial", "FULFILLED": "fulfilled",
               "RESTOCKED": "restocked"}  # fmt: skip
"""GraphQL displayFulfillmentStatus -> REST fulfillment_status (which has these values only;
the other display states are an unfulfilled order: null)."""


def number(gid: str) -> int:
    """The REST id inside a GID (`gid://shopify/Customer/1001` -> 1001)."""
    return int(gid.rsplit("/", 1)[-1])


def shop_time(value: str | None) -> str | None:
    """A GraphQL DateTime (UTC, `…Z`) as REST writes it: in the shop's zone, with its offset."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(SHOP_ZONE).isoformat()


def amount(money: JSON | None) -> str | None:
    """A MoneyV2's amount as REST writes money: a string with two decimals."""
    return None if money is None else f"{float(money['amount']):.2f}"


def money_set(bag: JSON | None) -> JSON | None:
    """A MoneyBag as REST's `*_set`."""
    if bag is None:
        return None
    return {
        key: {"amount": amount(bag[side]), "currency_code": bag[side]["currencyCode"]}
        for key, side in (("shop_money", "shopMoney"), ("presentment_money", "presentmentMoney"))
    }


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _email(customer: JSON) -> str | None:
    address = customer.get("defaultEmailAddress") or {}
    return address.get("emailAddress") or customer.get("email")


def _address(customer: JSON, address: JSON | None) -> JSON | None:
    if address is None:
        return None
    first, last = customer.get("firstName"), customer.get("lastName")
    return {
        "id": number(customer["id"]) * 10 + 1,
        "customer_id": number(customer["id"]),
        "first_name": first,
        "last_name": last,
        "company": address.get("company"),
        "address1": address.get("address1"),
        "address2": None,
        "city": address.get("city"),
        "province": address.get("province"),
        "country": None,
        "zip": address.get("zip"),
        "phone": None,
        "name": " ".join(p for p in (first, last) if p),
        "province_code": address.get("provinceCode"),
        "country_code": address.get("countryCodeV2"),
        "country_name": None,
        "default": True,
    }


def customer(record: JSON) -> JSON:
    """customers/create, customers/update: the REST Customer."""
    consent = record.get("emailMarketingConsent")
    phone = (record.get("defaultPhoneNumber") or {}).get("phoneNumber")
    address = _address(record, record.get("defaultAddress"))
    spent = record.get("amountSpent")
    return {
        "id": number(record["id"]),
        "email": _email(record),
        "created_at": shop_time(record.get("createdAt")),
        "updated_at": shop_time(record.get("updatedAt")),
        "first_name": record.get("firstName"),
        "last_name": record.get("lastName"),
        "orders_count": int(record.get("numberOfOrders") or 0),
        "state": "enabled",
        "total_spent": amount(spent),
        "last_order_id": None,
        "note": None,
        "verified_email": True,
        "multipass_identifier": None,
        "tax_exempt": False,
        "tags": ", ".join(record.get("tags") or []),
        "last_order_name": None,
        "currency": (spent or {}).get("currencyCode", "USD"),
        "phone": phone,
        "addresses": [address] if address else [],
        "tax_exemptions": [],
        "email_marketing_consent": None if consent is None else {
            "state": _lower(consent.get("marketingState")),
            "opt_in_level": _lower(consent.get("marketingOptInLevel")),
            "consent_updated_at": shop_time(consent.get("consentUpdatedAt")),
        },
        "sms_marketing_consent": None,
        "admin_graphql_api_id": record["id"],
        "default_address": address,
    }  # fmt: skip


def deleted_customer(record: JSON) -> JSON:
    """customers/delete: what is left of a deleted customer (Shopify's sample: ids only)."""
    return {"id": number(record["id"]), "phone": None, "addresses": [], "tax_exemptions": [],
            "email_marketing_consent": None, "sms_marketing_consent": None,
            "admin_graphql_api_id": record["id"]}  # fmt: skip


def _buyer(gid: str | None, lookup: Lookup) -> JSON | None:
    """The customer object an order or a checkout embeds (abridged REST Customer)."""
    found = lookup(gid) if gid else None
    if found is None:
        return None
    return {"id": number(found["id"]), "email": _email(found),
            "first_name": found.get("firstName"), "last_name": found.get("lastName"),
            "admin_graphql_api_id": found["id"]}  # fmt: skip


def _order_line(line: JSON) -> JSON:
    price = line["originalUnitPriceSet"]
    product, variant = line.get("product"), line.get("variant")
    return {
        "id": number(line["id"]),
        "admin_graphql_api_id": line["id"],
        "name": line.get("name"),
        "title": line.get("title"),
        "price": amount(price["shopMoney"]),
        "price_set": money_set(price),
        "product_id": number(product) if product else None,
        "variant_id": number(variant) if variant else None,
        "quantity": line.get("quantity"),
        "sku": line.get("sku"),
        "vendor": line.get("vendor"),
        "fulfillment_status": None,
        "gift_card": False,
        "requires_shipping": True,
        "taxable": True,
        "properties": [],
    }


def _refunds(order: JSON) -> list[JSON]:
    """REST `refunds`: one successful refund transaction for what the order had refunded."""
    refunded = order.get("totalRefundedSet")
    if refunded is None or float(refunded["shopMoney"]["amount"]) == 0:
        return []
    return [{"id": number(order["id"]) * 10 + 9, "transactions": [
        {"kind": "refund", "status": "success", "amount": amount(refunded["shopMoney"]),
         "amount_set": money_set(refunded)}]}]  # fmt: skip


def order(record: JSON, lookup: Lookup) -> JSON:
    """orders/create, orders/updated: the REST Order."""
    total = record["totalPriceSet"]
    status = record.get("displayFulfillmentStatus")
    return {
        "id": number(record["id"]),
        "admin_graphql_api_id": record["id"],
        "name": record.get("name"),
        "order_number": int(str(record.get("name") or "#0").lstrip("#") or 0),
        "email": record.get("email"),
        "contact_email": record.get("email"),
        "created_at": shop_time(record.get("createdAt")),
        "updated_at": shop_time(record.get("updatedAt")),
        "processed_at": shop_time(record.get("processedAt")),
        "cancelled_at": shop_time(record.get("cancelledAt")),
        "cancel_reason": "customer" if record.get("cancelledAt") else None,
        "closed_at": None,
        "currency": record.get("currencyCode"),
        "presentment_currency": record.get("currencyCode"),
        "financial_status": _lower(record.get("displayFinancialStatus")),
        "fulfillment_status": FULFILLMENT.get(str(status)),
        "total_price": amount(total["shopMoney"]),
        "total_price_set": money_set(total),
        "tags": "",
        "customer": _buyer(record.get("customer"), lookup),
        "line_items": [_order_line(line) for line in record.get("lineItems") or []],
        "refunds": _refunds(record),
    }


def _checkout_line(line: JSON) -> JSON:
    product, variant = line.get("product"), line.get("variant")
    return {
        "key": str(number(line["id"])),
        "product_id": number(product) if product else None,
        "variant_id": number(variant) if variant else None,
        "sku": line.get("sku"),
        "title": line.get("title"),
        "quantity": line.get("quantity"),
        "price": amount(line["originalUnitPriceSet"]["shopMoney"]),
    }


def checkout(record: JSON, lookup: Lookup) -> JSON:
    """checkouts/create, checkouts/update: the REST (abandoned) Checkout."""
    buyer = _buyer(record.get("customer"), lookup)
    total = record["totalPriceSet"]
    return {
        "id": number(record["id"]),
        "token": f"{number(record['id']):032x}",
        "cart_token": f"c{number(record['id']):031x}",
        "name": f"#{number(record['id'])}",
        "email": buyer["email"] if buyer else None,
        "created_at": shop_time(record.get("createdAt")),
        "updated_at": shop_time(record.get("updatedAt")),
        "completed_at": shop_time(record.get("completedAt")),
        "abandoned_checkout_url": record.get("abandonedCheckoutUrl"),
        "currency": total["shopMoney"]["currencyCode"],
        "presentment_currency": total["shopMoney"]["currencyCode"],
        "total_price": amount(total["shopMoney"]),
        "customer": buyer,
        "line_items": [_checkout_line(line) for line in record.get("lineItems") or []],
    }


def payload(topic: str, record: JSON, lookup: Lookup) -> JSON:
    """The body of `topic` for the fake's `record` (its state now)."""
    if topic == "customers/delete":
        return deleted_customer(record)
    if topic.startswith("customers/"):
        return customer(record)
    if topic.startswith("orders/"):
        return order(record, lookup)
    return checkout(record, lookup)
