"""The push plan's consent rules and diffs, as tables of cases (no I/O)."""

from __future__ import annotations

import pytest

from syncbridge.config.models import AudienceConfig, MergeFieldConfig
from syncbridge.push.desired import AudienceRules, DesiredMember, format_merge_value
from syncbridge.push.plan import Acked, Plan, plan_member, status_for

AUDIENCE = AudienceConfig(
    name="customers",
    list_id="L1",
    merge_fields=[
        MergeFieldConfig(tag="FNAME", name="First", source="first_name"),
        MergeFieldConfig(tag="LTV", name="LTV", type="number", source="ltv"),
        MergeFieldConfig(tag="HELLO", name="Hello", template="{{ first_name | default: 'there' }}"),
    ],
    tag_attributes=["shop_tags"],
    tag_prefix="shop:",
)


def member(consent: bool | None, email: str = "ann@gmail.com", **fields: object) -> DesiredMember:
    return DesiredMember(1, email, consent, dict(fields), frozenset())


@pytest.mark.parametrize(
    ("consent", "in_mailchimp", "expected"),
    [
        (True, None, "subscribed"),
        (None, None, None),  # no recorded consent: skipped by default
        (False, None, None),  # opted out at the source: never added
        (True, "unsubscribed", "unsubscribed"),  # never re-subscribed
        (True, "cleaned", "cleaned"),
        (True, "pending", "pending"),
        (None, "subscribed", "subscribed"),  # never downgraded
        (False, "subscribed", "unsubscribed"),  # only an explicit source opt-out unsubscribes
        (True, "transactional", "subscribed"),  # consent recorded later
        (None, "transactional", "transactional"),
    ],
)
def test_status_rules(consent: bool | None, in_mailchimp: str | None, expected: str | None) -> None:
    assert status_for(member(consent), in_mailchimp, AUDIENCE) == expected


def test_without_consent_can_add_transactional_contacts() -> None:
    audience = AUDIENCE.model_copy(update={"without_consent": "transactional"})
    assert status_for(member(None), None, audience) == "transactional"


def test_desired_member_formats_fields_renders_templates_and_prefixes_tags() -> None:
    rules = AudienceRules(AUDIENCE)
    desired = rules.desire(
        7,
        {
            "email": "zoe@gmail.com",
            "email_valid": True,
            "ltv": 1234.5,
            "shop_tags": "vip, newsletter",
            "accepts_email_marketing": True,
        },
    )
    assert desired is not None
    assert desired.merge_fields == {"LTV": 1234.5, "HELLO": "there"}
    assert desired.tags == {"shop:vip", "shop:newsletter"}
    assert desired.consent is True
    assert rules.desire(8, {"email": "bad at mail", "email_valid": False}) is None


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [("date", "2026-11-20T10:00:00Z", "2026-11-20"), ("birthday", "1990-03-07", "03/07"),
     ("number", "12.5", 12.5), ("number", "n/a", None), ("dropdown", "gold", "gold"),
     ("dropdown", "tin", None), ("text", 42, "42")],
)  # fmt: skip
def test_merge_values_fit_their_type(kind: str, value: object, expected: object) -> None:
    field = MergeFieldConfig(tag="X", name="X", type=kind, source="x", choices=["gold", "silver"])  # type: ignore[arg-type]
    assert format_merge_value(field, value) == expected


def acked(**kw: object) -> Acked:
    base = dict(
        email="ann@gmail.com",
        status="subscribed",
        merge_hash=None,
        merge_fields={"FNAME": "Ann"},
        tags=frozenset({"shop:vip"}),
        error_hash=None,
    )
    base.update(kw)
    return Acked(**base)  # type: ignore[arg-type]


def test_only_changed_merge_fields_are_sent_and_tags_diffed() -> None:
    plan = Plan(AUDIENCE)
    desired = DesiredMember(
        1, "ann@gmail.com", True, {"FNAME": "Ann", "LTV": 10}, frozenset({"shop:new"})
    )
    statuses = {desired.hash: "subscribed"}
    plan_member(plan, 1, desired, acked(), statuses)
    [upsert] = plan.upserts
    assert upsert.merge_fields == {"LTV": 10}
    assert (upsert.status, upsert.new) == ("subscribed", False)
    assert plan.tag_adds["shop:new"] == [(1, "ann@gmail.com")]
    assert plan.tag_removes["shop:vip"] == [(1, "ann@gmail.com")]


