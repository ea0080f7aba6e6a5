"""The README's push promises, each tried the way it broke against independent Mailchimp
implementations (issue 10): absent consent, pending members, every way out of an audience with
and without rules, repeated and half-answered operations, and the mass-removal guard.

Each test here failed on the code before its fix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.config.models import IdentityConfig, MailchimpConfig
from syncbridge.identity import resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.push.desired import subscriber_hash
from syncbridge.push.guard import MassRemovalError
from syncbridge.push.sync import push
from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import hand_over, run_rules
from syncbridge.store.tables import DestinationQueue, Profile, SegmentMembership
from syncbridge.transform import RecordTransformer

from .fakes.mailchimp import FakeMailchimp
from .streams import ListStream, deleted
from .test_push import MAPPING, client_for, engine, fake, person, settings_for, state

__all__ = ["engine", "fake"]  # fixtures shared with test_push

RULES = RulesConfig.model_validate(
    {
        "segments": [
            {"name": "Everyone", "rule": "ltv >= 0"},
            {"name": "Big", "rule": "ltv >= 300"},
        ],
    }
)
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def cycle(
    engine: Engine, rows: list[dict[str, Any]], rules: RulesConfig | None, stream: str = "contacts"
) -> None:
    """Ingest, resolve and the rules stage (or the hand-over without rules), as a cycle does."""
    job = StreamIngest("crm", ListStream(stream, rows), RecordTransformer(MAPPING, "US"))
    ingest_stream(engine, job)
    resolve_pending(engine, IdentityConfig())
    if rules is None:
        hand_over(engine)
    else:
        run_rules(engine, rules, NOW)


def sent(fake: FakeMailchimp, config: MailchimpConfig, engine: Engine, **kw: Any) -> Any:
    return push(engine, config, client_for(config), **kw)


def status_of(fake: FakeMailchimp, email: str) -> str | None:
    member = fake.members("L1").get(subscriber_hash(email))
    return member["status"] if member else None


# ---------------------------------------------------------------- 1. absent consent


@pytest.mark.parametrize("optin", ["no", ""])
def test_absent_consent_never_unsubscribes_a_subscribed_member(
    fake: FakeMailchimp, engine: Engine, optin: str
) -> None:
    """Shopify's "Accepts Email Marketing = no" is the default for anyone who never ticked the
    box: someone who signed up through a Mailchimp form stays subscribed."""
    fake.seed_member("L1", "person1@gmail.com", "subscribed")
    cycle(engine, [person(1, optin=optin)], None)
    config = settings_for(fake)
    sent(fake, config, engine)
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["status"] == "subscribed"
    assert member["merge_fields"]["FNAME"] == "P1"  # the update itself went through


def test_absent_consent_adds_no_one_and_an_explicit_opt_out_unsubscribes(
    fake: FakeMailchimp, engine: Engine
) -> None:
    fake.seed_member("L1", "person2@gmail.com", "subscribed")
    cycle(engine, [person(1, optin="no"), person(2, optin="yes", optout="yes")], None)
    config = settings_for(fake)
    sent(fake, config, engine)
    assert status_of(fake, "person1@gmail.com") is None  # never added without consent
    assert status_of(fake, "person2@gmail.com") == "unsubscribed"  # the CRM's opt-out wins


def test_without_consent_transactional_adds_absent_consent_as_transactional(
    fake: FakeMailchimp, engine: Engine
) -> None:
    cycle(engine, [person(1, optin="no")], None)
    config = settings_for(fake, without_consent="transactional")
    sent(fake, config, engine)
    assert status_of(fake, "person1@gmail.com") == "transactional"


# ---------------------------------------------------------------- 2. pending members


def test_updates_to_a_pending_member_never_resend_the_opt_in_email(
    fake: FakeMailchimp, engine: Engine
) -> None:
    fake.seed_member("L1", "person1@gmail.com", "pending")  # a double opt-in signup form
    aud = fake._api.audiences["L1"]
    emails_before = aud.confirmations["person1@gmail.com"]
    config = settings_for(fake)
    for ltv in ("100", "250", "400"):
        cycle(engine, [person(1, ltv=ltv, tags="vip")], None)
        sent(fake, config, engine)
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["status"] == "pending"
    assert member["merge_fields"]["LTV"] == 400
    assert "vip" in member["tags"]
    assert aud.confirmations["person1@gmail.com"] == emails_before  # no re-sent opt-in email
    assert state(engine, "person1@gmail.com")["status"] == "pending"


# ---------------------------------------------------------------- 3. every way out


@pytest.mark.parametrize("rules", [None, RULES], ids=["no-rules", "rules"])
def test_every_way_out_of_the_audience_reaches_mailchimp(
    fake: FakeMailchimp, engine: Engine, rules: RulesConfig | None
) -> None:
    people = [person(i) for i in range(1, 6)]
    cycle(engine, people, rules)
    config = settings_for(fake)
    sent(fake, config, engine)
    assert {status_of(fake, p["email"]) for p in people} == {"subscribed"}
    changed = [
        deleted(people[0]),  # deleted at every source
        person(2, email="person2.new@gmail.com"),  # email changed
        person(3, optout="yes"),  # unsubscribed at the source
        person(4, email="person5@gmail.com"),  # now the same person as 5: merged away
        people[4],
    ]
    cycle(engine, changed, rules)
    report = sent(fake, config, engine)
    assert status_of(fake, "person1@gmail.com") == "archived"
    assert status_of(fake, "person2@gmail.com") is None  # renamed in place
    assert status_of(fake, "person2.new@gmail.com") == "subscribed"
    assert status_of(fake, "person3@gmail.com") == "unsubscribed"
    assert status_of(fake, "person4@gmail.com") == "archived"
    assert status_of(fake, "person5@gmail.com") == "subscribed"
    assert report.audiences[0].errors == []
    with engine.connect() as conn:
        waiting = conn.execute(
            select(Profile.__table__.c.id).where(Profile.__table__.c.dirty)
        ).all()
        waiting += conn.execute(select(DestinationQueue.__table__.c.profile_id)).all()
        open_rows = conn.execute(
            select(SegmentMembership.__table__.c.profile_id)
            .join(
                Profile.__table__,
                Profile.__table__.c.id == SegmentMembership.__table__.c.profile_id,
            )
            .where(
                SegmentMembership.__table__.c.exited_at.is_(None),
                Profile.__table__.c.deleted.is_(True),
            )
        ).all()
    assert waiting == []  # nothing left behind for a later stage
    assert open_rows == []  # deleted and merged-away profiles left their segments


def test_leaving_the_audience_segment_archives_with_rules(
    fake: FakeMailchimp, engine: Engine
) -> None:
    rules = RulesConfig.model_validate({"segments": [{"name": "Big", "rule": "ltv > 150"}]})
    cycle(engine, [person(1, ltv="200"), person(2, ltv="300")], rules)
    config = settings_for(fake, segment="Big")
    sent(fake, config, engine)
    cycle(engine, [person(1, ltv="100"), person(2, ltv="300")], rules)
    sent(fake, config, engine)
    assert status_of(fake, "person1@gmail.com") == "archived"
    assert status_of(fake, "person2@gmail.com") == "subscribed"


@pytest.mark.parametrize("rules", [None, RULES], ids=["no-rules", "rules"])
def test_a_merge_that_keeps_the_merged_away_address_does_not_archive_it(
    fake: FakeMailchimp, engine: Engine, rules: RulesConfig | None
) -> None:
    """Two members, one person: the survivor takes over the other's address, which must stay
    in the audience (with the survivor's data); the survivor's old address goes."""
    cycle(engine, [person(7, first_name="Ann"), person(8, first_name="Ann", tags="vip")], rules)
    config = settings_for(fake)
    sent(fake, config, engine)
    # a later record says c7 is reached at person8's address: one person now
    cycle(engine, [person(7, email="person8@gmail.com", first_name="Annie")], rules)
    report = sent(fake, config, engine)
    assert report.audiences[0].errors == []
    live = {
        m["email_address"]: m for m in fake.members("L1").values() if m["status"] == "subscribed"
    }
    assert set(live) == {"person8@gmail.com"}
    assert status_of(fake, "person7@gmail.com") == "archived"
    with engine.connect() as conn:
        holders = conn.execute(
            select(Profile.__table__.c.id).where(
                Profile.__table__.c.deleted.is_(False),
                Profile.__table__.c.email == "person8@gmail.com",
            )
        ).all()
    assert len(holders) == 1
    # a push with nothing new writes nothing: the survivor's state matches the address
    writes = fake.write_calls()
    sent(fake, config, engine)
    assert fake.write_calls() == writes


# ---------------------------------------------------------------- 4. repeated operations


def test_a_repeated_tag_removal_is_confirmed_and_the_tag_can_come_back(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """Mailchimp applied a removal whose acknowledgement was lost; the rerun's repeat is
    answered "not a member of the segment", which is the wanted state."""
    config = settings_for(fake)
    cycle(engine, [person(1, tags="vip")], None)
    sent(fake, config, engine)
    fake.lose_answer_next(path_contains="POST /3.0/lists/L1/segments/")
    fake.lose_answer_next(path_contains="POST /3.0/lists/L1/segments/")
    cycle(engine, [person(1, tags="")], None)
    report = sent(fake, config, engine)
    assert "vip" not in fake.members("L1")[subscriber_hash("person1@gmail.com")]["tags"]
    assert report.audiences[0].errors == []
    assert state(engine, "person1@gmail.com")["tags"] == []
    cycle(engine, [person(1, tags="vip")], None)  # the source gives the tag back
    sent(fake, config, engine)
    assert "vip" in fake.members("L1")[subscriber_hash("person1@gmail.com")]["tags"]


def test_a_repeated_tag_addition_is_confirmed_by_looking(
    fake: FakeMailchimp, engine: Engine
) -> None:
    config = settings_for(fake)
    cycle(engine, [person(1)], None)
    sent(fake, config, engine)
    fake.lose_answer_next(path_contains="POST /3.0/lists/L1/segments/")
    cycle(engine, [person(1, tags="vip")], None)
    report = sent(fake, config, engine)
    assert report.audiences[0].errors == []
    assert state(engine, "person1@gmail.com")["tags"] == ["vip"]


@pytest.mark.parametrize(
    "lost",
    ["POST /3.0/lists/L1/merge-fields", "POST /3.0/lists/L1/segments"],
    ids=["merge-field", "tag"],
)
def test_a_create_whose_answer_was_lost_is_found_not_failed(
    fake: FakeMailchimp, engine: Engine, lost: str
) -> None:
    config = settings_for(fake)
    cycle(engine, [person(1, tags="vip")], None)
    fake.lose_answer_next(path_contains=lost)
    report = sent(fake, config, engine)  # the retry meets "... already exists"
    assert report.audiences[0].errors == []
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["merge_fields"]["LTV"] == 100 and "vip" in member["tags"]
    assert len([s for s in fake.segments("L1") if s.lower() == "vip"]) == 1


def test_a_saved_segment_whose_create_answer_was_lost_is_found(
    fake: FakeMailchimp, engine: Engine
) -> None:
    from syncbridge.config.models import SavedSegmentConfig

    segment = SavedSegmentConfig(
        name="New York",
        match="all",
        conditions=[{"condition_type": "TextMerge", "field": "FNAME", "op": "is", "value": "P1"}],
    )
    config = settings_for(fake, segments=[segment])
    cycle(engine, [person(1)], None)
    fake.lose_answer_next(path_contains="POST /3.0/lists/L1/segments")
    sent(fake, config, engine)
    assert [s for s in fake.segments("L1") if s == "New York"] == ["New York"]


def test_an_existing_tag_is_used_whatever_its_case(fake: FakeMailchimp, engine: Engine) -> None:
    fake.seed_member("L1", "someone@gmail.com", tags=["VIP"])
    config = settings_for(fake)
    cycle(engine, [person(1, tags="vip")], None)
    report = sent(fake, config, engine)
    assert report.audiences[0].errors == []
    assert [s for s in fake.segments("L1") if s.lower() == "vip"] == ["VIP"]
    assert fake.segments("L1")["VIP"]["members"] == {"someone@gmail.com", "person1@gmail.com"}


def test_an_email_change_whose_answer_was_lost_is_confirmed(
    fake: FakeMailchimp, engine: Engine
) -> None:
    config = settings_for(fake)
    cycle(engine, [person(1)], None)
    sent(fake, config, engine)
    fake.lose_answer_next(path_contains="PATCH /3.0/lists/L1/members/")
    cycle(engine, [person(1, email="p1.new@gmail.com")], None)
    report = sent(fake, config, engine)
    assert report.audiences[0].errors == []
    assert state(engine, "p1.new@gmail.com")["status"] == "subscribed"
    assert status_of(fake, "p1.new@gmail.com") == "subscribed"


# ---------------------------------------------------------------- 7. mass removal


def test_a_mass_removal_stops_before_anything_is_applied(
    fake: FakeMailchimp, engine: Engine
) -> None:
    people = [person(i) for i in range(1, 31)]
    cycle(engine, people, None)
    config = settings_for(fake)
    sent(fake, config, engine)
    cycle(engine, [deleted(p) for p in people[:12]] + [person(30, first_name="Changed")], None)
    writes = fake.write_calls()
    with pytest.raises(MassRemovalError) as info:
        sent(fake, config, engine)
    message = str(info.value)
    assert "12 of 30 members" in message and "--allow-mass-removal" in message
    assert fake.write_calls() == writes  # nothing applied: not even the unrelated update
    assert status_of(fake, "person1@gmail.com") == "subscribed"
    with pytest.raises(MassRemovalError):  # still owed: the next cycle stops again
        sent(fake, config, engine)
    sent(fake, config, engine, allow_mass_removal=True)
    assert status_of(fake, "person1@gmail.com") == "archived"
    assert status_of(fake, "person13@gmail.com") == "subscribed"


def test_taking_one_tag_from_most_members_is_a_mass_removal(
    fake: FakeMailchimp, engine: Engine
) -> None:
    people = [person(i, tags="vip") for i in range(1, 21)]
    cycle(engine, people, None)
    config = settings_for(fake)
    sent(fake, config, engine)
    cycle(engine, [person(i, tags="") for i in range(1, 21)], None)
    with pytest.raises(MassRemovalError, match="lose tag vip"):
        sent(fake, config, engine)


def test_a_few_removals_or_a_share_below_the_limit_pass(
    fake: FakeMailchimp, engine: Engine
) -> None:
    cycle(engine, [person(i) for i in range(1, 5)], None)
    config = settings_for(fake)
    sent(fake, config, engine)
    cycle(engine, [deleted(person(i)) for i in range(1, 4)], None)  # 3 of 4: under the floor
    sent(fake, config, engine)
    assert status_of(fake, "person1@gmail.com") == "archived"
