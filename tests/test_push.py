"""The push layer end to end: the real SDK against a stateful Mailchimp fake."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from syncbridge.config.mapping import Mapping
from syncbridge.config.models import (
    AudienceConfig,
    IdentityConfig,
    MailchimpConfig,
    MergeFieldConfig,
)
from syncbridge.errors import AuthError
from syncbridge.identity import resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.push import members as push_members
from syncbridge.push.client import MailchimpClient
from syncbridge.push.desired import subscriber_hash
from syncbridge.push.provision import provision_merge_fields
from syncbridge.push.sync import push
from syncbridge.rules.stage import hand_over
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import MemberState, Profile
from syncbridge.transform import RecordTransformer

from .fakes.mailchimp import FakeMailchimp
from .streams import ListStream, deleted

MAPPING = Mapping.model_validate(tomllib.loads("""
[identifiers]
email = "email"
external = { "crm" = "id" }
[attributes]
first_name = "first_name"
accepts_email_marketing = { field = "optin", type = "boolean" }
email_opt_out = { field = "optout", type = "boolean" }
ltv = { field = "ltv", type = "number" }
shop_tags = "tags"
"""))  # fmt: skip

AUDIENCE = AudienceConfig(
    name="customers",
    list_id="L1",
    merge_fields=[
        MergeFieldConfig(tag="FNAME", name="First Name", source="first_name"),
        MergeFieldConfig(tag="LTV", name="Lifetime value", type="number", source="ltv"),
        MergeFieldConfig(
            tag="GREETING", name="Greeting", template="{{ first_name | default: 'there' }}"
        ),
    ],
    tag_attributes=["shop_tags"],
)


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    yield engine
    engine.dispose()


def settings_for(
    fake: FakeMailchimp, tags_in_batch: bool = True, **audience: Any
) -> MailchimpConfig:
    return MailchimpConfig(
        api_key=SecretStr(fake.api_key), api_base_url=fake.base_url, retries=3,
        tags_in_batch=tags_in_batch, audiences=[AUDIENCE.model_copy(update=audience)],
    )  # fmt: skip


def client_for(config: MailchimpConfig) -> MailchimpClient:
    return MailchimpClient(config, backoff_s=0.001)


def person(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"c{i}", "email": f"person{i}@gmail.com", "first_name": f"P{i}", "optin": "yes",
            "ltv": str(100 * i), "tags": "", **kw}  # fmt: skip


def load(engine: Engine, rows: list[dict[str, Any]]) -> None:
    job = StreamIngest("crm", ListStream("contacts", rows), RecordTransformer(MAPPING, "US"))
    ingest_stream(engine, job)
    resolve_pending(engine, IdentityConfig())
    hand_over(engine)


def state(engine: Engine, email: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(MemberState.__table__).where(MemberState.__table__.c.email == email)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else {}


def redirty(engine: Engine) -> None:
    """Journal every profile as changed: the next push plans them all again."""
    from syncbridge.store import journal

    with engine.begin() as conn:
        ids = conn.execute(select(Profile.__table__.c.id)).scalars().all()
        journal.append(conn, journal.PROFILE, ids)


def test_provisioning_creates_missing_fields_once(fake: FakeMailchimp) -> None:
    config = settings_for(fake)
    client = client_for(config)
    assert provision_merge_fields(client, config.audiences[0]) == ["LTV", "GREETING"]
    assert provision_merge_fields(client, config.audiences[0]) == []
    types = (
        {f["tag"]: f["type"] for f in fake.merge_fields("L1").values()}
        if isinstance(fake.merge_fields("L1"), dict)
        else {f["tag"]: f["type"] for f in fake.merge_fields("L1")}
    )
    assert types["LTV"] == "number" and types["GREETING"] == "text"


def test_type_conflict_is_refused_clearly(fake: FakeMailchimp) -> None:
    bad = AUDIENCE.model_copy(
        update={
            "merge_fields": [
                MergeFieldConfig(tag="FNAME", name="First", type="number", source="first_name")
            ]
        }
    )
    config = settings_for(fake)
    with pytest.raises(
        Exception, match="FNAME is a text field in Mailchimp, the mapping says number"
    ):
        provision_merge_fields(client_for(config), bad)


def test_first_push_creates_members_and_an_unchanged_second_push_writes_nothing(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(
        engine, [person(i, tags="vip, newsletter" if i % 2 else "newsletter") for i in range(1, 8)]
    )
    config = settings_for(fake)
    report = push(engine, config, client_for(config))
    assert report.audiences[0].applied["new members"] == 7
    members = fake.members("L1")
    assert len(members) == 7
    one = members[subscriber_hash("person1@gmail.com")]
    assert one["status"] == "subscribed"
    assert one["merge_fields"]["GREETING"] == "P1" and one["merge_fields"]["LTV"] == 100
    assert set(one["tags"]) == {"vip", "newsletter"}
    segment_calls = [r for r in fake.requests if r[0] == "POST" and "/segments" in r[1]]
    assert segment_calls == []  # the tags went inside the batch upsert
    [upsert] = [b for m, p, _, b in fake.requests if m == "POST" and p == "/3.0/lists/L1"]
    assert upsert["members"][0]["tags"] == ["newsletter", "vip"]
    writes = fake.write_calls()
    redirty(engine)
    push(engine, config, client_for(config))
    assert fake.write_calls() == writes


def test_admin_unsubscribed_member_is_never_resubscribed(
    fake: FakeMailchimp, engine: Engine
) -> None:
    fake.seed_member("L1", "person1@gmail.com", "unsubscribed", unsubscribed_by="admin")
    load(engine, [person(1)])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "P1"  # data still flows


def test_unsubscribe_in_mailchimp_is_read_back_and_kept(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(1)])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    fake.member_unsubscribes("L1", "person1@gmail.com")
    load(engine, [person(1, first_name="Paula")])
    push(engine, config, client_for(config))
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "Paula"
    assert state(engine, "person1@gmail.com")["status"] == "unsubscribed"


def test_source_opt_out_unsubscribes_and_no_consent_is_not_added(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(1), person(2, optin="")])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    assert set(fake.members("L1")) == {subscriber_hash("person1@gmail.com")}
    load(engine, [person(1, optout="1"), person(2, optin="")])
    push(engine, config, client_for(config))
    assert fake.members("L1")[subscriber_hash("person1@gmail.com")]["status"] == "unsubscribed"


def test_refused_member_is_recorded_and_not_retried_until_it_changes(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(1), person(2, email="someone@example.com")])
    config = settings_for(fake)
    report = push(engine, config, client_for(config))
    assert [e for e, _ in report.audiences[0].errors] == ["someone@example.com"]
    assert (
        "fake" in state(engine, "someone@example.com").get("error", "")
        or state(engine, "someone@example.com") == {}
    )
    calls = fake.write_calls()
    redirty(engine)
    push(engine, config, client_for(config))
    assert fake.write_calls() == calls


def test_transient_failures_are_retried(fake: FakeMailchimp, engine: Engine) -> None:
    load(engine, [person(1)])
    fake.fail_next(2, status=429, retry_after=0, path_contains="/lists/L1")
    fake.fail_next(1, status=503, path_contains="/lists/L1")
    fake.reset_next(1, path_contains="/lists/L1")
    config = settings_for(fake).model_copy(update={"retries": 6})
    push(engine, config, client_for(config))
    assert fake.members("L1")[subscriber_hash("person1@gmail.com")]["status"] == "subscribed"


def test_bad_key_stops_with_the_key_masked(fake: FakeMailchimp, engine: Engine) -> None:
    load(engine, [person(1)])
    secret = "ffffffffffffffffffffffffffffffff-us21"
    config = settings_for(fake).model_copy(update={"api_key": SecretStr(secret)})
    with pytest.raises(AuthError) as info:
        push(engine, config, client_for(config))
    assert secret not in str(info.value)
    assert "API key" in str(info.value)


def test_crash_after_the_call_before_acknowledgement_repeats_the_call(
    fake: FakeMailchimp, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(engine, [person(1), person(2)])
    config = settings_for(fake)
    real = push_members.write_states

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(push_members, "write_states", crash)
    with pytest.raises(RuntimeError):
        push(engine, config, client_for(config))
    assert len(fake.members("L1")) == 2  # Mailchimp has them, we did not record it
    assert state(engine, "person1@gmail.com") == {}
    monkeypatch.setattr(push_members, "write_states", real)
    push(engine, config, client_for(config))
    assert state(engine, "person1@gmail.com")["status"] == "subscribed"
    assert len(fake.members("L1")) == 2


def test_deleted_profile_is_archived(fake: FakeMailchimp, engine: Engine) -> None:
    load(engine, [person(1), person(2)])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    load(engine, [deleted(person(2))])
    push(engine, config, client_for(config))
    assert fake.members("L1")[subscriber_hash("person2@gmail.com")]["status"] == "archived"
    assert state(engine, "person2@gmail.com")["status"] == "archived"


def test_email_change_updates_the_member_in_place(fake: FakeMailchimp, engine: Engine) -> None:
    load(engine, [person(1)])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    load(engine, [person(1, email="p1.new@gmail.com")])
    push(engine, config, client_for(config))
    members = fake.members("L1")
    assert subscriber_hash("p1.new@gmail.com") in members
    assert subscriber_hash("person1@gmail.com") not in members


def test_calls_share_the_connection_limit(fake: FakeMailchimp) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake.latency = 0.05
    config = settings_for(fake).model_copy(update={"retries": 0})
    client = client_for(config)
    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda _: client.call(client.sdk.ping.get), range(50)))
    # with retries off, a single 429 would have raised: the limit kept every call under 10
    assert all(r["health_status"] == "Everything's Chimpy!" for r in results)
    # the same burst without the shared limit trips Mailchimp's 10-connection rule
    unlimited = client_for(config.model_copy(update={"max_connections": 10}))
    unlimited.slots = threading.BoundedSemaphore(50)
    with ThreadPoolExecutor(max_workers=25) as pool:
        outcomes = list(pool.map(lambda _: _try(unlimited), range(50)))
    assert "429" in outcomes


def tag_additions(requests: list[Any]) -> list[list[str]]:
    """The addresses each tag call added: segment batches, and new tags created holding them."""
    return [
        body.get("members_to_add", body.get("static_segment"))
        for method, path, _, body in requests
        if method == "POST"
        and "/segments" in path
        and body.get("static_segment") != []
        and (body.get("members_to_add") or body.get("static_segment"))
    ]


def _try(client: MailchimpClient) -> str:
    try:
        client.call(client.sdk.ping.get)
        return "ok"
    except Exception as exc:  # RetriableError after retries=0
        return "429" if "429" in str(exc) else type(exc).__name__


def test_merge_field_limit_is_refused_before_anything_is_created(fake: FakeMailchimp) -> None:
    fake.add_list("SMALL", merge_field_limit=6)
    config = settings_for(fake, list_id="SMALL", merge_field_limit=6)
    with pytest.raises(
        Exception, match=r"has 5 merge fields; adding LTV, GREETING would pass its limit of 6"
    ):
        provision_merge_fields(client_for(config), config.audiences[0])
    assert set(fake.merge_fields("SMALL")) == {"FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY"}


def test_merge_field_limit_reached_in_mailchimp_is_reported(fake: FakeMailchimp) -> None:
    fake.add_list("SMALL", merge_field_limit=6)
    config = settings_for(fake, list_id="SMALL")  # the config believes 30 are allowed
    with pytest.raises(Exception, match=r"cannot create merge field GREETING \(6 fields exist\)"):
        provision_merge_fields(client_for(config), config.audiences[0])


def test_demo_pushes_the_sample_data_to_an_audience_and_then_writes_nothing(
    fake: FakeMailchimp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from syncbridge.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCHIMP_API_KEY", fake.api_key)
    monkeypatch.setenv("SYNCBRIDGE_MAILCHIMP__API_BASE_URL", fake.base_url)
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "--audience", "L1"])
    assert first.exit_code == 0, first.output
    assert "Pushed to audience customers" in first.output
    members = fake.members("L1")
    assert len(members) > 50
    assert all(m["status"] in ("subscribed", "unsubscribed") for m in members.values())
    all_tags = set().union(*(m["tags"] for m in members.values()))
    assert {"VIP", "NY_Customers", "Customer_Purchase"} <= all_tags  # rule segments and tags
    assert any(t.startswith("Browsed:") for t in all_tags)
    headlines = {m["merge_fields"].get("HEADLINE") for m in members.values()}
    assert "Early access, just for you" in headlines  # content rules as merge fields
    writes = fake.write_calls()
    second = runner.invoke(app, ["demo", "--audience", "L1"])
    assert second.exit_code == 0, second.output
    assert fake.write_calls() == writes
    assert fake.api_key not in first.output + second.output


def test_status_and_profile_views_show_what_mailchimp_acknowledged(
    fake: FakeMailchimp, engine: Engine
) -> None:
    from syncbridge import views

    load(engine, [person(1, tags="vip"), person(2, email="someone@example.com")])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    [audience] = views.status(engine).audiences
    assert audience["statuses"] == {"subscribed": 1, "not added": 1}
    assert audience["refused"] == 1
    profile = views.find_profile(engine, "person1@gmail.com")
    assert profile is not None
    assert [(m["status"], m["tags"]) for m in profile.members] == [("subscribed", ["vip"])]


def test_saved_segments_are_created_once_and_updated_when_the_config_changes(
    fake: FakeMailchimp,
) -> None:
    from syncbridge.config.models import SavedSegmentConfig
    from syncbridge.push.provision import provision_segments

    ny = SavedSegmentConfig(
        name="NY customers",
        conditions=[
            {"condition_type": "TextMerge", "field": "CITY", "op": "is", "value": "New York"}
        ],
    )
    config = settings_for(fake, segments=[ny])
    client = client_for(config)
    assert provision_segments(client, config.audiences[0]) == ["NY customers"]
    assert provision_segments(client, config.audiences[0]) == []
    changed = ny.model_copy(update={"match": "any"})
    assert provision_segments(
        client, config.audiences[0].model_copy(update={"segments": [changed]})
    ) == ["NY customers"]
    saved = fake.segments("L1")["NY customers"]
    assert saved["type"] == "saved" and saved["options"]["match"] == "any"


def test_large_push_is_split_into_500_member_batches_and_all_acknowledged(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(i, tags="bulk") for i in range(1, 1201)])
    config = settings_for(fake, tags_in_batch=False)  # the tags by segment calls
    report = push(engine, config, client_for(config))
    batch_sizes = sorted(
        len(body["members"]) for method, path, _, body in fake.requests
        if method == "POST" and path.endswith("/lists/L1")
    )  # fmt: skip
    assert batch_sizes == [200, 500, 500]
    tag_sizes = sorted(len(adds) for adds in tag_additions(fake.requests))
    assert tag_sizes == [200, 500, 500]  # the first call creates the tag holding 500
    assert report.audiences[0].applied["new members"] == 1200
    assert report.audiences[0].applied["tag additions"] == 1200
    with engine.connect() as conn:
        acked = (
            conn.execute(
                select(MemberState.__table__.c.tags).where(
                    MemberState.__table__.c.status == "subscribed"
                )
            )
            .scalars()
            .all()
        )
    assert len(acked) == 1200 and all(tags == ["bulk"] for tags in acked)


def test_large_loads_go_through_batches_and_are_acknowledged_from_the_archive(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(i) for i in range(1, 1101)] + [person(9999, email="qa@example.com")])
    config = settings_for(fake).model_copy(update={"batch_threshold": 1000, "batch_poll_s": 0.01})
    report = push(engine, config, client_for(config))
    paths = [(m, p) for m, p, _, _ in fake.requests]
    assert ("POST", "/3.0/batches") in paths
    assert not any(m == "POST" and p == "/3.0/lists/L1" for m, p in paths)  # no direct upserts
    assert sum(1 for m, p in paths if m == "GET" and p.startswith("/3.0/batches/")) >= 2  # polled
    applied = report.audiences[0].applied
    assert applied["new members"] == 1100 and applied["batches"] == 1
    assert [e for e, _ in report.audiences[0].errors] == ["qa@example.com"]
    assert len(fake.members("L1")) == 1100
    assert state(engine, "person1100@gmail.com")["status"] == "subscribed"


def test_changed_profile_sends_only_the_changed_field_and_moves_its_tags(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, [person(1, tags="vip, newsletter")])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    before = len(fake.requests)
    load(engine, [person(1, ltv="250", tags="newsletter, wholesale")])
    push(engine, config, client_for(config))
    new = fake.requests[before:]
    [upsert] = [b for m, p, _, b in new if m == "POST" and p == "/3.0/lists/L1"]
    assert upsert["members"][0]["merge_fields"] == {"LTV": 250}
    assert upsert["members"][0]["tags"] == ["wholesale"]  # an addition goes with the upsert
    segment_bodies = [b for m, p, _, b in new if m == "POST" and "/segments/" in p]
    # a removal never does (a batch upsert only adds): it is a segment call
    assert segment_bodies == [{"members_to_add": [], "members_to_remove": ["person1@gmail.com"]}]
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert set(member["tags"]) == {"newsletter", "wholesale"}
    assert member["merge_fields"]["LTV"] == 250


def test_cleaned_and_archived_members_are_left_as_mailchimp_has_them(
    fake: FakeMailchimp, engine: Engine
) -> None:
    fake.seed_member("L1", "person1@gmail.com", "cleaned")
    fake.seed_member("L1", "person2@gmail.com", "subscribed")
    fake.archive_member("L1", "person2@gmail.com")
    load(engine, [person(1), person(2)])
    config = settings_for(fake)
    report = push(engine, config, client_for(config))
    members = fake.members("L1")
    assert members[subscriber_hash("person1@gmail.com")]["status"] == "cleaned"
    assert members[subscriber_hash("person2@gmail.com")]["status"] == "archived"
    assert report.audiences[0].planned["skipped: archived in Mailchimp"] == 1


def test_email_change_to_an_address_already_in_the_audience_archives_the_old_member(
    fake: FakeMailchimp, engine: Engine
) -> None:
    fake.seed_member("L1", "p1.work@gmail.com", "subscribed")
    load(engine, [person(1)])
    config = settings_for(fake)
    push(engine, config, client_for(config))
    load(engine, [person(1, email="p1.work@gmail.com")])
    push(engine, config, client_for(config))
    members = fake.members("L1")
    assert members[subscriber_hash("person1@gmail.com")]["status"] == "archived"
    assert members[subscriber_hash("p1.work@gmail.com")]["merge_fields"]["FNAME"] == "P1"
    assert state(engine, "p1.work@gmail.com")["status"] == "subscribed"


def test_audience_limited_to_a_segment_takes_members_and_archives_leavers(
    fake: FakeMailchimp, engine: Engine
) -> None:
    from datetime import UTC, datetime

    from syncbridge.rules.config import RulesConfig
    from syncbridge.rules.stage import run_rules

    rules = RulesConfig.model_validate({"segments": [{"name": "Big", "rule": "ltv > 150"}]})
    job = StreamIngest(
        "crm", ListStream("contacts", [person(1), person(2)]), RecordTransformer(MAPPING, "US")
    )
    ingest_stream(engine, job)
    resolve_pending(engine, IdentityConfig())
    now = datetime(2026, 11, 23, tzinfo=UTC)
    run_rules(engine, rules, now)
    config = settings_for(fake, segment="Big")
    push(engine, config, client_for(config))
    assert set(fake.members("L1")) == {subscriber_hash("person2@gmail.com")}  # ltv 200 > 150
    job = StreamIngest(
        "crm",
        ListStream("contacts", [person(1), person(2, ltv="100")]),
        RecordTransformer(MAPPING, "US"),
    )
    ingest_stream(engine, job)
    resolve_pending(engine, IdentityConfig())
    run_rules(engine, rules, now)
    push(engine, config, client_for(config))
    assert fake.members("L1")[subscriber_hash("person2@gmail.com")]["status"] == "archived"


def test_plan_checked_against_mailchimp_lists_fields_and_tags_to_create(
    fake: FakeMailchimp, engine: Engine
) -> None:
    from syncbridge.push.sync import build_plan, check_provisioning

    load(engine, [person(1, tags="vip")])
    config = settings_for(fake)
    plan = build_plan(engine, config.audiences[0], [1])
    writes = fake.write_calls()
    check_provisioning(client_for(config), plan)
    assert plan.fields_to_create == ["LTV", "GREETING"]
    assert plan.tags_to_create == ["vip"]
    assert plan.counts()["merge fields to create"] == 2
    assert fake.write_calls() == writes  # a plan never writes


def test_untag_removal_takes_the_synced_tags_once_and_then_leaves_the_member_alone(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """`removal = "untag"`: members leaving the audience keep their subscription and lose the
    synced tags. Before the fix the untag was planned again at every later change of those
    profiles, with nothing left to take: counted as removals, it tripped the mass-removal
    guard on a cycle that would remove nothing."""
    from datetime import UTC, datetime

    from syncbridge.push.guard import MassRemovalError
    from syncbridge.rules.config import RulesConfig
    from syncbridge.rules.stage import run_rules

    rules = RulesConfig.model_validate({"segments": [{"name": "Big", "rule": "ltv > 150"}]})
    config = settings_for(fake, segment="Big", removal="untag")
    now = datetime(2026, 11, 23, tzinfo=UTC)

    def cycle(ltv: str, **options: Any) -> Any:
        people = [person(i, ltv=ltv, tags="vip") for i in range(1, 13)]
        ingest_stream(engine, StreamIngest("crm", ListStream("contacts", people),
                                           RecordTransformer(MAPPING, "US")))  # fmt: skip
        resolve_pending(engine, IdentityConfig())
        run_rules(engine, rules, now)
        return push(engine, config, client_for(config), **options).audiences[0]

    cycle("200")
    members = fake.members("L1")
    assert len(members) == 12 and all(set(m["tags"]) == {"Big", "vip"} for m in members.values())
    left = cycle("100", allow_mass_removal=True)  # all twelve leave the segment
    assert left.applied["tag removals"] == 24
    members = fake.members("L1")
    assert all(m["status"] == "subscribed" and not m["tags"] for m in members.values())
    assert all(state(engine, f"person{i}@gmail.com")["tags"] == [] for i in range(1, 13))
    try:
        again = cycle("90")  # changed again, still outside: nothing to take
    except MassRemovalError as exc:
        pytest.fail(f"an untag with nothing left to take counted as a removal: {exc}")
    assert again.applied == {} and again.planned["tag removals"] == 0
