"""Mapping features for real exports (issue 11): constants, header case, list cells, join keys."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncbridge.config.mapping import Mapping
from syncbridge.errors import ConfigError
from syncbridge.transform import RecordTransformer

from .builders import settings_from


def mapping(text: str) -> Mapping:
    return Mapping.model_validate(tomllib.loads(text))


def apply(text: str, record: dict[str, Any]) -> Any:
    return RecordTransformer(mapping(text), "US").apply(record)


# -- 5. constant attributes -------------------------------------------------------------------

CONSENT_FORM = """
[identifiers]
email = "Email"
[attributes]
accepts_email_marketing = { value = true, type = "boolean" }
signup_source = { value = "popup form" }
[[events]]
type = "signed_up"
time = { field = "Submitted", type = "datetime" }
properties = { form = { value = "footer" }, weight = { value = 2 } }
"""


def test_a_constant_attribute_is_set_on_every_record_typed() -> None:
    out = apply(CONSENT_FORM, {"Email": "a@example.com", "Submitted": "2026-01-02T03:04:05Z"})
    assert out.attributes["accepts_email_marketing"] is True
    assert out.attributes["signup_source"] == "popup form"
    assert out.events[0].properties == {"form": "footer", "weight": 2}
    assert not out.errors


def test_a_bare_constant_takes_its_type_from_toml() -> None:
    spec = mapping('[identifiers]\nemail = "E"\n[attributes]\nok = { value = true }').attributes
    assert spec["ok"].type == "boolean"
    out = apply('[identifiers]\nemail = "E"\n[attributes]\nok = { value = true }', {"E": "x@y.io"})
    assert out.attributes["ok"] is True  # not the text "True"


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        ('{ field = "A", value = true }', "give one of 'field'"),
        ('{ type = "boolean" }', "give one of 'field'"),
        ('{ value = "maybe", type = "boolean" }', "value 'maybe' is not a valid boolean"),
        ('{ value = "lots", type = "number" }', "value 'lots' is not a valid number"),
        ('{ value = "x", default = "y" }', "'default' cannot go with a constant 'value'"),
    ],
)
def test_a_constant_that_cannot_work_is_a_clear_error(attribute: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        mapping(f'[identifiers]\nemail = "E"\n[attributes]\nc = {attribute}')


@pytest.mark.parametrize(
    "text",
    [
        '[identifiers]\nemail = { value = "everyone@example.com" }',
        '[identifiers]\nemail = "E"\nexternal = { "x:y" = { value = "1" } }',
        '[identifiers]\nemail = "E"\n[record]\ndeleted = { value = true }',
        '[identifiers]\nemail = "E"\n[[events]]\ntype = "t"\n'
        'time = { value = "2026-01-01", type = "date" }',
    ],
)
def test_a_constant_is_refused_where_it_would_mean_nonsense(text: str) -> None:
    with pytest.raises(ValidationError, match="must be read from the record"):
        mapping(text)


# -- 6. header case -----------------------------------------------------------------------------

DATA_LOADER = """
columns = "ignore-case"
[identifiers]
email = "Email"
external = { "salesforce:contact" = "Id" }
[attributes]
first_name = "FirstName"
account = "Account.Name"
opted_out = { field = "HasOptedOutOfEmail", type = "boolean" }
"""


@pytest.mark.parametrize(
    "record",
    [
        {"ID": "003A", "EMAIL": "A@X.IO", "FIRSTNAME": "Ann", "ACCOUNT.NAME": "Acme",
         "HASOPTEDOUTOFEMAIL": "true"},  # Data Loader up to v60
        {"Id": "003A", "Email": "A@X.IO", "FirstName": "Ann", "Account.Name": "Acme",
         "HasOptedOutOfEmail": "true"},  # v61 and later: the query's case
    ],
)  # fmt: skip
def test_ignore_case_reads_upper_cased_and_query_cased_headers_alike(
    record: dict[str, str],
) -> None:
    out = apply(DATA_LOADER, record)
    assert out.attributes == {"email": "a@x.io", "email_valid": True, "first_name": "Ann",
                              "account": "Acme", "opted_out": True}  # fmt: skip
    assert ("ext:salesforce:contact", "003A") in out.identifiers
    assert not out.errors


def test_exact_is_still_the_default() -> None:
    out = apply(DATA_LOADER.replace('columns = "ignore-case"', ""), {"EMAIL": "a@x.io"})
    assert "email" not in out.attributes


def test_ignore_case_folds_only_the_first_segment_of_a_json_path() -> None:
    text = """
