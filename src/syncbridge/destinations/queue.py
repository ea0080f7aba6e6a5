"""A destination's work set: the profiles it claimed from the journal and still owes.

Claiming and advancing the destination's offset happen in one transaction, so a change
journaled while the destination works is claimed by its next pass, never cleared with the rest;
a profile leaves the queue only when the destination acknowledged it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, literal, select, true
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..store import journal
from ..store.bulk import chunks
from ..store.tables import DestinationQueue

QUEUE = DestinationQueue.__table__


def claim(engine: Engine, destination: str, kinds: Sequence[str], everyone: Select[Any]) -> int:
    """Queue the subjects of the journal entries of `kinds` above the destination's offset
    (on its first pass: every profile `everyone` selects) and advance the offset."""
    with engine.begin() as conn:
        after, upto, first = journal.claim_range(conn, destination)
        if first:
            source: Select[Any] = everyone
        elif journal.has(conn, kinds, after, upto):
            source = journal.subjects(kinds, after, upto)
        else:
            return 0  # nothing new: an idle pass writes nothing
        # `WHERE true`: SQLite cannot otherwise tell ON CONFLICT from a join's ON
        rows = select(literal(destination), source.subquery().c[0]).where(true()).distinct()
        dialect_insert = postgres_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = (
            dialect_insert(QUEUE)
            .from_select(["destination", "profile_id"], rows)
            .on_conflict_do_nothing()
        )
        added = conn.execute(statement).rowcount
        journal.advance(conn, destination, upto)
    return int(added or 0)


def queued(conn: Connection, destination: str) -> list[int]:
    q = QUEUE.c
    query = select(q.profile_id).where(q.destination == destination).order_by(q.profile_id)
    return list(conn.execute(query).scalars())


def queued_chunks(engine: Engine, destination: str, size: int) -> Iterator[list[int]]:
    """The queue in ascending chunks of `size` ids, each read on a connection of its own (a
    long read would hold SQLite's log from being checkpointed while the push writes)."""
    q = QUEUE.c
    after = -1
    while True:
        query = (
            select(q.profile_id)
            .where(q.destination == destination, q.profile_id > after)
            .order_by(q.profile_id)
            .limit(size)
        )
        with engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def waiting(
    conn: Connection, destination: str, kinds: Sequence[str], everyone: Select[Any]
) -> list[int]:
    """What the next pass would take (queued, and not yet claimed), without claiming it."""
    after, upto, first = journal.claim_range(conn, destination)
    ids = set(queued(conn, destination))
    ids.update(conn.execute(everyone if first else journal.subjects(kinds, after, upto)).scalars())
    return sorted(ids)


def release(engine: Engine, destination: str, ids: Sequence[int]) -> None:
    """These profiles are acknowledged: they leave the destination's queue."""
    q = QUEUE.c
    with engine.begin() as conn:
        for part in chunks(sorted(set(ids))):
            conn.execute(QUEUE.delete().where(q.destination == destination, q.profile_id.in_(part)))
