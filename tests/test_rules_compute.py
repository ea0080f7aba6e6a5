"""Traits, scores, behaviour tags, segments and content for one profile, as tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from syncbridge.rules.compute import CompiledRules, compute_tag, compute_trait, explain
from syncbridge.rules.config import RulesConfig, TagConfig, TraitConfig

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


EVENTS = [
    ("purchase", ago(days=2), {"amount": 120.0, "category": "Shoes", "sku": "TR-1"}),
    ("purchase", ago(days=40), {"amount": 80, "category": "Shoes", "sku": "TR-2"}),
    ("purchase", ago(days=400), {"amount": "400.5", "category": "Gear", "sku": "TN-1"}),
    ("product_viewed", ago(hours=3), {"category": "Boots"}),
    ("product_viewed", ago(days=10), {"category": "Shoes"}),
    ("added_to_cart", ago(hours=30), {"price": 149.0}),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"aggregate": "count", "event": "purchase"}, 3),
        ({"aggregate": "count", "event": "purchase", "within": "90d"}, 2),
        ({"aggregate": "sum", "event": "purchase", "property": "amount"}, 600.5),
        ({"aggregate": "avg", "event": "purchase", "property": "amount"}, 200.17),
        ({"aggregate": "min", "event": "purchase", "property": "amount"}, 80.0),
        ({"aggregate": "max", "event": "purchase", "property": "amount"}, 400.5),
        ({"aggregate": "min", "event": "purchase", "property": "@time"}, "2025-10-19T12:00:00Z"),
        ({"aggregate": "max", "event": "purchase", "property": "@time"}, "2026-11-21T12:00:00Z"),
        ({"aggregate": "last", "event": "purchase", "property": "sku"}, "TR-1"),
        ({"aggregate": "most_frequent", "event": "purchase", "property": "category"}, "Shoes"),
        ({"aggregate": "days_since", "event": "purchase"}, 2),
        ({"aggregate": "max", "event": ["purchase", "product_viewed"], "property": "@time"},
         "2026-11-23T09:00:00Z"),
        ({"aggregate": "sum", "event": "purchase", "property": "amount",
          "where": {"category": "shoes"}}, 200.0),
        ({"aggregate": "sum", "event": "refund", "property": "amount"}, 0),
        ({"aggregate": "avg", "event": "refund", "property": "amount"}, None),
        ({"aggregate": "count", "event": "refund"}, 0),
        ({"aggregate": "count_distinct", "event": "purchase", "property": "category"}, 2),
        ({"aggregate": "count_distinct", "event": "refund", "property": "order"}, 0),
    ],
)  # fmt: skip
def test_aggregations(spec: dict[str, object], expected: object) -> None:
    value, _ = compute_trait(TraitConfig(name="t", **spec), EVENTS, NOW)  # type: ignore[arg-type]
    assert value == expected


def test_windowed_trait_expires_when_its_oldest_event_leaves() -> None:
    trait = TraitConfig(name="orders_90d", aggregate="count", event="purchase", within="90d")
    _, expiry = compute_trait(trait, EVENTS, NOW)
    assert expiry == ago(days=40) + timedelta(days=90)
    later, _ = compute_trait(trait, EVENTS, expiry + timedelta(seconds=1))  # type: ignore[operator]
    assert later == 1


def test_days_since_changes_at_the_next_day_boundary() -> None:
    trait = TraitConfig(name="d", aggregate="days_since", event="purchase")
    value, expiry = compute_trait(trait, EVENTS, NOW)
    assert (value, expiry) == (2, ago(days=2) + timedelta(days=3))


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({"name": "Browsed:{category}", "event": "product_viewed", "within": "7d"}, {"Browsed:Boots"}),
        ({"name": "Browsed:{category}", "event": "product_viewed", "within": "30d"},
         {"Browsed:Boots", "Browsed:Shoes"}),
        ({"name": "Added_to_Cart", "event": "added_to_cart", "within": "7d"}, {"Added_to_Cart"}),
        ({"name": "Customer_Purchase", "event": "purchase"}, {"Customer_Purchase"}),
        ({"name": "Bought_Gear", "event": "purchase", "where": {"category": "gear"},
          "within": "30d"}, set()),
    ],
)  # fmt: skip
def test_behaviour_tags(spec: dict[str, object], names: set[str]) -> None:
    found, _ = compute_tag(TagConfig(**spec), EVENTS, NOW)  # type: ignore[arg-type]
    assert found == names


def test_cart_abandonment_waits_for_the_delay_and_is_cleared_by_a_purchase() -> None:
    tag = TagConfig(name="Cart_Abandoned", event="added_to_cart", within="7d",
                    absent="purchase", delay="4h")  # fmt: skip
    added = [("added_to_cart", ago(hours=2), {"price": 99})]
    assert compute_tag(tag, added, NOW) == (set(), ago(hours=2) + timedelta(hours=4))
    assert compute_tag(tag, added, NOW + timedelta(hours=2))[0] == {"Cart_Abandoned"}
    bought = [*added, ("purchase", ago(hours=1), {"amount": 99})]
    assert compute_tag(tag, bought, NOW + timedelta(hours=2)) == (set(), None)
    older_purchase = [("purchase", ago(days=3), {}), *added]
    assert compute_tag(tag, older_purchase, NOW + timedelta(hours=5))[0] == {"Cart_Abandoned"}


RULES = RulesConfig.model_validate(
    {
        "traits": [
            {"name": "lifetime_value", "aggregate": "sum", "event": "purchase", "property": "amount"},
            {"name": "order_count", "aggregate": "count", "event": "purchase"},
            {"name": "days_since_last_order", "aggregate": "days_since", "event": "purchase"},
            {"name": "last_activity_at", "aggregate": "max", "property": "@time",
             "event": ["purchase", "product_viewed", "added_to_cart"]},
            {"name": "cart_value", "aggregate": "sum", "event": "added_to_cart", "property": "price",
             "within": "48h"},
        ],
        "scores": [
            {"name": "recency_score", "trait": "days_since_last_order",
             "thresholds": [7, 30, 90, 365], "lower_is_better": True},
            {"name": "monetary_score", "trait": "lifetime_value", "thresholds": [50, 200, 500, 5000]},
        ],
        "tags": [{"name": "Browsed:{category}", "event": "product_viewed", "within": "30d"}],
        "segments": [
            {"name": "Active", "rule": "last_activity_at within 30d"},
            {"name": "Big spenders", "rule": "lifetime_value > 500 and segment \"Active\""},
            {"name": "Hot carts", "rule": "count(product_viewed within 24h) >= 1 and cart_value > 100"},
            {"name": "NY", "rule": "region = \"NY\""},
        ],
        "content": [
            {"name": "hero", "fields": ["headline", "cta"],
             "rules": [{"when": "segment \"Hot carts\"", "headline": "Still thinking?",
                        "cta": "Back to your cart"},
                       {"when": "tag \"Browsed:Shoes\"", "headline": "New shoes are in"}],
             "default": {"headline": "This week's picks", "cta": "Shop now"}},
        ],
    }
)  # fmt: skip


def test_profile_evaluation_with_explanations() -> None:
    result = CompiledRules(RULES).evaluate({"region": "CA"}, EVENTS, NOW)
    assert result.traits["lifetime_value"] == 600.5
    assert result.traits["recency_score"] == 5 and result.traits["monetary_score"] == 4
    assert result.tags == {"Browsed:Boots", "Browsed:Shoes"}
    assert result.segments == {"Active", "Big spenders", "Hot carts"}
    assert result.content == {"headline": "Still thinking?", "cta": "Back to your cart"}
    stored = {"tags": sorted(result.tags), "explain": result.explain}
    why = explain(RULES, stored)
    assert why["segment:Hot carts"].startswith("count(product_viewed")
    assert why["content:headline"].startswith("hero: segment")
    assert why["lifetime_value"] == "sum of amount over purchase"
    assert why["tag:Browsed:Boots"] == "product_viewed within 30d"
    assert result.next_expiry == ago(hours=30) + timedelta(hours=48)  # the cart leaves first


def test_content_default_when_no_rule_matches() -> None:
    result = CompiledRules(RULES).evaluate({}, [], NOW)
    assert result.content == {"headline": "This week's picks", "cta": "Shop now"}
    assert result.segments == set() and result.traits["order_count"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"segments": [{"name": "X", "rule": "ltv >"}]}, "rule 'X', column 6: expected a value"),
        ({"segments": [{"name": "A", "rule": "segment \"B\""}, {"name": "B", "rule": "segment \"A\""}]},
         "segments refer to each other"),
        ({"traits": [{"name": "t", "aggregate": "sum", "event": "purchase"}]}, "needs 'property'"),
        ({"traits": [{"name": "t", "aggregate": "count", "event": "x", "within": "a week"}]},
         "is not a duration"),
        ({"tags": [{"name": "T", "event": "x", "absent": "y"}]}, "'absent' and 'delay' go together"),
        ({"scores": [{"name": "s", "trait": "nope", "thresholds": [1, 2, 3, 4]}]}, "unknown trait"),
        ({"content": [{"name": "c", "fields": ["headline"], "rules": [{"when": "x", "cta": "?"}]}]},
         "sets unknown fields: cta"),
    ],
)  # fmt: skip
def test_bad_rule_files_are_refused_with_the_reason(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RulesConfig.model_validate(change)