columns = "ignore-case"
[identifiers]
email = "Traits.email"
[attributes]
plan = "Traits.planName"
"""
    out = apply(text, {"TRAITS": {"email": "b@x.io", "planName": "pro", "PLANNAME": "no"}})
    assert out.attributes["email"] == "b@x.io" and out.attributes["plan"] == "pro"


def test_two_fields_that_differ_only_by_case_are_an_error_not_a_guess() -> None:
    out = apply(DATA_LOADER, {"Email": "a@x.io", "EMAIL": "b@x.io", "Id": "003A"})
    assert "email" not in out.attributes
    assert any("differ only by case" in e.reason for e in out.errors)
    assert ("ext:salesforce:contact", "003A") in out.identifiers  # the rest still loads


def _project(tmp_path: Path, header: list[str], mapping_text: str) -> dict[str, Any]:
    with (tmp_path / "contacts.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, ["003A"] + ["x"] * (len(header) - 1)])
    (tmp_path / "contacts.toml").write_text(mapping_text, encoding="utf-8")
    return {
        "store": {"url": f"sqlite:///{tmp_path / 'cache.db'}"},
        "sources": [{"name": "crm", "connector": "files", "streams": [
            {"name": "contacts", "path": "contacts.csv", "primary_key": header[0],
             "mapping": "contacts.toml"}]}],
    }  # fmt: skip


UPPER = ["ID", "EMAIL", "FIRSTNAME", "ACCOUNT.NAME", "HASOPTEDOUTOFEMAIL"]


def test_validate_accepts_other_case_headers_with_ignore_case(tmp_path: Path) -> None:
    settings_from(_project(tmp_path, UPPER, DATA_LOADER), tmp_path)  # no ConfigError


def test_validate_says_did_you_mean_across_case_in_exact_mode(tmp_path: Path) -> None:
    exact = DATA_LOADER.replace('columns = "ignore-case"', "")
    with pytest.raises(ConfigError) as info:
        settings_from(_project(tmp_path, UPPER, exact), tmp_path)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "attributes.first_name: unknown column 'FirstName'" in text
    assert "did you mean 'FIRSTNAME'?" in text
    assert 'columns = "ignore-case"' in text


def test_validate_says_did_you_mean_in_ignore_case_mode(tmp_path: Path) -> None:
    typo = DATA_LOADER.replace('"FirstName"', '"FirstNam"')
    with pytest.raises(ConfigError) as info:
        settings_from(_project(tmp_path, UPPER, typo), tmp_path)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "unknown column 'FirstNam'" in text and "did you mean 'FIRSTNAME'?" in text


def test_validate_refuses_headers_that_differ_only_by_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(_project(tmp_path, [*UPPER, "Email"], DATA_LOADER), tmp_path)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "'EMAIL' and 'Email', which differ only by case" in text


# -- 7. list-valued cells -------------------------------------------------------------------------

TAGS = """
[identifiers]
email = "Email"
[attributes]
tags = { field = "TAGS", type = "list" }
"""


@pytest.mark.parametrize(
    ("cell", "items"),
    [
        ('"Customer","VIP"', ["Customer", "VIP"]),  # Mailchimp audience export
        ("wholesale, vip", ["wholesale", "vip"]),  # Shopify
        ('"Customer", "VIP" ', ["Customer", "VIP"]),
        ('"Smith, Jones","say ""hi"""', ["Smith, Jones", 'say "hi"']),
        ("a,, b ,", ["a", "b"]),
        ('5" screen, b', ['5" screen', "b"]),
        (["a", " b ", "", None], ["a", "b"]),  # JSON arrays are lists already
        ("vip", ["vip"]),
    ],
)
def test_list_cells_in_either_quoting_are_read_as_lists(cell: Any, items: list[str]) -> None:
    out = apply(TAGS, {"Email": "a@x.io", "TAGS": cell})
    assert out.attributes["tags"] == items and not out.errors


def test_a_list_of_nothing_is_no_value() -> None:
    out = apply(TAGS, {"Email": "a@x.io", "TAGS": ' , "" '})
    assert "tags" not in out.attributes and not out.errors


def test_a_broken_quoted_list_is_a_record_error() -> None:
    out = apply(TAGS, {"Email": "a@x.io", "TAGS": '"Customer,"VIP'})
    assert "tags" not in out.attributes
    assert [e.field for e in out.errors] == ["TAGS"]


def test_a_list_separator_can_be_chosen_and_only_for_lists() -> None:
    text = TAGS.replace('type = "list"', 'type = "list", separator = ";"')
    out = apply(text, {"Email": "a@x.io", "TAGS": "a, b; c"})
    assert out.attributes["tags"] == ["a, b", "c"]
    with pytest.raises(ValidationError, match="'separator' applies to list fields"):
        mapping(TAGS.replace('type = "list"', 'separator = ";"'))


