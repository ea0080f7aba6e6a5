"""The change journal: what changed, in order, for every consumer to read from its own offset.

Every writer appends `(seq, kind, subject)` in the same transaction as the change itself:

    record   a source record was written or deleted (ingest, re-map)    subject: record id
    profile  identity resolution wrote a profile (new, changed, merged,  subject: profile id
             split, deleted, email changed)
    rules    the rules stage re-evaluated a profile whose results or     subject: profile id
             attributes changed, or that left (deleted, merged away)
    member   Mailchimp's view of a member changed (read back)            subject: profile id

A consumer (identity resolution, the rules stage, each destination) *claims* the entries above
its offset into its own work set and advances the offset in one transaction, then works
through that set and clears its own marks. Upstream writers never clear a consumer's marks, so
a change that arrives while a consumer runs has a sequence number above the claimed range and
is claimed by the next pass; a crash leaves the claimed work set in place to be finished.

On PostgreSQL, transactions that take sequence numbers commit in any order; a reader that saw
11 before 10 committed would pass 10 by. Appends are therefore serialised with a
transaction-scoped advisory lock taken before the first number is drawn and held until commit:
whatever a reader sees committed is a prefix of the sequence. SQLite has one writer anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Engine, Select, Table, func, select, update

from .bulk import utcnow
from .rawsql import insert_many, insert_tuples
from .tables import Change, ConsumerOffset

CHANGES = Change.__table__
OFFSETS = ConsumerOffset.__table__
RECORD, PROFILE, RULES, MEMBER = "record", "profile", "rules", "member"
IDENTITY_CONSUMER, RULES_CONSUMER = "identity", "rules"
"""The consumer names of identity resolution and the rules stage (destinations: their own)."""
_APPEND_LOCK = 0x534A524E  # "SJRN"; the writer lock (store/writer_lock.py) uses "SYNC"
COMPACT_BATCH = 50_000


def append(conn: Connection, kind: str, subjects: Iterable[int]) -> int:
    """Journal that these subjects changed, in the caller's transaction; returns how many."""
    unique = list(dict.fromkeys(subjects))
    if not unique:
        return 0
    serialise_appends(conn)
    insert_tuples(conn, CHANGES, ("kind", "subject"), [(kind, s) for s in unique])
    return len(unique)


def serialise_appends(conn: Connection) -> None:
    """Hold the journal's append lock until this transaction ends (PostgreSQL; see above)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))


def head(conn: Connection) -> int:
    """The newest committed sequence number (0 for an empty journal)."""
    return int(conn.execute(select(func.coalesce(func.max(CHANGES.c.seq), 0))).scalar_one())


def offset(conn: Connection, consumer: str) -> int | None:
    """How far `consumer` has read, or None when it has never read."""
    query = select(OFFSETS.c.seq).where(OFFSETS.c.consumer == consumer)
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def advance(conn: Connection, consumer: str, seq: int) -> None:
    row = {"consumer": consumer, "seq": seq, "updated_at": utcnow()}
    insert_many(conn, OFFSETS, [row], ["consumer"], ["seq", "updated_at"])


def subjects(kinds: Sequence[str], after: int, upto: int) -> Select[Any]:
    """The subjects of entries of these kinds in (after, upto], as a sub-select."""
    c = CHANGES.c
    return select(c.subject).where(c.kind.in_(kinds), c.seq > after, c.seq <= upto)


def has(conn: Connection, kinds: Sequence[str], after: int, upto: int) -> bool:
    """Whether any entry of these kinds lies in (after, upto] (a scan of that key range,
    which stops at the first one: appends are the hot path, so the journal has no index of
    kinds to keep up)."""
    c = CHANGES.c
    query = select(c.seq).where(c.kind.in_(kinds), c.seq > after, c.seq <= upto).limit(1)
    return conn.execute(query).first() is not None


def claim_range(conn: Connection, consumer: str) -> tuple[int, int, bool]:
    """(after, upto, first): the range a consumer claims now, and whether it never read
    before. Call `advance(conn, consumer, upto)` in the same transaction as the claim."""
    after = offset(conn, consumer)
    return after or 0, head(conn), after is None


def claim_into_mark(
    engine: Engine, consumer: str, kind: str, table: Table, mark: Column[Any]
) -> int:
    """Claim the entries of `kind` above the consumer's offset into its work set, a boolean
    `mark` on `table` (by id), and advance the offset, in one transaction. Returns how many
    rows were newly marked; with nothing of its kind above the offset nothing is written."""
    with engine.begin() as conn:
        after, upto, _first = claim_range(conn, consumer)
        if not has(conn, [kind], after, upto):
            return 0
        marked = conn.execute(
            update(table)
            .where(mark.is_(False), table.c.id.in_(subjects([kind], after, upto)))
            .values({mark.name: True})
        ).rowcount
        advance(conn, consumer, upto)
    return int(marked or 0)


def compact(engine: Engine, consumers: Sequence[str], batch: int = COMPACT_BATCH) -> int:
    """Delete, in bounded transactions, entries every one of these consumers has read; the
    newest entry always stays. Returns how many went."""
    with engine.connect() as conn:
        read = [offset(conn, c) for c in consumers]
        newest = head(conn)
    if not consumers or any(r is None for r in read):
        return 0
    horizon = min(min(r for r in read if r is not None), newest - 1)
    with engine.connect() as conn:  # nothing to delete: an idle cycle writes nothing
        if (
            conn.execute(select(CHANGES.c.seq).where(CHANGES.c.seq <= horizon).limit(1)).first()
            is None
        ):
            return 0
    removed = 0
    while True:
        with engine.begin() as conn:
            oldest = select(CHANGES.c.seq).where(CHANGES.c.seq <= horizon)
            oldest = oldest.order_by(CHANGES.c.seq).limit(batch)
            done = conn.execute(CHANGES.delete().where(CHANGES.c.seq.in_(oldest))).rowcount
        removed += done
        if done < batch:
            return removed


def kinds_read_by(consumer: str) -> list[str]:
    """The kinds a consumer claims (a destination: either upstream kind, and member)."""
    if consumer == IDENTITY_CONSUMER:
        return [RECORD]
    if consumer == RULES_CONSUMER:
        return [PROFILE]
    return [PROFILE, RULES, MEMBER]


def lags(conn: Connection, consumers: Sequence[str]) -> dict[str, dict[str, int | None]]:
    """Each consumer's offset and how many entries of the kinds it reads lie above it."""
    newest = head(conn)
    out: dict[str, dict[str, int | None]] = {}
    for consumer in consumers:
        read = offset(conn, consumer)
        kinds = kinds_read_by(consumer)
        above = select(func.count()).where(CHANGES.c.seq > (read or 0), CHANGES.c.kind.in_(kinds))
        out[consumer] = {"offset": read, "lag": int(conn.execute(above).scalar_one()),
                         "head": newest}  # fmt: skip
    return out
