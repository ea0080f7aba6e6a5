"""The change journal (issue 12): a change made while a stage works reaches that stage's next
pass; concurrent writers on PostgreSQL lose nothing; a consumer that dies mid-pass resumes
with the exact result of an uninterrupted one; compaction keeps what a consumer still needs.

The three "second writer" tests failed on the mark-clearing design this replaced: a stage
cleared, by id, the marks an upstream writer had set again while it ran."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.config.models import IdentityConfig
from syncbridge.identity import Resolver, resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.push.desired import subscriber_hash
from syncbridge.rules.compute import CompiledRules
from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import run_rules
from syncbridge.store import journal
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Change, Profile, ProfileRules
from syncbridge.transform import RecordTransformer

from .fakes.mailchimp import FakeMailchimp
from .streams import ListStream, partition
from .test_push import MAPPING, client_for, load, person, settings_for

POSTGRES_ONLY = pytest.mark.parametrize(
    "store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""Concurrent writers inside one stage's pass: PostgreSQL's territory (SQLite has one writer)."""
RULES = RulesConfig.model_validate({"segments": [{"name": "Big", "rule": "ltv > 500"}]})


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


def ingest(engine: Engine, rows: list[dict[str, Any]]) -> None:
    job = StreamIngest("crm", ListStream("contacts", rows), RecordTransformer(MAPPING, "US"))
    ingest_stream(engine, job)


