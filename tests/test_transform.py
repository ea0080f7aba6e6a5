"""Applying a mapping: a bad value becomes a per-record error, the rest of the record loads."""

from __future__ import annotations

import tomllib

from syncbridge.config.mapping import Mapping
from syncbridge.transform import RecordTransformer

from .builders import CRM_MAPPING, salesforce_row

ORDERS = """
[identifiers]
email = "Email"
[[events]]
type = "purchase"
time = { field = ["Paid at", "Created at"], type = "datetime", format = "%Y-%m-%d %H:%M:%S %z" }
[events.properties]
sku = "Lineitem sku"
quantity = { field = "Lineitem quantity", type = "integer" }
price = { field = "Lineitem price", type = "number" }
"""

WEB = """
[identifiers]
email = { field = ["traits.email", "context.traits.email"] }
external = { "web:anonymous" = "anonymousId" }
[[events]]
type_field = "event"
only_mapped = true
when = { type = "track" }
time = { field = "timestamp", type = "datetime" }
type_map = { "Product Viewed" = "product_viewed" }
[events.properties]
category = "properties.category"
"""


def transformer(text: str) -> RecordTransformer:
    return RecordTransformer(Mapping.model_validate(tomllib.loads(text)), "US")


def test_bad_values_are_errors_and_the_rest_loads() -> None:
    row = salesforce_row(
        "0035g00000AbCdFAAV",
        "Bob.Stone@Gmail.com",
        "Bob",
        "Stone",
        **{"Mailing Country": "Atlantis", "Created Date": "31/31/2025", "Phone": "(415) 555-0132"},
    )
    out = transformer(CRM_MAPPING).apply(row)
    assert {(e.field, e.value) for e in out.errors} == {
        ("Mailing Country", "Atlantis"),
        ("Created Date", "31/31/2025"),
    }
    assert out.attributes["first_name"] == "Bob"
    assert out.attributes["email"] == "bob.stone@gmail.com"
    assert "country" not in out.attributes
    assert ("email", "bob.stone@gmail.com") in out.identifiers
    assert ("phone", "+14155550132") in out.identifiers
    assert out.source_ts == "2026-10-02T23:05:00Z"


def test_invalid_email_is_kept_flagged_and_never_a_join_key() -> None:
    out = transformer(CRM_MAPPING).apply(salesforce_row("003X", "bob at gmail.com", "Bob"))
    assert out.attributes["email"] == "bob at gmail.com"
    assert out.attributes["email_valid"] is False
    assert all(kind != "email" for kind, _ in out.identifiers)
    assert ("ext:salesforce:contact", "003X") in out.identifiers
    assert [e.reason for e in out.errors] == ["not a valid email address"]


def test_order_line_becomes_purchase_event_with_fallback_time() -> None:
    row = {
        "Email": "ann@yahoo.com",
        "Paid at": "",
        "Created at": "2026-10-14 09:31:12 -0400",
        "Lineitem sku": "TR-2041-BLU-42",
        "Lineitem quantity": "2",
        "Lineitem price": "89.00",
    }
    out = transformer(ORDERS).apply(row)
    assert len(out.events) == 1
    event = out.events[0]
    assert (event.type, event.occurred_at) == ("purchase", "2026-10-14T13:31:12Z")
    assert event.properties == {"sku": "TR-2041-BLU-42", "quantity": 2, "price": 89.0}


def test_event_with_bad_time_is_dropped_with_an_error() -> None:
    row = {"Email": "ann@yahoo.com", "Paid at": "not paid", "Lineitem sku": "X"}
    out = transformer(ORDERS).apply(row)
    assert out.events == []
    assert out.errors[0].field == "Paid at|Created at"
    assert out.errors[0].value == "not paid"


def test_nested_paths_filters_and_type_map() -> None:
    t = transformer(WEB)
    viewed = {
        "type": "track",
        "event": "Product Viewed",
        "timestamp": "2026-11-21T10:00:00Z",
        "anonymousId": "a-1",
        "context": {"traits": {"email": "Zoe@Gmail.com"}},
        "properties": {"category": "Shoes"},
    }
    out = t.apply(viewed)
    assert [(e.type, e.properties) for e in out.events] == [
        ("product_viewed", {"category": "Shoes"})
    ]
    assert ("email", "zoe@gmail.com") in out.identifiers
    unmapped = {**viewed, "event": "Coupon Entered"}
    assert t.apply(unmapped).events == []
    page = {**viewed, "type": "page"}
    assert t.apply(page).events == []


