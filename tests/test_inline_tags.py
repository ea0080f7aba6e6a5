"""Tag additions inside batch upserts (push/inline_tags.py): fewer calls, and never a tag
counted that Mailchimp did not confirm, whatever the server does with the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from syncbridge.push.desired import subscriber_hash
from syncbridge.push.sync import push

from .fakes.mailchimp import FakeMailchimp, Response, invalid
from .test_push import client_for, load, person, settings_for, state
from .test_push import engine as engine  # the fixture

PEOPLE = 1200  # three batch upserts


class IgnoringFake(FakeMailchimp):
    """A server that drops `tags` from batch-subscribe items (as one built from the 3.0.55
    schema, which lacks the field, might)."""

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Any:
        if method == "POST" and target.split("?")[0].rstrip("/").endswith("/lists/L1") and raw:
            body = json.loads(raw)
            for item in body.get("members", []):
                item.pop("tags", None)
            raw = json.dumps(body).encode()
        return super()._handle(method, target, raw, headers)


class RefusingFake(FakeMailchimp):
    """A server that refuses a batch-subscribe carrying `tags` with a 400."""

    refused = 0

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Any:
        upsert = method == "POST" and target.split("?")[0].rstrip("/").endswith("/lists/L1")
        if upsert and raw and any("tags" in m for m in json.loads(raw).get("members", [])):
            with self._lock:
                self.refused += 1
            return Response.problem(invalid("members.tags", "This field is not allowed."))
        return super()._handle(method, target, raw, headers)


@pytest.fixture(params=[FakeMailchimp, IgnoringFake, RefusingFake])
def any_fake(request: pytest.FixtureRequest) -> Iterator[FakeMailchimp]:
    with request.param() as server:
        server.add_list("L1")
        yield server


def _people() -> list[dict[str, Any]]:
    return [person(i, tags="all, odd" if i % 2 else "all") for i in range(1, PEOPLE + 1)]


def _posts(fake: FakeMailchimp) -> list[tuple[str, Any]]:
    return [(p, b) for m, p, _, b in fake.requests if m == "POST"]


def test_tags_reach_mailchimp_and_are_acknowledged_whatever_the_server_does_with_them(
    any_fake: FakeMailchimp, engine: Engine
) -> None:
    load(engine, _people())
    config = settings_for(any_fake)
    report = push(engine, config, client_for(config)).audiences[0]
    assert report.errors == []
    members = any_fake.members("L1")
    for i in (1, 2, PEOPLE):
        wanted = {"all", "odd"} if i % 2 else {"all"}
        assert set(members[subscriber_hash(f"person{i}@gmail.com")]["tags"]) == wanted
        assert set(state(engine, f"person{i}@gmail.com")["tags"]) == wanted
    assert report.applied["tag additions"] == PEOPLE + PEOPLE // 2
    segment_calls = [p for p, _ in _posts(any_fake) if "/segments" in p]
    if type(any_fake) is FakeMailchimp:
        assert segment_calls == []  # 3 calls in all instead of 3 + 5
    else:  # the segment calls did it, as without inline tags
        assert len(segment_calls) >= 3
    # an unchanged second push writes nothing, whichever way the tags went
    before, calls = any_fake.write_calls(), len(any_fake.requests)
    push(engine, config, client_for(config))
    assert any_fake.write_calls() == before
    assert not [p for _, p, _, _ in any_fake.requests[calls:] if "/segments" in p]  # no look-up


def test_a_refused_batch_is_sent_again_without_tags_and_tags_stop_being_sent(
    engine: Engine,
) -> None:
    with RefusingFake() as fake:
        fake.add_list("L1")
        load(engine, _people())
        config = settings_for(fake)
        push(engine, config, client_for(config))
        upserts = [b for p, b in _posts(fake) if p == "/3.0/lists/L1"]
    assert len(upserts) == 3  # every batch applied once, without tags
    assert not any("tags" in m for b in upserts for m in b["members"])
    assert 1 <= fake.refused <= 3  # at most the calls already in flight carried tags


def test_a_lost_answer_of_a_batch_with_tags_is_repeated_and_then_acknowledged(
    engine: Engine,
) -> None:
    with FakeMailchimp() as fake:
        fake.add_list("L1")
        load(engine, _people()[:10])
        config = settings_for(fake)
        fake.lose_answer_next(path_contains="POST /3.0/lists/L1")
        push(engine, config, client_for(config))  # the client retries the call
        push(engine, config, client_for(config))
        assert set(state(engine, "person1@gmail.com")["tags"]) == {"all", "odd"}
        assert set(fake.members("L1")[subscriber_hash("person1@gmail.com")]["tags"]) == {
            "all", "odd",
        }  # fmt: skip
        assert [p for p, _ in _posts(fake) if "/segments" in p] == []


def test_a_steady_cycle_sends_tags_as_mailchimp_spells_them_without_listing_tags(
    engine: Engine,
) -> None:
    """Mailchimp's name of each tag is kept with its id: the next push that adds the tag sends
    it as Mailchimp spells it (`VIP` for our `vip`) without listing the audience's tags; a
    cache that kept bare ids (before the names) looks the names up once."""
    from syncbridge.push.state import read_watermark, write_segment_ids

    with FakeMailchimp() as fake:
        fake.add_list("L1")
        fake.seed_member("L1", "someone@gmail.com", tags=["VIP"])
        config = settings_for(fake)
        load(engine, [person(1, tags="vip")])
        push(engine, config, client_for(config))
        with engine.connect() as conn:
            _, saved = read_watermark(conn, "L1")
        assert saved["vip"][1] == "VIP"  # [id, Mailchimp's name]
        with engine.begin() as conn:  # as a cache written before the names were kept
            write_segment_ids(conn, "L1", {"vip": saved["vip"][0]})
        for i, looked_up in ((2, True), (3, False)):
            before = len(fake.requests)
            load(engine, [person(i, tags="vip")])
            push(engine, config, client_for(config))
            new = fake.requests[before:]
            [upsert] = [b for m, p, _, b in new if m == "POST" and p == "/3.0/lists/L1"]
            assert upsert["members"][0]["tags"] == ["VIP"]
            assert any(m == "GET" and p.endswith("/segments") for m, p, _, _ in new) == looked_up
        assert [s for s in fake.segments("L1") if s.lower() == "vip"] == ["VIP"]
        assert fake.segments("L1")["VIP"]["members"] == {
            "someone@gmail.com", "person1@gmail.com", "person2@gmail.com", "person3@gmail.com",
        }  # fmt: skip
