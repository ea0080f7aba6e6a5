"""The rules stage on change data: only dirty and expiring profiles, membership history."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, select

from syncbridge.config.mapping import Mapping
from syncbridge.config.models import IdentityConfig
from syncbridge.identity import resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import run_rules
from syncbridge.store.tables import Profile, ProfileRules, SegmentMembership
from syncbridge.transform import RecordTransformer

from .streams import ListStream, journal_head, journaled

ORDERS = Mapping.model_validate(tomllib.loads("""
[identifiers]
email = "email"
[[events]]
type = "purchase"
time = { field = "at", type = "datetime" }
[events.properties]
amount = { field = "amount", type = "number" }
"""))  # fmt: skip
RULES = RulesConfig.model_validate(
    {
        "traits": [
            {
                "name": "lifetime_value",
                "aggregate": "sum",
                "event": "purchase",
                "property": "amount",
            },
            {"name": "last_order_at", "aggregate": "max", "event": "purchase", "property": "@time"},
        ],
        "segments": [
            {"name": "Active", "rule": "last_order_at within 30d"},
            {"name": "Big", "rule": "lifetime_value > 100"},
        ],
    }
)
DAY0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order(i: int, person: int, amount: float, at: datetime) -> dict[str, Any]:
    return {
        "id": f"o{i}",
        "email": f"p{person}@gmail.com",
        "amount": str(amount),
        "at": at.isoformat(),
    }


def load(engine: Engine, rows: list[dict[str, Any]]) -> None:
    ingest_stream(
        engine, StreamIngest("shop", ListStream("orders", rows), RecordTransformer(ORDERS))
    )
    resolve_pending(engine, IdentityConfig())


def results(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(Profile.__table__.c.email, ProfileRules.__table__).join(
                    ProfileRules.__table__,
                    ProfileRules.__table__.c.profile_id == Profile.__table__.c.id,
                )
            )
            .mappings()
            .all()
        )
    return {r["email"]: dict(r) for r in rows}


def test_profile_leaves_active_on_day_31_without_new_data(engine: Engine) -> None:
    load(engine, [order(1, 1, 150, DAY0)])
    run_rules(engine, RULES, DAY0 + timedelta(hours=1))
    assert set(results(engine)["p1@gmail.com"]["segments"]) == {"Active", "Big"}
    head = journal_head(engine)
    quiet = run_rules(engine, RULES, DAY0 + timedelta(days=29))
    assert quiet.evaluated == 0  # nothing changed, nothing expired
    day31 = run_rules(engine, RULES, DAY0 + timedelta(days=31))
    assert (day31.evaluated, day31.expired, day31.exited) == (1, 1, 1)
    assert results(engine)["p1@gmail.com"]["segments"] == ["Big"]
    with engine.connect() as conn:
        history = conn.execute(
            select(SegmentMembership.__table__.c.segment, SegmentMembership.__table__.c.exited_at)
        ).all()
        profile_ids = conn.execute(select(Profile.__table__.c.id)).scalars().all()
    assert {(s, e is not None) for s, e in history} == {("Active", True), ("Big", False)}
    assert journaled(engine, "rules", since=head) == profile_ids  # news for Mailchimp


def test_steady_state_cycle_reads_only_dirty_and_expiring_profiles(engine: Engine) -> None:
    rows = [order(i, i, 10 * i, DAY0 - timedelta(days=i)) for i in range(1, 61)]
    load(engine, rows)
    run_rules(engine, RULES, DAY0)
    load(engine, [order(1000, 5, 500, DAY0 + timedelta(days=1))])  # one new order for p5
    now = DAY0 + timedelta(days=1, hours=1)
    expiring = sum(
        1 for i in range(1, 61) if DAY0 < DAY0 - timedelta(days=i) + timedelta(days=30) <= now
    )
    fetched: list[int] = []

    def count_rows(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM event" in statement:
            fetched.append(1)

    event.listen(engine, "after_cursor_execute", count_rows)
    stats = run_rules(engine, RULES, now)
    event.remove(engine, "after_cursor_execute", count_rows)
    assert stats.evaluated == 1 + expiring  # p5, plus p29 whose 30-day window just ran out
    assert expiring == 1
    assert len(fetched) == 1  # one bounded event query for just those profiles
    assert results(engine)["p5@gmail.com"]["traits"]["lifetime_value"] == 550.0


def test_changed_segment_is_redone_from_stored_results_without_reading_events(
    engine: Engine,
) -> None:
    load(engine, [order(i, i, 50 * i, DAY0) for i in range(1, 5)])
    run_rules(engine, RULES, DAY0)
    assert sum("Big" in r["segments"] for r in results(engine).values()) == 2  # 150 and 200
    stricter = RulesConfig.model_validate(
        {
            **RULES.model_dump(by_alias=True),
            "segments": [{"name": "Big", "rule": "lifetime_value > 150"}],
        }
    )
    event_reads: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda c, cur, statement, *a: event_reads.append(statement) if "FROM event" in statement else None)  # fmt: skip
    stats = run_rules(engine, stricter, DAY0)
    assert (stats.full_reevaluation, stats.evaluated) == (0, 4)
    assert event_reads == []
    memberships = [r["segments"] for r in results(engine).values()]
    assert sum("Big" in m for m in memberships) == 1  # only 200
    assert not any("Active" in m for m in memberships)  # a removed segment is left by everyone
    assert run_rules(engine, stricter, DAY0).evaluated == 0


def test_changed_trait_reevaluates_everyone_in_full(engine: Engine) -> None:
    load(engine, [order(i, i, 50 * i, DAY0) for i in range(1, 5)])
    run_rules(engine, RULES, DAY0)
    data = RULES.model_dump(by_alias=True)
    data["traits"][0]["where"] = {"amount": "200"}
    stats = run_rules(engine, RulesConfig.model_validate(data), DAY0)
    assert (stats.full_reevaluation, stats.evaluated) == (1, 4)
    values = sorted(r["traits"]["lifetime_value"] for r in results(engine).values())
    assert values == [0, 0, 0, 200.0]


def test_big_pass_in_two_processes_matches_one_process(tmp_path: Any, monkeypatch: Any) -> None:
    from syncbridge.rules import stage
    from syncbridge.store.engine import open_engine

    def build(name: str) -> Engine:
        engine = open_engine(f"sqlite:///{tmp_path / name}")
        load(engine, [order(i, i % 40, 30 + i, DAY0 - timedelta(days=i % 50)) for i in range(200)])
        return engine

    single, double = build("one.db"), build("two.db")
    one = run_rules(single, RULES, DAY0)
    monkeypatch.setattr(stage, "PARALLEL_FROM", 10)
    monkeypatch.setattr(stage, "BATCH", 7)
    two = run_rules(double, RULES, DAY0)
    assert one.as_dict() == two.as_dict()
    assert {k: (v["traits"], v["segments"]) for k, v in results(single).items()} == {
        k: (v["traits"], v["segments"]) for k, v in results(double).items()
    }


def test_a_transient_failure_in_the_second_process_stays_retriable(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """It used to come back as a FatalError built from a string: a daemon stopped on what it
    should have retried."""
    import os

    import pytest

    from syncbridge.errors import RetriableError
    from syncbridge.redaction import register_secret
    from syncbridge.rules import stage
    from syncbridge.store.engine import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'two.db'}")
    load(engine, [order(i, i % 40, 30 + i, DAY0) for i in range(60)])
    parent, real = os.getpid(), stage._evaluate_ids
    register_secret("hunter2-db-password")

    def failing_in_the_child(*args: Any, **kwargs: Any) -> None:
        if os.getpid() != parent:
            raise RetriableError("database is locked (password hunter2-db-password)")
        real(*args, **kwargs)

    monkeypatch.setattr(stage, "PARALLEL_FROM", 10)
    monkeypatch.setattr(stage, "_evaluate_ids", failing_in_the_child)
    with pytest.raises(RetriableError, match=r"second process: database is locked") as caught:
        run_rules(engine, RULES, DAY0)
    assert "hunter2" not in str(caught.value)


TAGGING = RulesConfig.model_validate(
    {"tags": [{"name": "Recent_Buyer", "event": "purchase", "within": "7d"},
              {"name": "Buyer", "event": "purchase"}]}
)  # fmt: skip


def test_tags_keep_a_history_of_who_got_and_lost_them(engine: Engine) -> None:
    """The status page's "got it / lost it (24 h)" per tag comes from this history (issue 16,
    point 8): a tag gained opens a row, a tag lost (its window passed, the profile deleted)
    closes it; a tag kept writes nothing."""
    from syncbridge.daemon.page import page_data, render, tag_changes
    from syncbridge.store.tables import TagMembership

    load(engine, [order(1, 1, 10, DAY0), order(2, 2, 20, DAY0)])
    run_rules(engine, TAGGING, DAY0 + timedelta(hours=1))
    day1 = DAY0 + timedelta(hours=2)
    assert tag_changes(engine, DAY0) == {"Recent_Buyer": (2, 0), "Buyer": (2, 0)}
    load(engine, [order(3, 1, 30, DAY0 + timedelta(days=5))])  # p1 buys again: keeps its tags
    run_rules(engine, TAGGING, DAY0 + timedelta(days=5))
    run_rules(engine, TAGGING, DAY0 + timedelta(days=8))  # p2's purchase is 8 days old
    since = DAY0 + timedelta(days=7)
    assert tag_changes(engine, since) == {"Recent_Buyer": (0, 1)}
    t = TagMembership.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.tag, t.entered_at, t.exited_at)).all()
    assert len(rows) == 4  # one row per (tag, profile) held: p1's second order opened none
    assert sorted((tag, exited is None) for tag, _, exited in rows) == [
        ("Buyer", True), ("Buyer", True), ("Recent_Buyer", False), ("Recent_Buyer", True),
    ]  # fmt: skip
    assert tag_changes(engine, day1) == {"Recent_Buyer": (0, 1)}
    html = render(page_data(engine, DAY0 + timedelta(days=8, hours=1)))
    assert 'data-tag="Recent_Buyer"' in html and 'data-left="1"' in html


def test_a_deleted_profile_loses_its_tags_in_the_history(engine: Engine) -> None:
    from syncbridge.daemon.page import tag_changes
    from syncbridge.rules.stage import retire_deleted

    load(engine, [order(1, 1, 10, DAY0)])
    run_rules(engine, TAGGING, DAY0 + timedelta(hours=1))
    with engine.begin() as conn:
        conn.execute(Profile.__table__.update().values(deleted=True, dirty=True))
        retire_deleted(conn, DAY0 + timedelta(days=1))
    assert tag_changes(engine, DAY0 + timedelta(hours=12)) == {
        "Recent_Buyer": (0, 1), "Buyer": (0, 1),
    }  # fmt: skip
