"""Read-back: what others changed in Mailchimp is seen, what the push itself wrote is not news.

Pages are made small (`READ_PAGE`) so that a few hundred members span many pages; the fake
moves `last_changed` on every real change, ours included, as Mailchimp does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.push import readback
from syncbridge.push.desired import subscriber_hash
from syncbridge.push.readback import read_back
from syncbridge.push.sync import push
from syncbridge.store import journal
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import AudienceMember, Change

from .fakes.mailchimp import FakeMailchimp
from .test_push import AUDIENCE, client_for, load, person, settings_for, state

PAGE = 10


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


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readback, "READ_PAGE", PAGE)


def member_reads(fake: FakeMailchimp, since: int = 0) -> int:
    return sum(
        1
        for method, path, *_ in fake.requests[since:]
        if method == "GET" and path.endswith("/members")
    )


def journalled_members(engine: Engine) -> list[int]:
    c = Change.__table__.c
    with engine.connect() as conn:
        return list(conn.execute(select(c.subject).where(c.kind == journal.MEMBER)).scalars())


def recorded(engine: Engine) -> dict[str, dict[str, Any]]:
    """Mailchimp's view of the members as the cache holds it, by address."""
    table = AudienceMember.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.list_id == "L1")).mappings().all()
    return {row["email"]: dict(row) for row in rows}


def people(n: int, **kw: Any) -> list[dict[str, Any]]:
    return [person(i, **kw) for i in range(1, n + 1)]


def test_the_cycle_after_a_push_does_not_read_back_the_push_s_own_writes(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, people(300))
    config = settings_for(fake)
    push(engine, config, client_for(config))
    assert len(fake.members("L1")) == 300
    before, writes = len(fake.requests), fake.write_calls()
    report = push(engine, config, client_for(config))
    # a few calls whatever the audience's size, not one per page of members the push wrote
    assert member_reads(fake, before) <= 7
    assert report.audiences[0].read_back < PAGE * 7
    assert fake.write_calls() == writes


def test_a_change_made_by_someone_else_after_the_push_is_read_back(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, people(300))
    config = settings_for(fake)
    push(engine, config, client_for(config))
    push(engine, config, client_for(config))
    fake.advance_clock(3)
    fake.member_unsubscribes("L1", "person7@gmail.com")
    push(engine, config, client_for(config))
    assert recorded(engine)["person7@gmail.com"]["status"] == "unsubscribed"
    assert state(engine, "person7@gmail.com")["profile_id"] in journalled_members(engine)


def test_a_member_unsubscribed_during_the_push_is_read_back_journalled_and_kept(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, people(300))
    config = settings_for(fake)

    def unsubscribe_once(method: str, path: str) -> None:
        if method == "POST" and path == "/3.0/lists/L1":  # after the batch applied, before its
            fake.on_applied = None  # answer (which still says subscribed) reaches the push
            fake.member_unsubscribes("L1", "person150@gmail.com")

    fake.on_applied = unsubscribe_once
    push(engine, config, client_for(config))
    assert state(engine, "person150@gmail.com")["status"] == "subscribed"  # as the push saw it
    push(engine, config, client_for(config))
    assert recorded(engine)["person150@gmail.com"]["status"] == "unsubscribed"
    profile_id = state(engine, "person150@gmail.com")["profile_id"]
    assert profile_id in journalled_members(engine)
    load(engine, [person(150, first_name="Paula")])
    push(engine, config, client_for(config))
    member = fake.members("L1")[subscriber_hash("person150@gmail.com")]
    assert member["status"] == "unsubscribed"  # never re-subscribed
    assert member["merge_fields"]["FNAME"] == "Paula"
    assert state(engine, "person150@gmail.com")["status"] == "unsubscribed"