def test_list_tags_become_mailchimp_tags_without_being_split_again() -> None:
    from syncbridge.config.models import AudienceConfig
    from syncbridge.push.desired import AudienceRules

    text = TAGS.replace("tags = ", "shop_tags = ")
    out = apply(text, {"Email": "a@x.io", "TAGS": '"Customer","VIP, gold"'})
    audience = AudienceConfig(name="customers", list_id="L1", tag_attributes=["shop_tags"])
    member = AudienceRules(audience).desire(1, out.attributes)
    assert member is not None and member.tags == {"Customer", "VIP, gold"}


# -- 8. the shipped Shopify orders setup ------------------------------------------------------------


def test_shipped_orders_setup_keeps_every_line_and_counts_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gift-card lines (blank SKU) used to be dropped for want of a key, and follow-up rows
    without Email made no one's purchase; now every line is a record of the order's buyer and
    `order_count` counts that buyer's orders, not lines."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from syncbridge.bundled import data_dir
    from syncbridge.cli import app
    from syncbridge.demo import DEMO_DB
    from syncbridge.store.engine import open_engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    with (data_dir("examples") / "shop" / "orders.csv").open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert any(not r["Lineitem sku"] and r["Total"] for r in rows)  # the sample has such a line
    assert any(not r["Email"] for r in rows)  # and a follow-up row without Email
    engine = open_engine(f"sqlite:///{tmp_path / DEMO_DB}")
    with engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT external_id, profile_id FROM source_record WHERE stream = 'orders'"
        )).all()  # fmt: skip
        assert len(stored) == len(rows)  # no line lost
        owner = dict(stored)
        for r in rows:  # every line belongs to the person of its order's first row
            first = next(f for f in rows if f["Name"] == r["Name"])
            assert owner[_line_key(r)] == owner[_line_key(first)]
        buyer = owner[_line_key(next(r for r in rows if r["Name"] == "#1421"))]
        traits = conn.execute(
            text("SELECT traits FROM profile_rules WHERE profile_id = :p"), {"p": buyer}
        ).scalar_one()
        emails = {r["Email"].strip().lower() for r in rows if r["Name"] == "#1421" and r["Email"]}
    engine.dispose()
    orders = {r["Name"] for r in rows if r["Email"].strip().lower() in emails}
    assert json.loads(traits)["order_count"] == len(orders)


def _line_key(row: dict[str, str]) -> str:
    return f"{row['Name']}|{row['Lineitem sku'] or row['Lineitem name']}"


# -- events per item of a list (`each`) ---------------------------------------------------------

ORDER_LINES = """
[identifiers]
email = "email"
[[events]]
type = "order_placed"
time = { field = "createdAt", type = "datetime" }
[[events]]
type = "purchase"
each = "lineItems"
when = { "item.giftCard" = false }
time = { field = "createdAt", type = "datetime" }
[events.properties]
order = "name"
sku = "item.sku"
quantity = { field = "item.quantity", type = "integer" }
price = { field = "item.price.amount", type = "number" }
"""
ORDER = {
    "email": "ann@gmail.com", "name": "#1001", "createdAt": "2026-11-02T10:00:00Z",
    "lineItems": [
        {"sku": "SHOE-1", "quantity": 2, "price": {"amount": "49.50"}, "giftCard": False},
        {"sku": "", "quantity": 1, "price": {"amount": "25"}, "giftCard": True},
        {"sku": "SOCK-9", "quantity": "x", "price": {"amount": "5"}, "giftCard": False},
    ],
}  # fmt: skip


def test_each_makes_one_event_per_item_with_the_records_fields_beside_the_items() -> None:
    out = apply(ORDER_LINES, ORDER)
    assert [(e.index, e.type) for e in out.events] == [
        (0, "order_placed"),
        (1, "purchase"),
        (5, "purchase"),
    ]  # fmt: skip: ordinals unique in the record, the first item's is the mapping's index
    first, third = out.events[1].properties, out.events[2].properties
    assert first == {"order": "#1001", "sku": "SHOE-1", "quantity": 2, "price": 49.5}
    assert third["sku"] == "SOCK-9" and "quantity" not in third  # the gift card is filtered out
    assert [e.field for e in out.errors] == ["lineItems[2].quantity"]  # says which item


def test_each_over_no_list_makes_no_event() -> None:
    for lines in (None, [], "not a list"):
        out = apply(ORDER_LINES, {**ORDER, "lineItems": lines})
        assert [e.type for e in out.events] == ["order_placed"]


def test_item_fields_without_each_are_refused_and_validate_checks_the_list() -> None:
    with pytest.raises(ValidationError, match="set 'each' to the list"):
        mapping(ORDER_LINES.replace('each = "lineItems"\n', ""))
    refs = mapping(ORDER_LINES).field_references()
    assert ("events[1].each", "lineItems") in refs
    assert not [f for _, f in refs if f.startswith("item.")]  # the items' fields, not columns