def test_phone_without_country_code_is_read_in_the_records_country() -> None:
    mapping = CRM_MAPPING.replace(
        'phone = "Phone"', 'phone = { field = "Phone", region_field = "Mailing Country" }'
    )
    t = transformer(mapping)
    uk = salesforce_row(
        "003U", "ann@gmail.com", **{"Phone": "020 7946 0958", "Mailing Country": "UK"}
    )
    us = salesforce_row(
        "003S", "bob@gmail.com", **{"Phone": "(415) 555-0132", "Mailing Country": ""}
    )
    assert ("phone", "+442079460958") in t.apply(uk).identifiers
    assert ("phone", "+14155550132") in t.apply(us).identifiers  # no country: default region


EDGES = """
[record]
deleted = { field = "Is Deleted", type = "boolean" }
[identifiers]
external = { "erp:customer" = { field = "Cust No", strip_chars = "'" } }
[attributes]
tier = { field = "Tier", default = "bronze" }
nickname = { field = ["Nick", "First"] }
code = "Code"
dotted = "a.b"
nested = "meta.region"
score = { field = "Score", type = "number" }
[[events]]
type_field = "kind"
time = { field = "at", type = "date" }
"""


def test_defaults_fallbacks_nulls_and_paths() -> None:
    t = transformer(EDGES)
    out = t.apply(
        {
            "Cust No": "'00123",
            "Tier": "  ",
            "Nick": "#N/A",
            "First": "Zoë",
            "Code": 42,
            "a.b": "exact key wins",
            "a": {"b": "nested loses"},
            "meta": {"region": "EMEA"},
            "Score": "NULL",
            "Is Deleted": "yes",
            "kind": "Signed Up",
            "at": "2026-11-20",
        }
    )
    assert out.identifiers == [("ext:erp:customer", "00123")]
    assert out.attributes == {
        "tier": "bronze",
        "nickname": "Zoë",
        "code": "42",
        "dotted": "exact key wins",
        "nested": "EMEA",
    }
    assert out.deleted is True
    assert [(e.type, e.occurred_at) for e in out.events] == [("Signed Up", "2026-11-20")]
    assert out.errors == []


def test_bad_values_never_fall_back_to_defaults() -> None:
    out = transformer(
        EDGES.replace('default = "bronze"', 'default = "bronze", type = "integer"')
    ).apply({"Cust No": "1", "Tier": "gold", "Score": "1,5", "kind": "x", "at": "someday"})
    assert "tier" not in out.attributes and "score" not in out.attributes
    assert {e.field for e in out.errors} == {"Tier", "Score", "at"}
    assert out.events == []


MERGEABLE = """
[identifiers]
email = "Email"
external = { "crm:account" = "Id", "crm:owner" = "OwnerId" }
merged_into = { "crm:account" = "MasterRecordId" }
[attributes]
name = "Name"
"""


def test_a_merged_away_record_is_a_live_alias_of_its_master_with_only_external_ids() -> None:
    row = {"Id": "B", "OwnerId": "U1", "MasterRecordId": "A", "Email": "b@gmail.com", "Name": "B"}
    out = transformer(MERGEABLE).apply(row)
    assert out.alias and not out.deleted and out.attributes == {} and out.events == []
    assert out.identifiers == [("ext:crm:account", "B"), ("ext:crm:owner", "U1"),
                               ("ext:crm:account", "A")]  # fmt: skip
    plain = transformer(MERGEABLE).apply({**row, "MasterRecordId": None})
    assert not plain.alias and plain.attributes["name"] == "B"


def test_merged_into_must_name_an_external_namespace() -> None:
    import pytest
    from pydantic import ValidationError

    text = MERGEABLE.replace('merged_into = { "crm:account"', 'merged_into = { "crm:acount"')
    with pytest.raises(ValidationError, match="did you mean 'crm:account'"):
        transformer(text)