def test_a_signup_during_the_push_is_not_hidden_among_the_push_s_own_writes(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """Someone subscribes through a form while the push writes: the new member is as old as
    the push's own writes, deep in the subscribed members, and is still found."""
    load(engine, people(1200))  # three batch calls: the signup lands between them
    config = settings_for(fake)

    def signup_once(method: str, path: str) -> None:
        if method == "POST" and path == "/3.0/lists/L1":
            fake.on_applied = None
            fake.seed_member("L1", "walk.in@gmail.com")
            fake.advance_clock(2)  # the push's later writes are newer than the signup

    fake.on_applied = signup_once
    push(engine, config, client_for(config))
    assert "walk.in@gmail.com" not in recorded(engine)
    before = len(fake.requests)
    push(engine, config, client_for(config))
    assert recorded(engine)["walk.in@gmail.com"]["status"] == "subscribed"
    assert member_reads(fake, before) > 7  # it had to look: the count did not add up


def test_an_admin_resubscribe_during_the_push_is_journalled(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """A member unsubscribed by an admin is put back by an admin while the push runs: its
    status changed, among hundreds of newer subscribed members the push wrote."""
    fake.seed_member("L1", "person1@gmail.com", "unsubscribed", unsubscribed_by="admin")
    load(engine, people(1200))
    config = settings_for(fake)
    calls = []

    def resubscribe(method: str, path: str) -> None:
        if method == "POST" and path == "/3.0/lists/L1":
            calls.append(path)
        if len(calls) == 2:
            fake.on_applied = None
            fake.seed_member("L1", "person1@gmail.com", "subscribed")  # by an admin
            fake.advance_clock(2)

    fake.on_applied = resubscribe
    push(engine, config, client_for(config))
    assert state(engine, "person1@gmail.com")["status"] == "unsubscribed"
    push(engine, config, client_for(config))
    assert recorded(engine)["person1@gmail.com"]["status"] == "subscribed"
    assert state(engine, "person1@gmail.com")["profile_id"] in journalled_members(engine)


def test_pages_are_fetched_side_by_side_within_the_connection_limit(
    fake: FakeMailchimp, engine: Engine
) -> None:
    for i in range(250):  # an audience that exists before syncbridge: 25 pages to read
        fake.seed_member("L1", f"existing{i}@gmail.com", "unsubscribed" if i % 5 else "subscribed")
    fake.latency = 0.05
    config = settings_for(fake).model_copy(update={"retries": 0})  # a 429 would raise
    seen = read_back(client_for(config), engine, AUDIENCE)
    assert len(recorded(engine)) == 250 and seen >= 250
    assert 1 < fake.peak_in_flight <= 10


def test_a_crash_mid_read_back_resumes_without_losing_a_change(
    fake: FakeMailchimp, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(engine, people(300))
    config = settings_for(fake)
    push(engine, config, client_for(config))
    fake.advance_clock(3)
    gone = [f"person{i}@gmail.com" for i in range(1, 300, 10)]  # 30 unsubscribes: 3 pages
    for email in gone:
        fake.member_unsubscribes("L1", email)
    real, written = readback.write_mailchimp_members, []

    def crash_on_the_second_page(*args: Any, **kwargs: Any) -> None:
        if written:
            raise RuntimeError("power cut")
        written.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(readback, "write_mailchimp_members", crash_on_the_second_page)
    with pytest.raises(RuntimeError):
        read_back(client_for(config), engine, AUDIENCE)
    monkeypatch.setattr(readback, "write_mailchimp_members", real)
    read_back(client_for(config), engine, AUDIENCE)
    members = recorded(engine)
    assert all(members[email]["status"] == "unsubscribed" for email in gone)
    holders = {state(engine, email)["profile_id"] for email in gone}
    assert holders <= set(journalled_members(engine))


def test_a_member_moving_while_a_status_is_read_in_pages_makes_no_other_member_skipped(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """The newest unsubscribed member is resubscribed between two pages of the unsubscribed:
    every later member moves up one place, and the one at the page boundary would be read by
    neither page. The read sees the total change and reads that status again."""
    emails = [f"quiet{i}@gmail.com" for i in range(30)]
    for email in emails:
        fake.seed_member("L1", email, "unsubscribed")
        fake.advance_clock(1)
    real, moved = fake._handle, threading.Event()

    def handle(method: str, target: str, raw: bytes, headers: Any) -> Any:
        """The second page is answered, then the member moves, then the third is answered."""
        if moved.is_set() or "status=unsubscribed" not in target:
            return real(method, target, raw, headers)
        if "offset=20" in target:
            moved.wait(timeout=10)
        reply = real(method, target, raw, headers)
        if "offset=10" in target:
            fake.seed_member("L1", emails[-1], "subscribed")  # an admin puts them back
            moved.set()
        return reply

    fake._handle = handle  # type: ignore[method-assign]
    config = settings_for(fake)
    read_back(client_for(config), engine, AUDIENCE)
    assert moved.is_set()
    members = recorded(engine)
    assert all(members[email]["status"] == "unsubscribed" for email in emails[:-1])


def test_tag_calls_after_the_upserts_do_not_make_later_cycles_read_everything(
    fake: FakeMailchimp, engine: Engine
) -> None:
    """Tag calls move last_changed after the upsert answers the cache recorded."""
    load(engine, people(300, tags="vip, newsletter"))
    config = settings_for(fake)
    push(engine, config, client_for(config))
    for _ in range(2):
        fake.advance_clock(2)
        before = len(fake.requests)
        push(engine, config, client_for(config))
        assert member_reads(fake, before) <= 7


def test_a_member_deleted_in_mailchimp_costs_one_full_read_then_is_forgotten(
    fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, people(300))
    config = settings_for(fake)
    push(engine, config, client_for(config))
    fake.forget_member("L1", "person9@gmail.com")
    push(engine, config, client_for(config))
    assert "person9@gmail.com" not in recorded(engine)
    before = len(fake.requests)
    push(engine, config, client_for(config))
    assert member_reads(fake, before) <= 7
