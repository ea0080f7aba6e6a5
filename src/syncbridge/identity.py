"""Identity resolution: records that share a join key are one person.

A profile is a connected component of live records linked by valid emails, external ids and
(optionally) phones. Only components touched by pending (new, changed or deleted) records are
recomputed; that closure is complete because every stored join key maps to exactly one profile.
Components, and each attribute's winning value, depend only on the records themselves, never on
the order in which they arrived. Profile ids: on a merge the oldest (lowest) id survives; on a
split the part holding most of the old profile's records keeps its id.
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from .config.models import IdentityConfig
from .counts import Counts
from .gc_tuning import bulk_gc
from .store import journal
from .store.bulk import utcnow
from .store.rawsql import (
    allocate_ids,
    execute_in,
    insert_many,
    insert_tuples,
    read_datetime,
    read_json,
    select_in,
    update_many,
)
from .store.statistics import TableStatistics
from .store.tables import CacheSetting, Event, Identity, Profile, ProfileMerge, SourceRecord
from .transform import EMAIL, PHONE

log = logging.getLogger(__name__)

CONSUMER = journal.IDENTITY_CONSUMER
RECORDS = SourceRecord.__table__
PROFILES = Profile.__table__
IDENTITIES = Identity.__table__
EVENTS = Event.__table__
MERGES = ProfileMerge.__table__
SETTINGS = CacheSetting.__table__
BATCH_SIZE = 50_000
RULES_KEY = "identity_rules"
RULE_FIELDS = {"source_priority", "attribute_priority", "match_on_phone"}


@dataclass
class ResolveStats(Counts):
    records: int = 0
    profiles_created: int = 0
    profiles_updated: int = 0
    profiles_deleted: int = 0
    merges: int = 0
    splits: int = 0


@dataclass
class _Record:
    id: int
    source: str
    stream: str
    external_id: str
    identifiers: list[tuple[str, str]]
    attributes: dict[str, Any]
    source_ts: datetime | None
    deleted: bool
    pending: bool
    profile_id: int | None
    new_profile_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.source}/{self.stream}/{self.external_id}"


@dataclass(eq=False)
class _Component:
    records: list[_Record]
    profile_id: int | None = None
    old_counts: Counter[int] = field(default_factory=Counter)

    @property
    def first_record(self) -> int:
        return self.records[0].id


class Survivorship:
    """Picks each attribute's value: source priority first, then the newest source timestamp.

    Ties fall back to the record's own key, so the winner never depends on arrival order. For
    `email`, valid addresses win over invalid ones whatever the source.
    """

    def __init__(self, config: IdentityConfig) -> None:
        self.default = {s: i for i, s in enumerate(config.source_priority)}
        self.per_attribute = {
            a: {s: i for i, s in enumerate(order)} for a, order in config.attribute_priority.items()
        }
        self._by_source: dict[str, dict[str, int]] = {}

    def _rank(self, attribute: str, source: str) -> int:
        order = self.per_attribute.get(attribute, self.default)
        return order.get(source, len(order))

    def _ranks(self, source: str) -> dict[str, int]:
        """This source's rank per attribute, filled as attributes come (a first load asks
        millions of times for a handful of pairs)."""
        ranks = self._by_source.get(source)
        if ranks is None:
            ranks = self._by_source[source] = {}
        return ranks

    def resolve(self, records: list[_Record]) -> tuple[dict[str, Any], dict[str, str]]:
        if len(records) == 1:  # every value wins: no keys to build or compare
            return self._alone(records[0])
        best: dict[str, tuple[tuple[Any, ...], Any, _Record]] = {}
        for rec in records:
            ts = rec.source_ts.timestamp() if rec.source_ts else 0.0
            tail = (rec.source_ts is None, -ts, rec.source, rec.stream, rec.external_id)
            ranks = self._ranks(rec.source)
            for name, value in rec.attributes.items():
                if name == "email_valid" or value is None:
                    continue
                rank = ranks.get(name)
                if rank is None:
                    rank = ranks[name] = self._rank(name, rec.source)
                key: tuple[Any, ...] = (rank, *tail)
                if name == "email":
                    key = (not rec.attributes.get("email_valid", False), *key)
                current = best.get(name)
                if current is None or key < current[0]:
                    best[name] = (key, value, rec)
        attributes = {name: value for name, (_, value, _) in sorted(best.items())}
        sources = {name: rec.label for name, (_, _, rec) in sorted(best.items())}
        if "email" in best:
            attributes["email_valid"] = bool(best["email"][2].attributes.get("email_valid"))
        return attributes, sources

    @staticmethod
    def _alone(rec: _Record) -> tuple[dict[str, Any], dict[str, str]]:
        """`resolve` of a one-record profile: its own non-empty values, in name order."""
        values = rec.attributes
        names = sorted(n for n, v in values.items() if v is not None and n != "email_valid")
        attributes = {name: values[name] for name in names}
        sources = dict.fromkeys(names, rec.label)
        if "email" in attributes:
            attributes["email_valid"] = bool(values.get("email_valid"))
        return attributes, sources


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent.setdefault(x, x)
        if parent != x:
            parent = self.parent[x] = self.find(parent)
        return parent

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class Resolver:
    """Resolves pending records into profiles, one bounded batch per transaction."""

    def __init__(self, config: IdentityConfig, run_id: int | None = None) -> None:
        self.config = config
        self.run_id = run_id
        self.survivorship = Survivorship(config)
        self.stats = ResolveStats()
        self.identities_written = 0

    def joins(self, kind: str) -> bool:
        return kind != PHONE or self.config.match_on_phone

    def run(
        self, engine: Engine, batch_size: int = BATCH_SIZE, first_load: bool = True
    ) -> ResolveStats:
        """Resolve what is pending; `first_load`: on a cache without profiles, all of it at
        once (`first_load.py`; False: always the incremental path, which tests compare)."""
        from .first_load import resolve_first_load  # it builds on this module's classes

        self._reresolve_if_rules_changed(engine)
        claim(engine)
        statistics = TableStatistics(engine)
        if first_load and resolve_first_load(self, engine, batch_size):
            if self.stats.records >= statistics.first:  # the tables grew from nothing
                statistics.refresh(RECORDS.name, IDENTITIES.name, PROFILES.name)
        else:
            self._run_batches(engine, batch_size, statistics)
        while True:  # whatever turned pending since (another writer): in id order
            with engine.begin() as conn:
                ids = (
                    conn.execute(
                        select(RECORDS.c.id)
                        .where(RECORDS.c.pending.is_(True))
                        .order_by(RECORDS.c.id)
                        .limit(batch_size)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return self.stats
                self._resolve_batch(conn, list(ids))

    def _run_batches(self, engine: Engine, batch_size: int, statistics: TableStatistics) -> None:
        with engine.connect() as conn:
            order = self._pending_by_email(conn)
        if len(order) >= statistics.first:  # a bulk load: plan with its numbers, not guesses
            statistics.refresh(RECORDS.name, IDENTITIES.name, PROFILES.name)
        for start in range(0, len(order), batch_size):
            created, identities = self.stats.profiles_created, self.identities_written
            with engine.begin() as conn:
                self._resolve_batch(conn, sorted(order[start : start + batch_size]))
            statistics.wrote(PROFILES.name, self.stats.profiles_created - created)
            statistics.wrote(IDENTITIES.name, self.identities_written - identities)
        if len(order) >= statistics.first:  # what is pending changed for most rows
            statistics.refresh(RECORDS.name)

    @staticmethod
    def _pending_by_email(conn: Connection) -> array[int]:
        """Pending record ids in email order: a person's records from every source then mostly
        share a batch, so a batch rarely reloads and rewrites a profile an earlier batch made
        (by id, a first load resolved most people once per source). Only speed depends on this
        order: each batch still closes over every profile its records touch."""
        email = RECORDS.c.attributes["email"].as_string()
        query = (
            select(RECORDS.c.id).where(RECORDS.c.pending.is_(True)).order_by(email, RECORDS.c.id)
        )
        return array("q", conn.execute(query).scalars())

    def _reresolve_if_rules_changed(self, engine: Engine) -> None:
        """Join and survivorship rules shape every profile: when they change, redo them all."""
        fingerprint = self.config.model_dump(include=RULE_FIELDS, mode="json")
        s = SETTINGS.c
        with engine.begin() as conn:
            stored = conn.execute(select(s.value).where(s.key == RULES_KEY)).scalar_one_or_none()
            if stored == fingerprint:
                return
            if stored is not None:
                changed = conn.execute(
                    update(RECORDS).where(RECORDS.c.pending.is_(False)).values(pending=True)
                ).rowcount
                log.info("identity rules changed: re-resolving all %d records", changed)
            row = {"key": RULES_KEY, "value": fingerprint, "updated_at": utcnow()}
            insert_many(conn, SETTINGS, [row], ["key"], ["value", "updated_at"])

    def _resolve_batch(self, conn: Connection, pending_ids: list[int]) -> None:
        # An earlier batch's closure may have placed some of them already.
        records = {r.id: r for r in self._load(conn, "id", pending_ids) if r.pending}
        if not records:
            return
        profiles = self._close_over_profiles(conn, records)
        components = self._components([r for r in records.values() if not r.deleted])
        self._assign_ids(components)
        self.stats.records += sum(1 for r in records.values() if r.pending)
        self._write(conn, records, components, profiles)

    def _close_over_profiles(self, conn: Connection, records: dict[int, _Record]) -> set[int]:
        """Load every record of every profile the pending records touch, until nothing is new."""
        seen: set[int] = set()
        frontier = list(records.values())
        while frontier:
            found = {r.profile_id for r in frontier if r.profile_id is not None}
            keys = {
                ident
                for r in frontier
                if not r.deleted
                for ident in r.identifiers
                if self.joins(ident[0])
            }
            found |= self._profiles_holding(conn, keys)
            new = sorted(found - seen)
            seen.update(new)
            frontier = []
            if new:
                for rec in self._load(conn, "profile_id", new):
                    if rec.id not in records:
                        records[rec.id] = rec
                        if rec.pending:
                            frontier.append(rec)
        return seen

    def _profiles_holding(self, conn: Connection, keys: set[tuple[str, str]]) -> set[int]:
        """Profiles holding any of these join keys (one indexed IN list per kind of key)."""
        by_kind: dict[str, list[str]] = {}
        for kind, value in keys:
            by_kind.setdefault(kind, []).append(value)
        found: set[int] = set()
        sql = "SELECT profile_id FROM identity WHERE kind = ? AND value IN ({in})"
        for kind, values in sorted(by_kind.items()):
            found.update(row[0] for row in select_in(conn, sql, (kind,), sorted(values)))
        return found

    def _load(self, conn: Connection, column: str, values: list[int]) -> list[_Record]:
        """Records whose `column` (id or profile_id) is one of `values`, read through the
        driver: SQLAlchemy's row processing was a third of resolution time."""
        sql = (
            "SELECT id, source, stream, external_id, identifiers, attributes, source_ts, "
            f"deleted, pending, profile_id FROM source_record WHERE {column} IN ({{in}})"
        )
        out = []
        for row in select_in(conn, sql, (), values):
            identifiers = [(kind, value) for kind, value in read_json(row[4])]
            attributes, source_ts = read_json(row[5]), read_datetime(row[6])
            out.append(
                _Record(row[0], row[1], row[2], row[3], identifiers, attributes, source_ts,
                        bool(row[7]), bool(row[8]), row[9])
            )  # fmt: skip
        return out

    def _components(self, live: list[_Record]) -> list[_Component]:
        uf = _UnionFind()
        holder: dict[tuple[str, str], int] = {}
        for rec in sorted(live, key=lambda r: r.id):
            uf.find(rec.id)
            for ident in rec.identifiers:
                if not self.joins(ident[0]):
                    continue
                if ident in holder:
                    uf.union(rec.id, holder[ident])
                else:
                    holder[ident] = rec.id
        groups: dict[int, list[_Record]] = {}
        for rec in sorted(live, key=lambda r: r.id):
            groups.setdefault(uf.find(rec.id), []).append(rec)
        components = [_Component(records) for records in groups.values()]
        for comp in components:
            comp.old_counts = Counter(
                r.profile_id for r in comp.records if r.profile_id is not None
            )
        return sorted(components, key=lambda c: c.first_record)

    def _assign_ids(self, components: list[_Component]) -> None:
        """Old ids go, lowest first, to the component holding most of that profile's records."""
        holders: dict[int, list[_Component]] = {}
        for comp in components:
            for pid in comp.old_counts:
                holders.setdefault(pid, []).append(comp)
        for pid in sorted(holders):
            free = [c for c in holders[pid] if c.profile_id is None]
            if len(holders[pid]) > 1:
                self.stats.splits += 1
            if free:
                winner = max(free, key=lambda c: (c.old_counts[pid], -c.first_record))
                winner.profile_id = pid

    def _profile_row(self, comp: _Component, now: datetime) -> dict[str, Any]:
        attributes, sources = self.survivorship.resolve(comp.records)
        return {
            "email": attributes.get(EMAIL),
            "attributes": attributes,
            "attribute_sources": sources,
            "record_count": len(comp.records),
            "updated_at": now,
            "dirty": True,
            "deleted": False,
            "merged_into": None,
        }

    def _write(
        self,
        conn: Connection,
        records: dict[int, _Record],
        components: list[_Component],
        profiles: set[int],
    ) -> None:
        now = utcnow()
        new = [c for c in components if c.profile_id is None]
        old = [c for c in components if c.profile_id is not None]
        if new:
            ids = allocate_ids(conn, PROFILES, len(new))
            for comp, pid in zip(new, ids, strict=True):
                comp.profile_id = pid
            rows = [
                {"id": c.profile_id, **self._profile_row(c, now), "created_at": now} for c in new
            ]
            insert_many(conn, PROFILES, rows)
            self.stats.profiles_created += len(new)
        for comp in components:
            for rec in comp.records:
                rec.new_profile_id = comp.profile_id
        kept = {c.profile_id for c in components}
        self.stats.profiles_updated += len(old)
        update_many(
            conn, PROFILES, [{"id": c.profile_id, **self._profile_row(c, now)} for c in old], "id"
        )
        self._retire(conn, components, profiles - kept, now)
        self._write_records(conn, records)
        self._write_identities(conn, components, profiles)
        changed = [c.profile_id for c in components if c.profile_id is not None]
        journal.append(conn, journal.PROFILE, changed + sorted(profiles - kept))

    def _retire(
        self, conn: Connection, components: list[_Component], gone: set[int], now: datetime
    ) -> None:
        """Profiles whose records all merged elsewhere or were deleted."""
        if not gone:
            return
        holding: dict[int, list[_Component]] = {}
        for comp in components:
            for pid in comp.old_counts:
                if pid in gone:
                    holding.setdefault(pid, []).append(comp)
        merged_into: dict[int, int] = {}
        for pid, holders in holding.items():
            if holders:
                survivor = max(holders, key=lambda c: (c.old_counts[pid], -c.first_record))
                assert survivor.profile_id is not None
                merged_into[pid] = survivor.profile_id
        merges = [
            {"survivor_id": s, "merged_id": m, "merged_at": now, "run_id": self.run_id}
            for m, s in sorted(merged_into.items())
        ]
        insert_many(conn, MERGES, merges)
        self.stats.merges += len(merges)
        self.stats.profiles_deleted += len(gone) - len(merged_into)
        rows = [
            {
                "id": pid,
                "deleted": True,
                "dirty": True,
                "record_count": 0,
                "merged_into": merged_into.get(pid),
                "updated_at": now,
            }
            for pid in sorted(gone)
        ]
        update_many(conn, PROFILES, rows, "id")

    def _write_records(self, conn: Connection, records: dict[int, _Record]) -> None:
        moved = [r for r in records.values() if r.pending or r.new_profile_id != r.profile_id]
        rows = [{"id": r.id, "profile_id": r.new_profile_id, "pending": False} for r in moved]
        update_many(conn, RECORDS, rows, "id")
        # Set-based: most records have no events, and a probe per record was a third of this.
        placed = sorted(r.id for r in moved if r.new_profile_id is not None)
        sql = (
            "UPDATE event SET profile_id = (SELECT r.profile_id FROM source_record r "
            "WHERE r.id = event.record_id) WHERE record_id IN ({in})"
        )
        execute_in(conn, sql, (), placed)

    def _write_identities(
        self, conn: Connection, components: list[_Component], existing: set[int]
    ) -> None:
        """Replace the join keys of the profiles that existed (new ones hold none yet)."""
        sql = "DELETE FROM identity WHERE profile_id IN ({in})"
        execute_in(conn, sql, (), sorted(existing))
        rows: dict[tuple[str, str], int] = {}
        for comp in components:
            assert comp.profile_id is not None
            for rec in comp.records:
                for ident in rec.identifiers:
                    if self.joins(ident[0]):
                        rows[ident] = comp.profile_id
        identities = [(kind, value, pid) for (kind, value), pid in rows.items()]
        insert_tuples(conn, IDENTITIES, ("kind", "value", "profile_id"), identities)
        self.identities_written += len(identities)


def claim(engine: Engine) -> int:
    """Claim the journal's record changes above identity's offset into its work set (the
    `pending` mark) and advance the offset, in one transaction. Ingest marks what it writes as
    pending already (the fast path of a bulk load); the claim catches every change that a pass
    cleared while it ran, and every other writer's."""
    return journal.claim_into_mark(engine, CONSUMER, journal.RECORD, RECORDS, RECORDS.c.pending)


def resolve_pending(
    engine: Engine,
    config: IdentityConfig,
    run_id: int | None = None,
    batch_size: int = BATCH_SIZE,
    first_load: bool = True,
) -> ResolveStats:
    """Place every pending record into a profile; mark changed profiles dirty."""
    with bulk_gc():
        return Resolver(config, run_id).run(engine, batch_size, first_load)