def test_each_events_are_stored_once_each_and_replaced_when_the_order_changes(
    engine: Any,
) -> None:
    from syncbridge.ingest import StreamIngest, ingest_stream
    from syncbridge.store.tables import Event

    from .streams import ListStream

    def stored() -> list[tuple[int, str, str]]:
        e = Event.__table__.c
        with engine.connect() as conn:
            rows = conn.execute(
                Event.__table__.select().with_only_columns(e.ordinal, e.type, e.properties)
            ).all()
        return sorted((o, t, (p or {}).get("sku", "")) for o, t, p in rows)

    transformer = RecordTransformer(mapping(ORDER_LINES))
    order = {"id": "o1", **ORDER}
    ingest_stream(engine, StreamIngest("shop", ListStream("orders", [order]), transformer))
    assert stored() == [(0, "order_placed", ""), (1, "purchase", "SHOE-1"),
                        (5, "purchase", "SOCK-9")]  # fmt: skip
    edited = {**order, "lineItems": order["lineItems"][:1]}  # the order was edited: one line
    ingest_stream(engine, StreamIngest("shop", ListStream("orders", [edited]), transformer))
    assert stored() == [(0, "order_placed", ""), (1, "purchase", "SHOE-1")]


# -- codes that mean something (`values`) --------------------------------------------------------

CONSENT_STATE = """
[identifiers]
email = "email"
[attributes]
accepts_email_marketing = { field = "consent.state", type = "boolean", values = { SUBSCRIBED = true } }
email_opt_out = { field = "consent.state", type = "boolean", values = { UNSUBSCRIBED = true } }
tier = { field = "level", type = "integer", values = { gold = 3, silver = "2" } }
"""


@pytest.mark.parametrize(
    ("state", "consent", "opt_out"),
    [("SUBSCRIBED", True, None), ("subscribed", True, None), ("UNSUBSCRIBED", None, True),
     ("NOT_SUBSCRIBED", None, None), ("PENDING", None, None), (None, None, None)],
)  # fmt: skip
def test_a_three_valued_state_feeds_two_flags_and_no_consent_is_not_an_opt_out(
    state: str | None, consent: bool | None, opt_out: bool | None
) -> None:
    out = apply(CONSENT_STATE, {"email": "a@gmail.com", "consent": {"state": state}})
    assert out.attributes.get("accepts_email_marketing") == consent
    assert out.attributes.get("email_opt_out") == opt_out
    assert out.errors == []  # a code not listed is no value, not an error


def test_values_are_cleaned_as_the_fields_type_when_the_mapping_loads() -> None:
    out = apply(CONSENT_STATE, {"email": "a@gmail.com", "level": "Silver"})
    assert out.attributes["tier"] == 2
    with pytest.raises(ValidationError, match=r"values\.gold: 'x' is not a valid integer"):
        mapping(CONSENT_STATE.replace("gold = 3", 'gold = "x"'))
    with pytest.raises(ValidationError, match="lists a value twice"):
        mapping(CONSENT_STATE.replace("gold = 3", "gold = 3, GOLD = 4"))
    with pytest.raises(ValidationError, match="cannot go with a constant"):
        mapping(CONSENT_STATE.replace('field = "level"', "value = 1"))


def test_the_shipped_shopify_customers_mapping_reads_consent_three_ways() -> None:
    from syncbridge.config.loader import load_mapping

    shipped = load_mapping(Path(__file__).parent.parent / "mappings" / "shopify_customers.toml")
    transformer = RecordTransformer(shipped, "US")
    base = {"id": "gid://shopify/Customer/7", "defaultEmailAddress": {"emailAddress": "a@b.co"}}
    flags = {}
    for state in ("SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED"):
        out = transformer.apply({**base, "emailMarketingConsent": {"marketingState": state}})
        flags[state] = (out.attributes.get("accepts_email_marketing"),
                        out.attributes.get("email_opt_out"))  # fmt: skip
    assert flags == {"SUBSCRIBED": (True, None), "NOT_SUBSCRIBED": (None, None),
                     "UNSUBSCRIBED": (None, True)}  # fmt: skip


def test_a_number_in_a_path_picks_an_item_of_a_list() -> None:
    text = """
[identifiers]
email = "email"
[attributes]
first_collection = "collections.0.title"
second = "collections.1.title"
missing = "collections.5.title"
category = { field = ["collections.0.title", "productType"] }
"""
    record = {"email": "a@gmail.com", "collections": [{"title": "Shoes"}, {"title": "Sale"}]}
    out = apply(text, record)
    assert out.attributes["first_collection"] == "Shoes" and out.attributes["second"] == "Sale"
    assert "missing" not in out.attributes
    bare = apply(text, {"email": "a@gmail.com", "collections": [], "productType": "Boots"})
    assert bare.attributes["category"] == "Boots"  # no collection: the next field of the list