def in_another_thread(work: Callable[[], None]) -> None:
    """Run a second writer to its commit, as another process or webhook would."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not errors, errors


def test_a_change_during_the_push_is_pushed_on_the_next_pass(
    fake: FakeMailchimp, engine: Engine
) -> None:
    config = settings_for(fake)
    load(engine, [person(1), person(2)])
    from syncbridge.push.sync import push

    push(engine, config, client_for(config))
    load(engine, [person(1, ltv="150"), person(2)])
    fired: list[str] = []

    def second_writer(method: str, path: str) -> None:
        if not fired:  # once Mailchimp applied the first write: the source changes again
            fired.append(path)
            load(engine, [person(1, ltv="999"), person(2)])

    fake.on_applied = second_writer
    push(engine, config, client_for(config))  # carries ltv 150; 999 arrived meanwhile
    fake.on_applied = None
    assert fired
    push(engine, config, client_for(config))
    member = fake.members("L1")[subscriber_hash("person1@gmail.com")]
    assert member["merge_fields"]["LTV"] == 999


@POSTGRES_ONLY
def test_a_change_during_the_rules_stage_is_evaluated_on_the_next_pass(
    engine: Engine, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(engine, [person(1, ltv="100")])
    resolve_pending(engine, IdentityConfig())
    now = None
    run_rules(engine, RULES, now)
    ingest(engine, [person(1, ltv="200")])
    resolve_pending(engine, IdentityConfig())
    real = CompiledRules.evaluate
    fired: list[bool] = []

    def evaluate(self: CompiledRules, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        if not fired:  # mid-pass, after reading the profile: its source changes again
            fired.append(True)
            other = open_engine(store_url)
            in_another_thread(lambda: (ingest(other, [person(1, ltv="900")]),
                                       resolve_pending(other, IdentityConfig())))  # fmt: skip
            other.dispose()
        return result

    monkeypatch.setattr(CompiledRules, "evaluate", evaluate)
    run_rules(engine, RULES, now)
    monkeypatch.setattr(CompiledRules, "evaluate", real)
    assert fired
    run_rules(engine, RULES, now)
    with engine.connect() as conn:
        segments = conn.execute(select(ProfileRules.__table__.c.segments)).scalar_one()
    assert segments == ["Big"]  # ltv 900, seen by the next pass


@POSTGRES_ONLY
def test_a_change_during_resolution_is_resolved_on_the_next_pass(
    engine: Engine, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(engine, [person(1), person(2)])
    resolve_pending(engine, IdentityConfig())
    ingest(engine, [person(1, first_name="Ann"), person(2)])
    real = Resolver._components
    fired: list[bool] = []

    def components(self: Resolver, records: Any) -> Any:
        if not fired:  # the batch has read its records: one of them changes again
            fired.append(True)
            other = open_engine(store_url)
            in_another_thread(lambda: ingest(other, [person(1, first_name="Annie"), person(2)]))
            other.dispose()
        return real(self, records)

    monkeypatch.setattr(Resolver, "_components", components)
    resolve_pending(engine, IdentityConfig())
    monkeypatch.setattr(Resolver, "_components", real)
    assert fired
    resolve_pending(engine, IdentityConfig())
    with engine.connect() as conn:
        names = conn.execute(
            select(Profile.__table__.c.attributes).where(Profile.__table__.c.deleted.is_(False))
        ).scalars()
        assert sorted(a["first_name"] for a in names) == ["Annie", "P2"]


@POSTGRES_ONLY
def test_two_writers_whose_commits_interleave_lose_nothing(store_url: str) -> None:
    """Writer A draws its numbers first and commits last; a reader between the two commits
    must not pass A's entries by. Appends are serialised, so B waits for A's commit."""
    engines = [open_engine(store_url) for _ in range(3)]
    a, b, reader = engines
    try:
        seen: list[int] = []
        offset = 0
        with a.begin() as conn_a:
            journal.append(conn_a, journal.RECORD, [1, 2])
            writer_b = threading.Thread(target=lambda: _append(b, [3]))
            writer_b.start()
            time.sleep(0.3)  # B is now waiting for A's append lock, or (unserialised) done
            with reader.connect() as conn:
                upto = journal.head(conn)
                seen += list(
                    conn.execute(journal.subjects([journal.RECORD], offset, upto)).scalars()
                )
                offset = upto
        writer_b.join(timeout=10)
        with reader.connect() as conn:
            upto = journal.head(conn)
            seen += list(conn.execute(journal.subjects([journal.RECORD], offset, upto)).scalars())
        assert sorted(seen) == [1, 2, 3]
    finally:
        for engine in engines:
            engine.dispose()


def _append(engine: Engine, subjects: list[int]) -> None:
    with engine.begin() as conn:
        journal.append(conn, journal.RECORD, subjects)


def test_resolution_killed_mid_pass_resumes_to_the_uninterrupted_result(
    engine: Engine, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [person(i, email=f"person{i % 7}@gmail.com") for i in range(40)]
    reference = open_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    ingest(reference, rows)
    resolve_pending(reference, IdentityConfig(), batch_size=5)
    expected = partition(reference)
    reference.dispose()

    ingest(engine, rows)
    real = Resolver._resolve_batch
    batches: list[int] = []

    def dies_on_the_third(self: Resolver, conn: Any, ids: list[int]) -> None:
        batches.append(len(ids))
        if len(batches) == 3:
            raise SystemExit("killed")  # its transaction rolls back; the first two committed
        real(self, conn, ids)

    monkeypatch.setattr(Resolver, "_resolve_batch", dies_on_the_third)
    with pytest.raises(SystemExit):  # the incremental path (a first load: tests/test_first_load)
        resolve_pending(engine, IdentityConfig(), batch_size=5, first_load=False)
    monkeypatch.setattr(Resolver, "_resolve_batch", real)
    resolve_pending(engine, IdentityConfig(), batch_size=5)
    assert partition(engine) == expected


def test_compaction_keeps_what_a_consumer_has_not_read(engine: Engine) -> None:
    with engine.begin() as conn:
        journal.append(conn, journal.RECORD, range(1, 11))
        journal.advance(conn, "fast", 10)
        journal.advance(conn, "slow", 4)
    assert journal.compact(engine, ["fast", "slow"], batch=3) == 4
    with engine.connect() as conn:
        left = list(conn.execute(select(Change.__table__.c.seq)).scalars())
    assert left == list(range(5, 11))
    with engine.begin() as conn:
        journal.advance(conn, "slow", 10)
    journal.compact(engine, ["fast", "slow"])
    with engine.begin() as conn:  # the newest entry stays, so numbers never come back
        assert list(conn.execute(select(Change.__table__.c.seq)).scalars()) == [10]
        journal.append(conn, journal.RECORD, [11])
        assert journal.head(conn) == 11
    assert journal.compact(engine, ["fast", "never-read"]) == 0  # a consumer yet to read


def test_an_idle_cycle_claims_nothing_and_writes_nothing(engine: Engine) -> None:
    ingest(engine, [person(1)])
    resolve_pending(engine, IdentityConfig())
    with engine.connect() as conn:
        before = conn.execute(select(journal.OFFSETS)).all()
        head = journal.head(conn)
    resolve_pending(engine, IdentityConfig())
    with engine.connect() as conn:
        assert conn.execute(select(journal.OFFSETS)).all() == before
        assert journal.head(conn) == head


def test_status_shows_each_consumer_with_its_lag(engine: Engine) -> None:
    from syncbridge import views

    ingest(engine, [person(1), person(2)])
    resolve_pending(engine, IdentityConfig())
    run_rules(engine, RULES, None)
    ingest(engine, [person(1, ltv="700"), person(2)])  # not resolved yet
    view = views.status(engine)
    consumers = {c["consumer"]: c for c in view.consumers}
    assert list(consumers) == ["identity", "rules"]
    assert consumers["identity"]["lag"] == 1  # the one changed record
    assert consumers["rules"]["lag"] == 0
    resolve_pending(engine, IdentityConfig())
    consumers = {c["consumer"]: c for c in views.status(engine).consumers}
    assert consumers["identity"]["lag"] == 0 and consumers["rules"]["lag"] == 1
