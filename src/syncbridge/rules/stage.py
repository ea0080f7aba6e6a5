"""The rules stage of a cycle: evaluate only dirty profiles and those whose windows expire.

Reads, per bounded batch, the profiles' attributes and events and their previous results;
writes new results, the next expiry (an indexed column, so finding expiring profiles is an index
range scan), segment and tag entries and exits; a profile whose outcome changed is journaled for the
push. When the rules themselves change (a hash per rule), every profile is evaluated once, or,
when only segments and content changed, just those are decided again from stored traits and
tags. A pass over `PARALLEL_FROM` profiles or more runs in two processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, select, update

from ..children import end_with_parent, reported
from ..counts import Counts
from ..errors import SyncbridgeError
from ..gc_tuning import bulk_gc
from ..hashing import content_hash
from ..store import journal
from ..store.bulk import as_utc, chunks, utcnow
from ..store.engine import create_store_engine
from ..store.rawsql import insert_many, update_many
from ..store.tables import (
    CacheSetting,
    Event,
    Profile,
    ProfileRules,
    SegmentMembership,
    TagMembership,
)
from .compute import CompiledRules, Evaluation, EventRow
from .config import RulesConfig

log = logging.getLogger(__name__)
PROFILES = Profile.__table__
EVENTS = Event.__table__
RESULTS = ProfileRules.__table__
MEMBERSHIP = SegmentMembership.__table__
TAG_MEMBERSHIP = TagMembership.__table__
SETTINGS = CacheSetting.__table__
RULES_KEY = "rules"
CONSUMER = journal.RULES_CONSUMER
BATCH = 5000
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
    retired: int = 0
    """Deleted or merged-away profiles whose segments were closed and handed to the push."""
    full_reevaluation: int = 0


def profiles_to_evaluate(conn: Connection, now: datetime) -> list[int]:
    """Dirty profiles plus those whose next expiry has come (both through indexes)."""
    dirty = conn.execute(
        select(PROFILES.c.id).where(PROFILES.c.dirty.is_(True), PROFILES.c.deleted.is_(False))
    ).scalars()
    expiring = conn.execute(
        select(RESULTS.c.profile_id).where(RESULTS.c.next_expiry_at <= now)
    ).scalars()
    return sorted(set(dirty) | set(expiring))


def item_hashes(config: RulesConfig) -> dict[str, str]:
    """A hash per trait, score, tag, segment and content group: what changed, not just whether."""
    items: dict[str, str] = {}
    for kind, entries in (("trait", config.traits), ("score", config.scores),
                          ("tag", config.tags), ("segment", config.segments),
                          ("content", config.content)):  # fmt: skip
        for entry in entries:
            items[f"{kind}:{entry.name}"] = content_hash(
                entry.model_dump(mode="json", by_alias=True)
            )
    return items


def segments_to_redo(compiled: CompiledRules, changed: set[str]) -> set[str] | None:
    """When only segments and content changed, the segments to re-evaluate (the changed ones
    and those that refer to them) from stored traits and tags; None when a full pass is needed
    (a trait, score or tag changed, or an affected segment counts events)."""
    if any(not key.startswith(("segment:", "content:")) for key in changed):
        return None
    names = {key.split(":", 1)[1] for key in changed if key.startswith("segment:")}
    rules = {rule.name: rule for rule in compiled.segments}
    grew = True
    while grew:
        dependents = {n for n, r in rules.items() if r.segments & names and n not in names}
        names |= dependents
        grew = bool(dependents)
    if any(rules[n].uses_events for n in names if n in rules):
        return None
    return names


def run_rules(engine: Engine, config: RulesConfig, now: datetime | None = None) -> RulesStats:
    """Evaluate dirty and expiring profiles (everyone, or the changed segments, after a rules
    change); changed results mark profiles for the push."""
    with bulk_gc():
        return _run_rules(engine, config, now)


def _run_rules(engine: Engine, config: RulesConfig, now: datetime | None) -> RulesStats:
    now = now or utcnow()
    compiled = CompiledRules(config)
    stats = RulesStats()
    current = item_hashes(config)
    only: set[str] | None = None
    claim(engine)
    with engine.begin() as conn:
        stats.retired = retire_deleted(conn, now)
    with engine.connect() as conn:
        ids = profiles_to_evaluate(conn, now)
        stored = conn.execute(
            select(SETTINGS.c.value).where(SETTINGS.c.key == RULES_KEY)
        ).scalar_one_or_none()
        if stored != current:
            previous = stored if isinstance(stored, dict) else {}
            changed = {
                k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k)
            }
            only = segments_to_redo(compiled, changed) if previous else None
            everyone = conn.execute(
                select(PROFILES.c.id).where(PROFILES.c.deleted.is_(False)).order_by(PROFILES.c.id)
            ).scalars()
            if only is None:
                ids = list(everyone)
                stats.full_reevaluation = 1
            else:  # changed segments from stored results for all, dirty/expiring ones in full
                _evaluate_ids(engine, compiled, ids, now, stats)
                redo = sorted(set(everyone) - set(ids))
                ids = []
                _evaluate_ids(engine, compiled, redo, now, stats, only)
                log.info(
                    "segments %s changed: re-evaluated them for %d profiles",
                    sorted(only),
                    len(redo),
                )
    if len(ids) >= PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
        _evaluate_in_two_processes(engine, compiled, ids, now, stats)
    else:
        _evaluate_ids(engine, compiled, ids, now, stats)
    if stored != current:
        with engine.begin() as conn:
            row = {"key": RULES_KEY, "value": current, "updated_at": now}
            insert_many(conn, SETTINGS, [row], ["key"], ["value", "updated_at"])
        if only is None:
            log.info("rules changed: evaluated all %d profiles", len(ids))
    return stats


def _evaluate_ids(
    engine: Engine,
    compiled: CompiledRules,
    ids: list[int],
    now: datetime,
    stats: RulesStats,
    only: set[str] | None = None,
) -> None:
    for part in chunks(ids, BATCH):
        with engine.begin() as conn:
            _evaluate_batch(conn, compiled, list(part), now, stats, only)


def _evaluate_in_two_processes(
    engine: Engine, compiled: CompiledRules, ids: list[int], now: datetime, stats: RulesStats
) -> None:
    """A big pass (a rules change, a first evaluation) on both cores: a forked child takes the
    second half of the profiles with its own connection; results come back as counts."""
    half = len(ids) // 2
    context = multiprocessing.get_context("fork")
    results: Any = context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    parent = os.getpid()

    def child() -> None:
        end_with_parent(parent)
        own = create_store_engine(url)
        child_stats = RulesStats()
        try:
            _evaluate_ids(own, compiled, ids[half:], now, child_stats)
            results.put(child_stats.as_dict())
        except BaseException as exc:  # reported to the parent, which raises it
            results.put(reported("rule evaluation in the second process", exc))
        finally:
            own.dispose()

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        _evaluate_ids(engine, compiled, ids[:half], now, stats)
        outcome = results.get()
    finally:
        process.join()
    if isinstance(outcome, SyncbridgeError):
        raise outcome
    stats.add(RulesStats(**outcome))


def _evaluate_batch(
    conn: Connection,
    compiled: CompiledRules,
    ids: list[int],
    now: datetime,
    stats: RulesStats,
    only: set[str] | None = None,
) -> None:
    """Evaluate and store; with `only`, just those segments (and content), from stored traits
    and tags, without reading events."""
    attributes = dict(
        conn.execute(
            select(PROFILES.c.id, PROFILES.c.attributes).where(PROFILES.c.id.in_(ids))
        ).all()
    )
    events: dict[int, list[EventRow]] = {pid: [] for pid in ids}
    e = EVENTS.c
    if only is None:
        for pid, kind, when, props in conn.execute(
            select(e.profile_id, e.type, e.occurred_at, e.properties).where(e.profile_id.in_(ids))
        ):
            events[pid].append((kind, as_utc(when), props or {}))  # type: ignore[arg-type]
    previous = {
        row["profile_id"]: row
        for row in conn.execute(select(RESULTS).where(RESULTS.c.profile_id.in_(ids))).mappings()
    }
    rows, dirty, entered, exited = [], [], [], []
    tagged: list[dict[str, Any]] = []
    untagged: list[tuple[str, int]] = []
    was_dirty = set(
        conn.execute(
            select(PROFILES.c.id).where(PROFILES.c.id.in_(ids), PROFILES.c.dirty.is_(True))
        ).scalars()
    )
    for pid in ids:
        if pid not in attributes:  # deleted in the meantime
            continue
        before = previous.get(pid)
        if only is None or before is None:
            result = compiled.evaluate(attributes[pid] or {}, events[pid], now)
        else:
            result = _redo_segments(compiled, attributes[pid] or {}, before, only, now)
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
        old_tags = set(before["tags"]) if before else set()
        tagged += [{"tag": t, "profile_id": pid, "entered_at": now, "exited_at": None}
                   for t in sorted(result.tags - old_tags)]  # fmt: skip
        untagged += [(t, pid) for t in sorted(old_tags - result.tags)]
        rows.append({
            "profile_id": pid, "traits": result.traits, "tags": sorted(result.tags),
            "segments": sorted(result.segments), "content": result.content,
            "explain": result.explain, "evaluated_at": now, "next_expiry_at": result.next_expiry,
        })  # fmt: skip
    stats.evaluated += len(rows)
    insert_many(conn, RESULTS, rows, ["profile_id"], RESULT_COLUMNS)
    insert_many(conn, MEMBERSHIP, entered)
    stats.entered += len(entered)
    _close_memberships(conn, MEMBERSHIP, MEMBERSHIP.c.segment, exited, now)
    stats.exited += len(exited)
    insert_many(conn, TAG_MEMBERSHIP, tagged)
    _close_memberships(conn, TAG_MEMBERSHIP, TAG_MEMBERSHIP.c.tag, untagged, now)
    journal.append(conn, journal.RULES, dirty)
    update_many(conn, PROFILES, [{"id": pid, "dirty": False} for pid in sorted(was_dirty)], "id")


def _close_memberships(
    conn: Connection,
    table: Table,
    name: ColumnElement[str],
    left: list[tuple[str, int]],
    now: datetime,
) -> None:
    """Close the open rows of (segment or tag, profile) pairs a profile no longer has: one
    UPDATE per segment or tag, over all its profiles of the batch."""
    by_name: dict[str, list[int]] = {}
    for value, pid in left:
        by_name.setdefault(value, []).append(pid)
    c = table.c
    for value, pids in by_name.items():
        for part in chunks(pids):
            conn.execute(
                update(table)
                .where(name == value, c.profile_id.in_(part), c.exited_at.is_(None))
                .values(exited_at=now)
            )


def retire_deleted(conn: Connection, now: datetime) -> int:
    """Dirty profiles that were deleted at every source or merged into another: they leave
    every segment, keep no rule results, and go to the push (which archives or untags them).

    Without this they stayed dirty for ever and never reached the push (issue 10, point 3)."""
    gone = list(
        conn.execute(
            select(PROFILES.c.id).where(PROFILES.c.dirty.is_(True), PROFILES.c.deleted.is_(True))
        ).scalars()
    )
    if not gone:
        return 0
    for part in chunks(gone):
        for table in (MEMBERSHIP, TAG_MEMBERSHIP):
            conn.execute(
                update(table)
                .where(table.c.profile_id.in_(part), table.c.exited_at.is_(None))
                .values(exited_at=now)
            )
        conn.execute(RESULTS.delete().where(RESULTS.c.profile_id.in_(part)))
    update_many(conn, PROFILES, [{"id": pid, "dirty": False} for pid in gone], "id")
    journal.append(conn, journal.RULES, gone)
    return len(gone)


def claim(engine: Engine) -> int:
    """Claim the journal's profile changes above the rules' offset into the rules' work set
    (the `dirty` mark) and advance the offset, in one transaction. Identity resolution marks
    what it writes as dirty already; the claim catches every change cleared while a pass ran."""
    return journal.claim_into_mark(engine, CONSUMER, journal.PROFILE, PROFILES, PROFILES.c.dirty)


def hand_over(engine: Engine) -> int:
    """Without rules nothing evaluates profiles: destinations read identity's journal entries
    directly, and the rules' work set (`dirty`) is simply emptied."""
    with engine.begin() as conn:
        waiting = conn.execute(
            select(PROFILES.c.id).where(PROFILES.c.dirty.is_(True)).limit(1)
        ).first()
        if waiting is None:  # the steady state: no statement that writes
            return 0
        return conn.execute(
            update(PROFILES).where(PROFILES.c.dirty.is_(True)).values(dirty=False)
        ).rowcount


def _redo_segments(
    compiled: CompiledRules, attributes: Any, before: Any, only: set[str], now: datetime
) -> Evaluation:
    """A profile's stored results with the `only` segments (and content) decided again."""
    result = Evaluation(traits=dict(before["traits"]), tags=set(before["tags"]))
    kept = {s for s in before["segments"] if s not in only and s in compiled.names}
    compiled.decide(result, attributes, lambda *_: [], now, only=only, kept=kept)
    stored_expiry = as_utc(before["next_expiry_at"])
    candidates = [t for t in (stored_expiry, result.next_expiry) if t is not None and t > now]
    result.next_expiry = min(candidates) if candidates else None
    return result


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
