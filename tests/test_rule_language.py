"""The segment rule language: every operator, time windows and their expiry, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncbridge.rules.config import TraitConfig
from syncbridge.rules.evaluate import Facts, evaluate, matching_events
from syncbridge.rules.language import RuleError, evaluation_order, parse, parse_duration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROFILE = {
    "lifetime_value": 6200.5,
    "engagement": 0.7,
    "city": "New York",
    "region": "NY",
    "first_name": "Zoë",
    "last_order_at": "2026-11-01T10:00:00Z",
    "signed_up_at": "2024-05-01T00:00:00Z",
    "vip": True,
    "shop_tags": ["vip", "newsletter"],
    "order_count": "3",
    "nested": {"tier": "gold"},
}
EVENTS = [
    ("purchase", NOW - timedelta(days=10), {"category": "Shoes", "amount": 120}),
    ("purchase", NOW - timedelta(days=40), {"category": "Shoes", "amount": 80}),
    ("purchase", NOW - timedelta(days=200), {"category": "Gear", "amount": 400}),
    ("product_viewed", NOW - timedelta(hours=3), {"category": "Shoes"}),
]


def facts(**values: object) -> Facts:
    return Facts(now=NOW, values={**PROFILE, **values}, tags={"VIP"}, segments={"New"},
                 events=matching_events(EVENTS, NOW))  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("lifetime_value > 5000", True),
        ("lifetime_value >= 6200.5 and lifetime_value <= 6200.5", True),
        ("lifetime_value < 5000", False),
        ("engagement != 0.7", False),
        ('city = "new york"', True),  # text compares without case
        ("city == 'New York'", True),
        ("order_count > 2", True),  # numbers written as text compare as numbers
        ('region in ["NY", "NJ"]', True),
        ('region not in ["NY", "NJ"]', False),
        ('first_name contains "zo"', True),
        ('shop_tags contains "VIP"', True),
        ('shop_tags not contains "wholesale"', True),
        ('nested.tier = "gold"', True),
        ("vip", True),
        ("vip = true", True),
        ("phone exists", False),
        ("not phone exists", True),
        ('phone = "x"', False),  # a missing value makes a comparison false
        ('phone != "x"', True),
        ("last_order_at within 30d", True),
        ("last_order_at within 7d", False),
        ("signed_up_at older than 1y", True),
        ('last_order_at > "2026-10-01"', True),
        ("count(purchase) = 3", True),
        ("count(purchase within 90d) >= 2", True),
        ('count(purchase where category = "Shoes" within 30d) = 1', True),
        ('count(purchase where category = "shoes" and amount > 100) = 1', True),
        ("count(product_viewed within 24h) >= 1 and lifetime_value > 100", True),
        ('tag "vip"', True),
        ('segment "New" and not segment "Lapsed"', True),
        ('(city = "Boston" or region = "NY") and not (engagement < 0.5)', True),
        ('city = "Boston" or region = "NJ" or vip = false', False),
    ],
)
def test_operators(rule: str, expected: bool) -> None:
    assert evaluate(parse("r", rule), facts()) is expected


def test_high_value_customers_example() -> None:
    rule = parse(
        "High-Value Customers",
        "lifetime_value > 5000 and last_order_at within 30d and engagement >= 0.5",
    )
    f = facts()
    assert evaluate(rule, f) is True
    assert f.next_expiry == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 30 days after the order


def test_profile_leaves_an_activity_window_on_day_31_without_new_data() -> None:
    rule = parse("Active", "last_order_at within 30d")
    day_30 = Facts(now=datetime(2026, 12, 1, 9, 59, tzinfo=UTC), values=PROFILE)
    day_31 = Facts(now=datetime(2026, 12, 2, 10, 0, tzinfo=UTC), values=PROFILE)
    assert evaluate(rule, day_30) is True
    assert day_30.next_expiry == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert evaluate(rule, day_31) is False


def test_event_window_expiry_is_when_the_oldest_counted_event_leaves() -> None:
    f = facts()
    assert evaluate(parse("r", "count(purchase within 90d) >= 2"), f)
    assert f.next_expiry == NOW - timedelta(days=40) + timedelta(days=90)


@pytest.mark.parametrize(
    ("rule", "column", "message"),
    [
        ("lifetime_value >", 17, "expected a value"),
        ("lifetime_value > 5000 and", 26, "expected a value"),
        ('city = "NY" region = "NY"', 13, "expected 'and', 'or' or the end of the rule"),
        ("last_order_at within 30 days", 22, "expected a duration like 30d, 24h or 1y"),
        ('(city = "NY"', 13, "expected ')'"),
        ('region in ("NY")', 11, "expected '[' to start a list"),
        ("count(purchase within 9d", 25, "expected ')' to close count("),
        ("tag VIP", 5, "expected a tag name in quotes"),
        ('city ~ "NY"', 6, "unexpected character '~'"),
        ("", 1, "expected a condition"),
    ],
)
def test_bad_rules_say_where_and_why(rule: str, column: int, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse("NY_Customers", rule)
    text = str(info.value)
    assert text.startswith(f"rule 'NY_Customers', column {column}: {message}")
    assert info.value.position == column - 1


def test_segment_references_are_ordered_and_checked() -> None:
    rules = {
        "VIP": parse("VIP", "lifetime_value > 5000"),
        "VIP in NY": parse("VIP in NY", 'segment "VIP" and region = "NY"'),
        "Everyone else": parse("Everyone else", 'not segment "VIP in NY"'),
    }
    order = evaluation_order(rules)
    assert order.index("VIP") < order.index("VIP in NY") < order.index("Everyone else")
    rules["A"] = parse("A", 'segment "B"')
    rules["B"] = parse("B", 'segment "A"')
    with pytest.raises(RuleError, match="segments refer to each other: A → B → A"):
        evaluation_order(rules)
    with pytest.raises(RuleError, match="unknown segment 'Nope'"):
        evaluation_order({"X": parse("X", 'segment "Nope"')})


def test_strings_keep_non_ascii_and_escapes() -> None:
    rule = parse("r", 'city = "Köln" or city = "O\\"Hare"')
    assert evaluate(rule, facts(city="köln"))
    assert evaluate(rule, facts(city='O"Hare'))


@pytest.mark.parametrize("text", ["30d", "24h", "90m", "2w", "1y", "1.5d", "0.1h", "365d"])
def test_a_duration_means_the_same_in_a_rule_and_in_a_rule_file_option(text: str) -> None:
    rule = parse("r", f"last_order_at within {text}")
    trait = TraitConfig(name="n", aggregate="count", event="purchase", within=text)
    assert rule.tree.window == trait.window == parse_duration(text)


@pytest.mark.parametrize("text", ["30", "30 d", "30D", "d", "1.d", "-1d"])
def test_a_malformed_duration_is_refused_in_a_rule_file_option(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 30d"):
        parse_duration(text)
