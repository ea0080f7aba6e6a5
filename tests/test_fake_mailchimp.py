"""The Mailchimp fake, driven through the official SDK, enforces the real API's rules."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mailchimp_marketing
import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from .fakes.mailchimp import FakeMailchimp, subscriber_hash

LIST = "aud1"
ADA, GRACE, ALAN = "ada@lovelace.io", "grace@hopper.dev", "alan@turing.org.uk"


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list(LIST)
        yield server


def make_client(fake: FakeMailchimp, api_key: str | None = None) -> mailchimp_marketing.Client:
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": fake.api_key if api_key is None else api_key, "server": "us21"})
    client.api_client.host = fake.base_url
    return client


@pytest.fixture
def client(fake: FakeMailchimp) -> mailchimp_marketing.Client:
    return make_client(fake)


def api_error(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    """The status and problem document of a call that must fail."""
    with pytest.raises(ApiClientError) as info:
        call()
    return info.value.status_code, json.loads(info.value.text)


def batch(client: Any, members: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    return client.lists.batch_list_members(LIST, {"members": members, **body})


def sub(email: str, status: str = "subscribed", **extra: Any) -> dict[str, Any]:
    return {"email_address": email, "status": status, **extra}


def errors_by_email(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["email_address"]: e for e in result["errors"]}


# ---------------------------------------------------------------- auth, routing, ping


def test_ping_through_the_sdk_on_a_host_without_server_in_it(fake: FakeMailchimp, client) -> None:
    assert "server" not in fake.base_url
    assert client.ping.get() == {"health_status": "Everything's Chimpy!"}


def test_wrong_or_missing_key_gives_401_problem_json(fake: FakeMailchimp) -> None:
    wrong = "ffffffffffffffffffffffffffffffff-us21"
    status, doc = api_error(lambda: make_client(fake, wrong).ping.get())
    assert (status, doc["title"], doc["status"]) == (401, "API Key Invalid", 401)
    assert {"type", "title", "status", "detail", "instance"} <= doc.keys()
    status, doc = api_error(lambda: make_client(fake, "").ping.get())
    assert (status, doc["title"]) == (401, "API Key Invalid")
    raw = requests.get(f"{fake.base_url}/ping", timeout=5)
    assert raw.headers["Content-Type"].startswith("application/problem+json")


def test_unknown_route_is_404_and_wrong_method_is_405(fake: FakeMailchimp) -> None:
    auth = ("anyone", fake.api_key)
    missing = requests.get(f"{fake.base_url}/nothing/here", auth=auth, timeout=5)
    assert (missing.status_code, missing.json()["title"]) == (404, "Resource Not Found")
    wrong = requests.post(f"{fake.base_url}/ping", auth=auth, timeout=5)
    assert (wrong.status_code, wrong.json()["title"]) == (405, "Method Not Allowed")
    no_list = requests.get(f"{fake.base_url}/lists/nope/members", auth=auth, timeout=5)
    assert no_list.status_code == 404


# ---------------------------------------------------------------- merge fields


def test_new_audience_has_the_default_merge_fields(client) -> None:
    result = client.lists.get_list_merge_fields(LIST, count=100)
    fields = {f["tag"]: f for f in result["merge_fields"]}
    assert result["total_items"] == 5
    assert {t: f["type"] for t, f in fields.items()} == {
        "FNAME": "text",
        "LNAME": "text",
        "ADDRESS": "address",
        "PHONE": "phone",
        "BIRTHDAY": "birthday",
    }
    expected = {"merge_id", "tag", "name", "type", "required", "default_value", "public"}
    assert expected | {"display_order", "options", "list_id"} <= fields["FNAME"].keys()


def test_merge_field_tags_are_derived_validated_and_unique(fake: FakeMailchimp, client) -> None:
    add = client.lists.add_list_merge_field
    assert add(LIST, {"name": "Company Name!", "type": "text"})["tag"] == "COMPANYNAM"
    assert add(LIST, {"name": "€€€", "type": "number"})["tag"] == "MMERGE7"
    assert add(LIST, {"name": "Plan", "type": "dropdown", "options": {"choices": ["a", "b"]}})
    status, doc = api_error(lambda: add(LIST, {"name": "Dup", "tag": "COMPANYNAM", "type": "text"}))
    assert (status, doc["title"], doc["errors"][0]["field"]) == (400, "Invalid Resource", "tag")
    for bad in (
        {"name": "Lower", "tag": "lower", "type": "text"},
        {"name": "Long", "tag": "ELEVENCHARS", "type": "text"},
        {"name": "Kind", "type": "colour"},
        {"type": "text"},
        {"name": "Pick", "type": "radio"},
    ):
        assert api_error(functools.partial(add, LIST, bad))[0] == 400, bad
    assert set(fake.merge_fields(LIST)) >= {"COMPANYNAM", "MMERGE7", "PLAN"}


def test_merge_field_limit_counts_the_defaults(fake: FakeMailchimp, client) -> None:
    fake.add_list("small", merge_field_limit=6)
    client.lists.add_list_merge_field("small", {"name": "Sixth", "type": "text"})
    status, doc = api_error(
        lambda: client.lists.add_list_merge_field("small", {"name": "Seventh", "type": "text"})
    )
    assert status == 400 and "limit" in doc["detail"]


# ---------------------------------------------------------------- batch subscribe


def test_batch_creates_members_and_reports_bad_items_with_200(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, "gone@lovelace.io")
    fake.forget_member(LIST, "gone@lovelace.io")
    result = batch(
        client,
        [
            sub(ADA, merge_fields={"FNAME": "Ada"}),
            sub("someone@example.com"),
            sub("test@lovelace.io"),
            sub("not-an-address"),
            sub(GRACE, status="member"),
            sub("gone@lovelace.io"),
        ],
    )
    assert (result["total_created"], result["total_updated"], result["error_count"]) == (1, 0, 5)
    assert result["new_members"][0]["merge_fields"]["FNAME"] == "Ada"
    errors = errors_by_email(result)
    for fake_one in ("someone@example.com", "test@lovelace.io", "not-an-address"):
        assert "looks fake or invalid" in errors[fake_one]["error"]
    assert errors[GRACE]["field"] == "status"
    assert "permanently deleted and cannot be re-imported" in errors["gone@lovelace.io"]["error"]
    assert {e["error_code"] for e in result["errors"]} == {"ERROR_GENERIC"}
    assert set(fake.members(LIST)) == {subscriber_hash(ADA)}


def test_existing_member_needs_update_existing(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, merge_fields={"FNAME": "Ada"})
    refused = batch(client, [sub(ADA, merge_fields={"LNAME": "Lovelace"})])
    assert refused["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
    updated = batch(client, [sub(ADA, merge_fields={"LNAME": "King"})], update_existing=True)
    assert updated["total_updated"] == 1
    assert updated["updated_members"][0]["merge_fields"]["FNAME"] == "Ada"  # merged, not replaced
    assert updated["updated_members"][0]["merge_fields"]["LNAME"] == "King"


def test_batch_of_more_than_500_is_rejected_whole(fake: FakeMailchimp, client) -> None:
    members = [sub(f"person{i}@lovelace.io") for i in range(501)]
    status, doc = api_error(lambda: batch(client, members))
    assert (status, doc["title"]) == (400, "Invalid Resource") and "500" in doc["detail"]
    assert fake.members(LIST) == {}


def test_compliance_states_block_resubscribe_but_admin_unsubscribes_do_not(
    fake: FakeMailchimp, client
) -> None:
    fake.seed_member(LIST, ADA, "unsubscribed", unsubscribed_by="user")
    fake.seed_member(LIST, GRACE, "cleaned")
    fake.seed_member(LIST, ALAN, "unsubscribed", unsubscribed_by="admin")
    fake.seed_member(LIST, "kay@parc.dev", "unsubscribed", unsubscribed_by="api")
    emails = [ADA, GRACE, ALAN, "kay@parc.dev"]
    result = batch(client, [sub(e) for e in emails], update_existing=True)
    errors = errors_by_email(result)
    assert set(errors) == {ADA, GRACE}
    assert all("compliance state" in e["error"] for e in errors.values())
    statuses = {m["email_address"]: m["status"] for m in fake.members(LIST).values()}
    assert statuses == {
        ADA: "unsubscribed",
        GRACE: "cleaned",
        ALAN: "subscribed",  # silently re-subscribed: the dangerous real behaviour
        "kay@parc.dev": "subscribed",
    }


def test_transactional_downgrades_a_subscribed_member(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    batch(client, [sub(ADA, "transactional")], update_existing=True)
    assert fake.members(LIST)[subscriber_hash(ADA)]["status"] == "transactional"


def test_batch_brings_archived_members_back_unless_they_unsubscribed(
    fake: FakeMailchimp, client
) -> None:
    fake.seed_member(LIST, ADA, merge_fields={"FNAME": "Ada"})
    fake.archive_member(LIST, ADA)
    fake.seed_member(LIST, GRACE, "unsubscribed")
    fake.archive_member(LIST, GRACE)
    result = batch(client, [sub(ADA), sub(GRACE)], update_existing=True)
    assert [m["email_address"] for m in result["new_members"]] == [ADA]
    assert result["new_members"][0]["merge_fields"]["FNAME"] == "Ada"
    assert "compliance state" in errors_by_email(result)[GRACE]["error"]


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("NOPE", "x"),
        ("AGE", "forty"),
        ("SINCE", "21/10/2015"),
        ("BIRTHDAY", "1815-12-10"),
        ("BIRTHDAY", "02/30"),
        ("ADDRESS", {"addr1": "12 St James's Sq", "city": "London"}),
        ("SITE", "www.lovelace.io"),
        ("PLAN", "platinum"),
        ("FNAME", 42),
    ],
)
def test_batch_validates_merge_values(fake: FakeMailchimp, client, tag: str, value: Any) -> None:
    add = client.lists.add_list_merge_field
    add(LIST, {"name": "Age", "type": "number"})
    add(LIST, {"name": "Since", "type": "date"})
    add(LIST, {"name": "Site", "type": "url"})
    add(LIST, {"name": "Plan", "type": "radio", "options": {"choices": ["free", "pro"]}})
    result = batch(client, [sub(ADA, merge_fields={tag: value})])
    assert result["error_count"] == 1
    assert result["errors"][0]["field"] == tag and result["errors"][0]["field_message"]


def test_good_merge_values_and_required_fields(fake: FakeMailchimp, client) -> None:
    add = client.lists.add_list_merge_field
    add(LIST, {"name": "Age", "type": "number"})
    add(LIST, {"name": "Since", "type": "date"})
    add(LIST, {"name": "Crm Id", "type": "text", "required": True})
    address = {"addr1": "12 St James's Sq", "city": "London", "state": "LDN", "zip": "SW1Y"}
    values = {"AGE": 36, "SINCE": "1833-06-05", "BIRTHDAY": "12/10", "ADDRESS": address}
    missing = batch(client, [sub(ADA, merge_fields=values)])
    assert missing["errors"][0]["field"] == "CRMID"
    ok = batch(client, [sub(ADA, merge_fields=values | {"CRMID": "c-1"})])
    assert ok["total_created"] == 1
    skipped = client.lists.batch_list_members(
        LIST, {"members": [sub(GRACE)]}, skip_merge_validation=True
    )
    assert skipped["total_created"] == 1  # skips the required check...
    typo = client.lists.batch_list_members(
        LIST, {"members": [sub(ALAN, merge_fields={"AGE": "x"})]}, skip_merge_validation=True
    )
    assert typo["error_count"] == 1  # ...but not the type checks (harsher reading)


def test_batch_tags_add_and_sync_tags_replace(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, tags=["crm", "old"])
    batch(client, [sub(ADA, tags=["vip"])], update_existing=True)
    assert fake.members(LIST)[subscriber_hash(ADA)]["tags"] == {"crm", "old", "vip"}
    batch(client, [sub(ADA, tags=["vip", "new"])], update_existing=True, sync_tags=True)
    assert fake.members(LIST)[subscriber_hash(ADA)]["tags"] == {"vip", "new"}
    assert fake.segments(LIST)["new"]["type"] == "static"
    status, _ = api_error(lambda: batch(client, [sub(GRACE)], sync_tags=True))
    assert status == 400
    result = batch(client, [sub(GRACE, tags=["x" * 101])])
    assert result["errors"][0]["field"] == "tags"


def test_duplicates_in_one_batch(fake: FakeMailchimp, client) -> None:
    twice = [
        sub(ADA, merge_fields={"FNAME": "First"}),
        sub(ADA.upper(), merge_fields={"FNAME": "2"}),
    ]
    result = batch(client, twice)
    assert (result["total_created"], result["error_count"]) == (1, 1)
    result = client.lists.batch_list_members(
        LIST,
        {"members": [sub(GRACE, merge_fields={"FNAME": "First"}), sub(GRACE)]},
        skip_duplicate_check=True,
    )
    assert (result["total_created"], result["error_count"]) == (1, 0)
    assert fake.members(LIST)[subscriber_hash(GRACE)]["merge_fields"] == {"FNAME": "First"}


# ---------------------------------------------------------------- reading members


def test_member_listing_paginates_filters_and_hides_archived(fake: FakeMailchimp, client) -> None:
    for i in range(15):
        fake.seed_member(LIST, f"reader{i}@lovelace.io")
    fake.seed_member(LIST, ADA, "unsubscribed")
    fake.archive_member(LIST, "reader0@lovelace.io")
    first = client.lists.get_list_members_info(LIST)
    assert (len(first["members"]), first["total_items"]) == (10, 15)
    rest = client.lists.get_list_members_info(LIST, count=10, offset=10)
    assert len(rest["members"]) == 5
    only = client.lists.get_list_members_info(LIST, status="unsubscribed")
    assert [m["email_address"] for m in only["members"]] == [ADA]
    archived = client.lists.get_list_members_info(LIST, status="archived")
    assert archived["total_items"] == 1
    too_many = requests.get(
        f"{fake.base_url}/lists/{LIST}/members",
        params={"count": 1001},
        auth=("anyone", fake.api_key),
        timeout=5,
    )
    assert too_many.status_code == 400


def test_since_last_changed_is_strictly_after_to_the_second(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    fake.seed_member(LIST, GRACE)
    cursor = client.lists.get_list_member(LIST, subscriber_hash(GRACE))["last_changed"]
    assert cursor.endswith("+00:00")
    fake.advance_clock(2)
    client.lists.update_list_member(LIST, subscriber_hash(ADA), {"merge_fields": {"FNAME": "A"}})
    changed = client.lists.get_list_members_info(LIST, since_last_changed=cursor)
    assert [m["email_address"] for m in changed["members"]] == [ADA]


def test_member_listing_sorts_by_last_changed_and_bounds_it_on_both_sides(
    fake: FakeMailchimp, client
) -> None:
    fake.seed_member(LIST, ADA)
    fake.advance_clock(2)
    fake.seed_member(LIST, GRACE)
    fake.advance_clock(2)
    fake.seed_member(LIST, ALAN)
    fake.advance_clock(2)
    client.lists.update_list_member(LIST, subscriber_hash(ADA), {"merge_fields": {"FNAME": "A"}})
    newest = client.lists.get_list_members_info(LIST, sort_field="last_changed", sort_dir="DESC")
    assert [m["email_address"] for m in newest["members"]] == [ADA, ALAN, GRACE]
    grace = client.lists.get_list_member(LIST, subscriber_hash(GRACE))["last_changed"]
    before = client.lists.get_list_members_info(LIST, before_last_changed=grace)
    assert before["total_items"] == 0  # strictly before, to the second
    since = client.lists.get_list_members_info(
        LIST, since_last_changed=grace, sort_field="last_changed", sort_dir="ASC"
    )
    assert [m["email_address"] for m in since["members"]] == [ALAN, ADA]


def test_fields_and_exclude_fields_trim_the_answer(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, merge_fields={"FNAME": "Ada"})
    trimmed = client.lists.get_list_members_info(
        LIST, fields=["members.id", "members.status", "total_items"]
    )
    assert trimmed == {"members": [{"id": subscriber_hash(ADA), "status": "subscribed"}],
                       "total_items": 1}  # fmt: skip
    without = client.lists.get_list_members_info(LIST, exclude_fields=["members.merge_fields"])
    assert "merge_fields" not in without["members"][0] and "list_id" in without


def test_member_view_shape_and_lookup_by_hash_or_email(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, tags=[f"tag{i:02}" for i in range(60)])
    by_hash = client.lists.get_list_member(LIST, subscriber_hash(ADA))
    assert client.lists.get_list_member(LIST, ADA.upper())["id"] == by_hash["id"]
    assert by_hash["id"] == subscriber_hash(ADA) and by_hash["list_id"] == LIST
    assert len(by_hash["tags"]) == 50 and by_hash["tags_count"] == 60
    all_tags = client.lists.get_list_member_tags(LIST, subscriber_hash(ADA), count=100)
    assert all_tags["total_items"] == 60
    status, doc = api_error(lambda: client.lists.get_list_member(LIST, subscriber_hash(GRACE)))
    assert (status, doc["title"]) == (404, "Resource Not Found")


def test_last_changed_moves_on_every_change_and_only_then(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    stamps = [fake.members(LIST)[subscriber_hash(ADA)]["last_changed"]]
    for body in ({"merge_fields": {"FNAME": "Ada"}}, {"status": "unsubscribed"}):
        client.lists.update_list_member(LIST, subscriber_hash(ADA), body)
        stamps.append(fake.members(LIST)[subscriber_hash(ADA)]["last_changed"])
    client.lists.update_list_member_tags(
        LIST, subscriber_hash(ADA), {"tags": [{"name": "t", "status": "active"}]}
    )
    stamps.append(fake.members(LIST)[subscriber_hash(ADA)]["last_changed"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    client.lists.update_list_member(LIST, subscriber_hash(ADA), {"merge_fields": {"FNAME": "Ada"}})
    assert fake.members(LIST)[subscriber_hash(ADA)]["last_changed"] == stamps[-1]


# ---------------------------------------------------------------- PUT, PATCH, DELETE


def test_put_upserts_and_status_if_new_applies_only_to_new(fake: FakeMailchimp, client) -> None:
    put = client.lists.set_list_member
    status, _ = api_error(lambda: put(LIST, subscriber_hash(ADA), {"email_address": ADA}))
    assert status == 400
    created = put(LIST, subscriber_hash(ADA), {"email_address": ADA, "status_if_new": "pending"})
    assert created["status"] == "pending"
    again = put(LIST, subscriber_hash(ADA), {"email_address": ADA, "status_if_new": "subscribed"})
    assert again["status"] == "pending"
    assert put(LIST, subscriber_hash(ADA), {"status": "subscribed"})["status"] == "subscribed"
    tagged = {"email_address": ADA, "status": "subscribed", "tags": ["vip"]}
    assert api_error(lambda: put(LIST, subscriber_hash(ADA), tagged))[0] == 400
    bad = {"email_address": "someone@example.org", "status_if_new": "subscribed"}
    assert api_error(lambda: put(LIST, subscriber_hash(bad["email_address"]), bad))[0] == 400


def test_put_cannot_resubscribe_a_member_in_compliance_state(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    fake.member_unsubscribes(LIST, ADA)
    view = client.lists.get_list_member(LIST, subscriber_hash(ADA))
    assert view["status"] == "unsubscribed" and view["unsubscribe_reason"]
    status, doc = api_error(
        lambda: client.lists.set_list_member(LIST, subscriber_hash(ADA), {"status": "subscribed"})
    )
    assert (status, doc["title"]) == (400, "Member In Compliance State")
    pending = client.lists.set_list_member(LIST, subscriber_hash(ADA), {"status": "pending"})
    assert pending["status"] == "pending"  # the double opt-in route is allowed
    fake.seed_member(LIST, GRACE, "unsubscribed", unsubscribed_by="admin")
    back = client.lists.update_list_member(LIST, subscriber_hash(GRACE), {"status": "subscribed"})
    assert back["status"] == "subscribed"


def test_email_change_rehashes_unless_the_address_is_taken(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    fake.seed_member(LIST, GRACE)
    new = "countess@lovelace.io"
    moved = client.lists.update_list_member(LIST, subscriber_hash(ADA), {"email_address": new})
    assert moved["id"] == subscriber_hash(new)
    assert api_error(lambda: client.lists.get_list_member(LIST, subscriber_hash(ADA)))[0] == 404
    status, doc = api_error(
        lambda: client.lists.set_list_member(LIST, subscriber_hash(new), {"email_address": GRACE})
    )
    assert (status, doc["title"]) == (400, "Member Exists")


def test_patch_needs_a_member_and_refuses_transactional(fake: FakeMailchimp, client) -> None:
    patch = client.lists.update_list_member
    assert api_error(lambda: patch(LIST, subscriber_hash(ADA), {"status": "subscribed"}))[0] == 404
    fake.seed_member(LIST, ADA)
    status, doc = api_error(lambda: patch(LIST, subscriber_hash(ADA), {"status": "transactional"}))
    assert status == 400 and doc["errors"][0]["field"] == "status"


def test_archive_then_delete_permanently_forgets_forever(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    archived = client.lists.delete_list_member(LIST, subscriber_hash(ADA))
    assert isinstance(archived, requests.Response) and archived.status_code == 204
    assert client.lists.get_list_members_info(LIST)["total_items"] == 0
    assert client.lists.get_list_member(LIST, subscriber_hash(ADA))["status"] == "archived"
    gone = client.lists.delete_list_member_permanent(LIST, subscriber_hash(ADA))
    assert gone.status_code == 204 and fake.members(LIST) == {}
    body = {"email_address": ADA, "status_if_new": "subscribed"}
    status, doc = api_error(lambda: client.lists.set_list_member(LIST, subscriber_hash(ADA), body))
    assert (status, doc["title"]) == (400, "Forgotten Email Not Subscribed")
    assert "permanently deleted" in batch(client, [sub(ADA)])["errors"][0]["error"]


# ---------------------------------------------------------------- tags and segments


def test_member_tags_endpoint(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, tags=["old"])
    tags = client.lists.update_list_member_tags
    body = {"tags": [{"name": "vip", "status": "active"}, {"name": "old", "status": "inactive"}]}
    reply = tags(LIST, subscriber_hash(ADA), body)
    assert isinstance(reply, requests.Response) and reply.status_code == 204 and not reply.content
    assert fake.members(LIST)[subscriber_hash(ADA)]["tags"] == {"vip"}
    static = client.lists.list_segments(LIST, type="static")["segments"]
    assert {s["name"]: s["member_count"] for s in static} == {"old": 0, "vip": 1}
    assert api_error(lambda: tags(LIST, subscriber_hash(GRACE), body))[0] == 404
    long_tag = {"tags": [{"name": "x" * 101, "status": "active"}]}
    assert api_error(lambda: tags(LIST, subscriber_hash(ADA), long_tag))[0] == 400


def test_static_and_saved_segments(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA, merge_fields={"FNAME": "Ada"})
    fake.seed_member(LIST, GRACE, merge_fields={"FNAME": "Grace"})
    create = client.lists.create_segment
    static = create(LIST, {"name": "Founders", "static_segment": [ADA, "nobody@lovelace.io"]})
    assert (static["type"], static["member_count"]) == ("static", 1)
    assert fake.members(LIST)[subscriber_hash(ADA)]["tags"] == {"Founders"}  # a tag, too
    condition = {"condition_type": "TextMerge", "field": "FNAME", "op": "starts", "value": "gr"}
    saved = create(LIST, {"name": "G", "options": {"match": "any", "conditions": [condition]}})
    assert (saved["type"], saved["member_count"]) == ("saved", 1)
    both = {"name": "Both", "static_segment": [], "options": {"match": "any", "conditions": []}}
    assert api_error(lambda: create(LIST, both))[0] == 400
    assert api_error(lambda: create(LIST, {"name": "Founders", "static_segment": []}))[0] == 400
    listed = client.lists.list_segments(LIST, type="saved")
    assert [s["name"] for s in listed["segments"]] == ["G"]


def test_segment_batch_add_and_remove(fake: FakeMailchimp, client) -> None:
    fake.seed_member(LIST, ADA)
    fake.seed_member(LIST, GRACE, tags=["Founders"])
    seg_id = fake.segments(LIST)["Founders"]["id"]
    body = {"members_to_add": [ADA, "nobody@lovelace.io"], "members_to_remove": [GRACE]}
    result = client.lists.batch_segment_members(body, LIST, seg_id)
    assert (result["total_added"], result["total_removed"], result["error_count"]) == (1, 1, 1)
    assert result["errors"][0]["email_addresses"] == ["nobody@lovelace.io"]
    assert fake.segments(LIST)["Founders"]["members"] == {ADA}
    members = client.lists.get_segment_members_list(LIST, seg_id)
    assert [m["email_address"] for m in members["members"]] == [ADA]
    too_many = {"members_to_add": [f"p{i}@lovelace.io" for i in range(501)]}
    assert api_error(lambda: client.lists.batch_segment_members(too_many, LIST, seg_id))[0] == 400


# ---------------------------------------------------------------- faults and the request log


def test_fail_next_scripts_errors_for_matching_paths(fake: FakeMailchimp, client) -> None:
    fake.fail_next(2, status=503, retry_after=3, path_contains="/members")
    assert client.ping.get()["health_status"]  # not matched, not consumed
    for _ in range(2):
        status, doc = api_error(lambda: client.lists.get_list_members_info(LIST))
        assert (status, doc["title"]) == (503, "Service Unavailable")
    assert client.lists.get_list_members_info(LIST)["total_items"] == 0
    fake.fail_next(status=429, retry_after=1.5)
    raw = requests.get(f"{fake.base_url}/ping", auth=("u", fake.api_key), timeout=5)
    assert (raw.status_code, raw.headers["Retry-After"]) == (429, "1.5")


def test_bare_error_without_body_is_returned_by_the_sdk_not_raised(
    fake: FakeMailchimp, client
) -> None:
    fake.fail_next(status=403, body="")
    reply = client.ping.get()
    assert isinstance(reply, requests.Response) and reply.status_code == 403


def test_reset_next_drops_the_connection(fake: FakeMailchimp, client) -> None:
    fake.reset_next()
    with pytest.raises(ApiClientError) as info:
        client.ping.get()
    assert info.value.status_code is None
    assert client.ping.get()["health_status"]


def test_more_than_ten_requests_in_flight_get_429(fake: FakeMailchimp) -> None:
    fake.latency = 0.3

    def ping() -> int:
        try:
            make_client(fake).ping.get()
        except ApiClientError as err:
            assert json.loads(err.text)["title"] == "Too Many Requests"
            return err.status_code
        return 200

    with ThreadPoolExecutor(max_workers=14) as pool:
        statuses = list(pool.map(lambda _: ping(), range(14)))
    assert statuses.count(429) >= 1 and statuses.count(200) <= 10
    assert set(statuses) == {200, 429}
    assert fake.peak_in_flight > 10  # it counts what it saw, refused ones included


def test_request_log_and_write_calls(fake: FakeMailchimp, client) -> None:
    client.ping.get()
    batch(client, [sub(ADA)], update_existing=True)
    client.lists.get_list_members_info(LIST, count=5)
    assert [(m, p) for m, p, _, _ in fake.requests] == [
        ("GET", "/3.0/ping"),
        ("POST", f"/3.0/lists/{LIST}"),
        ("GET", f"/3.0/lists/{LIST}/members"),
    ]
    assert fake.requests[1][3]["update_existing"] is True
    assert fake.requests[2][2] == {"count": "5"}
    assert fake.write_calls() == 1


# ---------------------------------------------------------------- /batches


def test_batches_run_one_at_a_time_at_one_call_per_operation() -> None:
    """Mailchimp runs one batch at a time, in the background; the fake takes the harsher
    reading of its pace: each operation as long as the same call made directly."""
    import time

    with FakeMailchimp(batch_op_s=0.05) as fake:
        fake.add_list(LIST)
        client = make_client(fake)
        ops = [{"method": "GET", "path": "/ping", "operation_id": str(i)} for i in range(3)]
        started = time.monotonic()
        first = client.batches.start({"operations": ops})
        second = client.batches.start({"operations": ops})
        assert client.batches.status(second["id"])["status"] == "pending"  # waits its turn
        ids = {first["id"], second["id"]}
        while ids:
            for batch_id in list(ids):
                if client.batches.status(batch_id)["status"] == "finished":
                    ids.discard(batch_id)
            time.sleep(0.01)
        assert time.monotonic() - started >= 6 * 0.05  # six operations, one after another
        done = client.batches.status(second["id"])
        assert done["finished_operations"] == 3 and done["errored_operations"] == 0
