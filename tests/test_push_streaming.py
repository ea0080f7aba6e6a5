"""The push streams its plan (issue 13, point 2): chunks of members are upserted while later
chunks are planned, each tag's calls go out as soon as 500 members that exist are waiting, and
all ten connections stay busy, never more.

Profiles are written straight into the cache (as bench/push.py does) so that a dozen chunks
cost seconds; the fake answers every call after a small latency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from syncbridge.config.models import AudienceConfig, MailchimpConfig, MergeFieldConfig
from syncbridge.push.client import MailchimpClient
from syncbridge.push.sync import push
from syncbridge.store.engine import open_engine
from syncbridge.store.rawsql import insert_many
from syncbridge.store.tables import MemberState, Profile

from .fakes.mailchimp import FakeMailchimp

NOW = datetime(2026, 12, 1, tzinfo=UTC)
MEMBERS = 6000  # 12 chunks: more chunks than connections
AUDIENCE = AudienceConfig(
    name="customers", list_id="L1", tag_attributes=["shop_tags"],
    merge_fields=[MergeFieldConfig(tag="FNAME", name="First Name", source="first_name")],
)  # fmt: skip


class WatchingFake(FakeMailchimp):
    """Notes every tag call that names an address the audience does not hold (yet)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.early: list[str] = []
        self._watch = threading.Lock()

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Any:
        if method == "POST" and "/segments" in target and raw:
            import json

            body = json.loads(raw)
            emails = body.get("members_to_add") or body.get("static_segment") or []
            audience = self._api.audiences["L1"]
            with self._api.lock, self._watch:
                self.early += [e for e in emails if audience.find(e) is None]
        return super()._handle(method, target, raw, headers)


@pytest.fixture
def fake() -> Iterator[WatchingFake]:
    with WatchingFake(latency=0.03) as server:
        server.add_list("L1")
        yield server


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    rows = []
    for pid in range(1, MEMBERS + 1):
        email = f"p{pid}@gmail.com"
        tags = ["all"] + (["even"] if pid % 2 == 0 else [])
        rows.append({
            "id": pid, "email": email, "record_count": 1,
            "attributes": {"email": email, "email_valid": True, "first_name": f"Pat{pid}",
                           "accepts_email_marketing": True, "shop_tags": tags},
            "attribute_sources": {}, "created_at": NOW, "updated_at": NOW, "dirty": False,
            "deleted": False,
        })  # fmt: skip
    with engine.begin() as conn:
        insert_many(conn, Profile.__table__, rows)
    yield engine
    engine.dispose()


def run_push(fake: FakeMailchimp, engine: Engine, tags_in_batch: bool = False) -> Any:
    """A push with retries off: a single 429 (an eleventh connection) would fail it. Tags go
    by segment calls unless asked (these tests are about how those calls are filled)."""
    config = MailchimpConfig(
        api_key=SecretStr(fake.api_key), api_base_url=fake.base_url, retries=0,
        batch_threshold=10**9, tags_in_batch=tags_in_batch, audiences=[AUDIENCE],
    )  # fmt: skip
    return push(engine, config, MailchimpClient(config, backoff_s=0.001)).audiences[0]


def test_tag_calls_start_while_members_are_still_being_upserted(
    fake: WatchingFake, engine: Engine
) -> None:
    report = run_push(fake, engine)
    calls = [(m, p) for m, p, _, _ in fake.requests if m == "POST"]
    upserts = [i for i, (_, p) in enumerate(calls) if p == "/3.0/lists/L1"]
    tags = [i for i, (_, p) in enumerate(calls) if "/segments" in p]
    assert len(upserts) == MEMBERS // 500
    assert tags[0] < upserts[-1], "the tags waited for every upsert"
    assert report.applied["new members"] == MEMBERS
    assert report.applied["tag additions"] == MEMBERS + MEMBERS // 2


def test_a_tag_call_never_names_a_member_that_does_not_exist_yet(
    fake: WatchingFake, engine: Engine
) -> None:
    report = run_push(fake, engine)
    assert fake.early == []
    assert report.errors == []
    # nothing had to be looked up: every tag call was confirmed as sent
    assert not [p for m, p, _, _ in fake.requests if m == "GET" and p.endswith("/tags")]


class CrowdingFake(WatchingFake):
    """Holds the first batch calls (upserts, tag calls) until ten are in flight at once (or
    five seconds pass), then answers at its normal pace: a client that keeps fewer connections
    busy cannot reach ten, however fast or slow the machine is. The set-up calls before them
    (merge fields, tags, read-back) come one after another and pass at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._crowd = threading.Condition()
        self.crowd = self.peak_crowd = 0
        self.crowded = False

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Any:
        batch = method == "POST" and (target == "/3.0/lists/L1" or "/segments/" in target)
        if not batch:
            return super()._handle(method, target, raw, headers)
        with self._crowd:
            self.crowd += 1
            self.peak_crowd = max(self.peak_crowd, self.crowd)
            if self.crowd >= 10:
                self.crowded = True
                self._crowd.notify_all()
            self._crowd.wait_for(lambda: self.crowded, timeout=5)
        try:
            return super()._handle(method, target, raw, headers)
        finally:
            with self._crowd:
                self.crowd -= 1


def test_every_connection_is_used_and_never_more_than_ten(engine: Engine) -> None:
    with CrowdingFake(latency=0.03) as fake:
        fake.add_list("L1")
        report = run_push(fake, engine)  # retries are off: a 429 would have failed the push
    assert fake.crowded, f"never more than {fake.peak_crowd} calls in flight at once"
    assert fake.peak_crowd == 10 and fake.peak_in_flight <= 10
    assert report.errors == []
    assert report.applied["new members"] == MEMBERS


def test_tag_calls_are_full_and_each_member_is_acknowledged_with_all_its_tags(
    fake: WatchingFake, engine: Engine
) -> None:
    run_push(fake, engine)
    sizes = sorted(
        len(body.get("members_to_add") or body.get("static_segment") or [])
        for m, p, _, body in fake.requests
        if m == "POST" and "/segments" in p
    )
    # 6,000 "all" and 3,000 "even" in calls of 500: no call left half empty
    assert sizes == [500] * (MEMBERS // 500 + MEMBERS // 1000)
    states = MemberState.__table__.c
    with engine.connect() as conn:
        acked = dict(conn.execute(select(states.profile_id, states.tags)).all())
    assert len(acked) == MEMBERS
    assert acked[1] == ["all"] and acked[2] == ["all", "even"]
    held = fake.members("L1")
    assert all(member["tags"] for member in held.values())