def test_unchanged_member_needs_no_call() -> None:
    plan = Plan(AUDIENCE)
    desired = DesiredMember(1, "ann@gmail.com", True, {"FNAME": "Ann"}, frozenset({"shop:vip"}))
    plan_member(plan, 1, desired, acked(), {desired.hash: "subscribed"})
    assert plan.empty and plan.unchanged == 1 and plan.done == [1]


def test_cleared_value_is_blanked_in_mailchimp() -> None:
    plan = Plan(AUDIENCE)
    desired = DesiredMember(1, "ann@gmail.com", True, {}, frozenset({"shop:vip"}))
    plan_member(plan, 1, desired, acked(), {desired.hash: "subscribed"})
    assert plan.upserts[0].merge_fields == {"FNAME": ""}


def test_profile_leaving_scope_is_archived_and_untagged() -> None:
    plan = Plan(AUDIENCE)
    plan_member(plan, 1, None, acked(), {})
    assert [r.email for r in plan.archives] == ["ann@gmail.com"]
    ignore = Plan(AUDIENCE.model_copy(update={"removal": "ignore"}))
    plan_member(ignore, 1, None, acked(), {})
    assert ignore.empty


def test_failed_member_is_not_retried_until_it_changes() -> None:
    desired = member(True, FNAME="Ann")
    plan = Plan(AUDIENCE)
    plan_member(plan, 1, desired, acked(error_hash=desired.state_hash, status=None), {})
    assert plan.empty and plan.skipped["refused before, unchanged since"] == 1
    changed = member(True, FNAME="Anna")
    plan_member(plan, 1, changed, acked(error_hash=desired.state_hash, status=None), {})
    assert len(plan.upserts) == 1


def test_archived_member_is_not_recreated_unless_configured() -> None:
    desired = member(True)
    plan = Plan(AUDIENCE)
    plan_member(plan, 1, desired, None, {desired.hash: "archived"})
    assert plan.empty
    recreate = Plan(AUDIENCE.model_copy(update={"recreate_archived": True}))
    plan_member(recreate, 1, desired, None, {desired.hash: "archived"})
    assert recreate.upserts[0].status == "subscribed"


def test_email_change_updates_the_member_in_place_when_the_new_address_is_free() -> None:
    desired = member(True, email="ann.new@gmail.com", FNAME="Ann")
    plan = Plan(AUDIENCE)
    plan_member(plan, 1, desired, acked(tags=frozenset()), {})
    assert [(c.old_email, c.new_email) for c in plan.email_changes] == [
        ("ann@gmail.com", "ann.new@gmail.com")
    ]


def test_a_data_tag_differing_from_a_rules_tag_only_in_case_is_sent_as_the_rules_spell_it() -> None:
    """Mailchimp ignores case in tag names: `vip` from shop tags and the `VIP` segment are one
    tag there. Whichever member came first, both go out as `VIP`, and the clash is noted."""
    from syncbridge.push.sync import case_clash_note

    audience = AUDIENCE.model_copy(update={"tag_prefix": ""})
    rules = AudienceRules(audience, declared_tags=["VIP", "Cart_Abandoned"])
    base = {"email": "zoe@gmail.com", "email_valid": True, "accepts_email_marketing": True}
    only_data = rules.desire(1, base | {"shop_tags": "vip, newsletter"})
    both = rules.desire(2, base | {"shop_tags": "Vip"}, frozenset({"VIP"}))
    assert only_data is not None and both is not None
    assert only_data.tags == {"VIP", "newsletter"}
    assert both.tags == {"VIP"}
    assert rules.respelled == {"vip": "VIP", "Vip": "VIP"}
    note = case_clash_note(audience, "vip", "VIP")
    assert "ignores case" in note and "attribute_tag_prefix" in note and "'shop:vip'" in note
    apart = AudienceRules(audience.model_copy(update={"attribute_tag_prefix": "shop:"}),
                          declared_tags=["VIP"])  # fmt: skip
    kept = apart.desire(4, base | {"shop_tags": "vip"}, frozenset({"VIP"}))
    assert kept is not None and kept.tags == {"shop:vip", "VIP"} and apart.respelled == {}
    assert AudienceRules(audience).desire(3, base | {"shop_tags": "vip"}).tags == {"vip"}  # type: ignore[union-attr]
