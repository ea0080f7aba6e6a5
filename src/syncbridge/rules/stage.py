"""The rules stage of a cycle: evaluate only dirty profiles and those whose windows expire.

Reads, per bounded batch, the profiles' attributes and events and their previous results;
writes new results, the next expiry (an indexed column, so finding expiring profiles is an index
range scan), segment entries and exits; a profile whose outcome changed becomes dirty for the
push. When the rules themselves change (by hash), every profile is evaluated once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from ..counts import Counts
from ..errors import FatalError
from ..redaction import redact
from ..store.bulk import as_utc, chunks, utcnow
from ..store.engine import create_store_engine
from ..store.rawsql import insert_many, update_many
from ..store.tables import CacheSetting, Event, Profile, ProfileRules, SegmentMembership
from .compute import CompiledRules, Evaluation, EventRow
from .config import RulesConfig

log = logging.getLogger(__name__)
PROFILES = Profile.__table__
EVENTS = Event.__table__
RESULTS = ProfileRules.__table__
MEMBERSHIP = SegmentMembership.__table__
SETTINGS = CacheSetting.__table__
RULES_KEY = "rules"
BATCH = 2000
PARALLEL_FROM = 50_000
"""From this many profiles, a pass runs in two processes."""
RESULT_COLUMNS = (
    "traits", "tags", "segments", "content", "explain", "evaluated_at", "next_expiry_at",
)  # fmt: skip


@dataclass
class RulesStats(Counts):
    evaluated: int = 0
    changed: int = 0
    expired: int = 0
    entered: int = 0
    exited: int = 0
    full_reevaluation: int = 0


def rules_hash(config: RulesConfig) -> str:
    text = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def profiles_to_evaluate(conn: Connection, now: datetime) -> list[int]:
    """Dirty profiles plus those whose next expiry has come (both through indexes)."""
    dirty = conn.execute(
        select(PROFILES.c.id).where(PROFILES.c.dirty.is_(True), PROFILES.c.deleted.is_(False))
    ).scalars()
    expiring = conn.execute(
        select(RESULTS.c.profile_id).where(RESULTS.c.next_expiry_at <= now)
    ).scalars()
    return sorted(set(dirty) | set(expiring))


def run_rules(engine: Engine, config: RulesConfig, now: datetime | None = None) -> RulesStats:
    now = now or utcnow()
    compiled = CompiledRules(config)
    stats = RulesStats()
    with engine.connect() as conn:
        ids = profiles_to_evaluate(conn, now)
        stored = conn.execute(select(SETTINGS.c.value).where(SETTINGS.c.key == RULES_KEY))
        previous_hash = stored.scalar_one_or_none()
        current_hash = rules_hash(config)
        if previous_hash != current_hash:
            ids = list(
                conn.execute(
                    select(PROFILES.c.id)
                    .where(PROFILES.c.deleted.is_(False))
                    .order_by(PROFILES.c.id)
                ).scalars()
            )
            stats.full_reevaluation = 1
    if len(ids) >= PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
        _evaluate_in_two_processes(engine, compiled, ids, now, stats)
    else:
        _evaluate_ids(engine, compiled, ids, now, stats)
    if previous_hash != current_hash:
        with engine.begin() as conn:
            row = {"key": RULES_KEY, "value": current_hash, "updated_at": now}
            insert_many(conn, SETTINGS, [row], ["key"], ["value", "updated_at"])
        log.info("rules changed: evaluated all %d profiles", len(ids))
    return stats


def _evaluate_ids(
    engine: Engine, compiled: CompiledRules, ids: list[int], now: datetime, stats: RulesStats
) -> None:
    for part in chunks(ids, BATCH):
        with engine.begin() as conn:
            _evaluate_batch(conn, compiled, list(part), now, stats)


def _evaluate_in_two_processes(
    engine: Engine, compiled: CompiledRules, ids: list[int], now: datetime, stats: RulesStats
) -> None:
    """A big pass (a rules change, a first evaluation) on both cores: a forked child takes the
    second half of the profiles with its own connection; results come back as counts."""
    half = len(ids) // 2
    context = multiprocessing.get_context("fork")
    results: Any = context.Queue()
    url = engine.url.render_as_string(hide_password=False)

    def child() -> None:
        own = create_store_engine(url)
        child_stats = RulesStats()
        try:
            _evaluate_ids(own, compiled, ids[half:], now, child_stats)
            results.put(child_stats.as_dict())
        except BaseException as exc:  # reported to the parent, which raises
            results.put(f"{type(exc).__name__}: {exc}")
        finally:
            own.dispose()

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        _evaluate_ids(engine, compiled, ids[:half], now, stats)
        outcome = results.get()
    finally:
        process.join()
    if isinstance(outcome, str):
        raise FatalError(f"rule evaluation failed in the second process: {redact(outcome)}")
    stats.add(RulesStats(**outcome))


def _evaluate_batch(
    conn: Connection, compiled: CompiledRules, ids: list[int], now: datetime, stats: RulesStats
) -> None:
    attributes = dict(
        conn.execute(
            select(PROFILES.c.id, PROFILES.c.attributes).where(PROFILES.c.id.in_(ids))
        ).all()
    )
    events: dict[int, list[EventRow]] = {pid: [] for pid in ids}
    e = EVENTS.c
    for pid, kind, when, props in conn.execute(
        select(e.profile_id, e.type, e.occurred_at, e.properties).where(e.profile_id.in_(ids))
    ):
        events[pid].append((kind, as_utc(when), props or {}))  # type: ignore[arg-type]
    previous = {
        row["profile_id"]: row
        for row in conn.execute(select(RESULTS).where(RESULTS.c.profile_id.in_(ids))).mappings()
    }
    rows, dirty, entered, exited = [], [], [], []
    was_dirty = set(
        conn.execute(
            select(PROFILES.c.id).where(PROFILES.c.id.in_(ids), PROFILES.c.dirty.is_(True))
        ).scalars()
    )
    for pid in ids:
        if pid not in attributes:  # deleted in the meantime
            continue
        result = compiled.evaluate(attributes[pid] or {}, events[pid], now)
        before = previous.get(pid)
        old_segments = set(before["segments"]) if before else set()
        if (
            before is not None
            and as_utc(before["next_expiry_at"]) is not None
            and (
                as_utc(before["next_expiry_at"]) <= now  # type: ignore[operator]
            )
        ):
            stats.expired += 1
        if _changed(before, result):
            stats.changed += 1
            dirty.append(pid)
        elif pid in was_dirty:  # its attributes changed even if its rule results did not
            dirty.append(pid)
        entered += [{"segment": s, "profile_id": pid, "entered_at": now, "exited_at": None}
                    for s in sorted(result.segments - old_segments)]  # fmt: skip
        exited += [(s, pid) for s in sorted(old_segments - result.segments)]
        rows.append({
            "profile_id": pid, "traits": result.traits, "tags": sorted(result.tags),
            "segments": sorted(result.segments), "content": result.content,
            "explain": result.explain, "evaluated_at": now, "next_expiry_at": result.next_expiry,
        })  # fmt: skip
    stats.evaluated += len(rows)
    insert_many(conn, RESULTS, rows, ["profile_id"], RESULT_COLUMNS)
    insert_many(conn, MEMBERSHIP, entered)
    stats.entered += len(entered)
    for segment, pid in exited:
        m = MEMBERSHIP.c
        conn.execute(
            update(MEMBERSHIP)
            .where(m.segment == segment, m.profile_id == pid, m.exited_at.is_(None))
            .values(exited_at=now)
        )
    stats.exited += len(exited)
    update_many(conn, PROFILES, [{"id": pid, "push_dirty": True} for pid in dirty], "id")
    update_many(conn, PROFILES, [{"id": pid, "dirty": False} for pid in sorted(was_dirty)], "id")


def hand_over(engine: Engine) -> int:
    """Without rules: every changed profile goes straight to the push."""
    with engine.begin() as conn:
        waiting = conn.execute(
            select(PROFILES.c.id).where(PROFILES.c.dirty.is_(True)).limit(1)
        ).first()
        if waiting is None:  # the steady state: no statement that writes
            return 0
        return conn.execute(
            update(PROFILES).where(PROFILES.c.dirty.is_(True)).values(dirty=False, push_dirty=True)
        ).rowcount


def _changed(before: Any, result: Evaluation) -> bool:
    if before is None:
        return True
    return (
        before["traits"] != result.traits
        or sorted(before["tags"]) != sorted(result.tags)
        or sorted(before["segments"]) != sorted(result.segments)
        or before["content"] != result.content
    )


def results_for(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Stored rule results of these profiles (for the push and the explain views)."""
    out: dict[int, dict[str, Any]] = {}
    for part in chunks(ids):
        for row in conn.execute(select(RESULTS).where(RESULTS.c.profile_id.in_(part))).mappings():
            out[row["profile_id"]] = dict(row)
    return out


__all__ = ["RulesStats", "hand_over", "results_for", "run_rules"]
