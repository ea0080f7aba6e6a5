"""Read back what others changed in Mailchimp since the last read, without re-reading what the
push itself wrote.

Mailchimp moves a member's `last_changed` on every change, the push's own writes included, so
"changed since the last read" holds every member the last push wrote. Their state is no news:
the push recorded it from Mailchimp's answers (`audience_member`). The read therefore proves,
per status, that the members it does not fetch are the ones it already holds:

- members are listed per status (subscribed, unsubscribed, cleaned, pending, transactional,
  archived), changed since the watermark, newest first, only the fields needed;
- the status holding most recorded members (normally `subscribed`, where a push writes) is
  opened first: one page and its `total_items`. Every other status is then read in full,
  its pages side by side within the client's connection limit;
- a recorded member seen under another status has left the first one. If the first status's
  total exceeds what the cache expects there (its recorded members since the watermark, less
  those that left) by exactly the number of unknown or changed members on its first page, the
  rest of it is the push's own writes; otherwise it is read in full as well.

A listing read in several pages is opened and closed by its first page: different totals or a
different first page mean members moved meanwhile (an offset may have skipped one), and it is
read again. Each page is recorded, and the profiles whose member's status changed (or whose
address appeared) are journalled (kind `member`), in one transaction; the watermark moves only
after everything was read, so a crash repeats the read and loses nothing.

Time comes from Mailchimp only: the next read starts one second before the newest
`last_changed` the cache held when this one began, which no later change can predate, whatever
our clock says. The comparison at the watermark errs towards reading: a recorded member in
its second counts as unknown. Not provable from counts: a member the cache holds, deleted
permanently (or renamed) in Mailchimp since the watermark, exactly offset by an unknown
change of the same status older than the first page.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from ..config.models import AudienceConfig
from ..store import journal
from ..store.bulk import as_utc, chunks
from .client import MailchimpClient
from .parallel import in_parallel
from .state import (
    MEMBERS,
    profiles_at,
    read_watermark,
    write_mailchimp_members,
    write_sync,
)

log = logging.getLogger(__name__)
READ_PAGE = 1000
"""Members per page (Mailchimp's `count` limit)."""
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
FIELDS = [
    "members.id", "members.email_address", "members.status", "members.last_changed",
    "members.unsubscribe_reason", "total_items",
]  # fmt: skip
ATTEMPTS = 3
"""Reads of one status while its members keep moving, before giving up for this cycle."""


def read_back(client: MailchimpClient, engine: Engine, audience: AudienceConfig) -> int:
    """Record what changed in Mailchimp since the last read (everything the first time) and
    journal the profiles it concerns; returns the number of members fetched."""
    list_id = audience.list_id
    with engine.connect() as conn:
        since, segments = read_watermark(conn, list_id)
        since = since.replace(microsecond=0) if since is not None else None
        expected = recorded_counts(conn, list_id, since)
        newest = newest_recorded(conn, list_id)
    reader = Reader(client, engine, audience, since)
    first = max(STATUSES, key=lambda status: (expected.get(status, 0), status == "subscribed"))
    opened = reader.page(first, 0)
    rest = [status for status in STATUSES if status != first]
    complete = all(in_parallel(client, reader.read_all, rest))
    surplus = opened.total - expected.get(first, 0) + len(reader.left[first])
    proven = opened.total <= len(opened.members) or len(reader.unknown[first]) == surplus
    if not proven:
        complete = reader.read_all(first) and complete
    log.debug(
        "read back %s: %d members in %d calls; %s %s", list_id, reader.fetched, reader.calls,
        first, "proven from its first page" if proven else "read in full",
    )  # fmt: skip
    if not complete:
        log.warning("members of %s kept moving while read; read again next cycle", list_id)
        return reader.fetched
    upto = since
    if newest is not None:
        upto = max(filter(None, (since, newest.replace(microsecond=0) - timedelta(seconds=1))))
    with engine.begin() as conn:
        write_sync(conn, list_id, upto, segments)
    return reader.fetched


@dataclass
class Page:
    total: int
    members: list[dict[str, Any]]

    def signature(self) -> list[tuple[str, str, str]]:
        return [(m["id"], m["status"], str(m.get("last_changed"))) for m in self.members]


@dataclass
class Reader:
    """Fetches and records pages; remembers, per member met, what the cache held before."""

    client: MailchimpClient
    engine: Engine
    audience: AudienceConfig
    since: datetime | None
    fetched: int = 0
    calls: int = 0
    held: dict[str, tuple[str, datetime | None] | None] = field(default_factory=dict)
    left: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in STATUSES})
    """Per status: recorded members since the watermark, now seen under another status."""
    unknown: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in STATUSES})
    """Per status: members seen there that the cache did not hold there since the watermark."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self, status: str, offset: int) -> Page:
        kwargs: dict[str, Any] = {"status": status, "sort_field": "last_changed",
                                  "sort_dir": "DESC", "fields": FIELDS}  # fmt: skip
        if self.since is not None:
            kwargs["since_last_changed"] = self.since.isoformat()
        members_info = self.client.sdk.lists.get_list_members_info
        answer = self.client.call(
            members_info, self.audience.list_id, count=READ_PAGE, offset=offset, **kwargs
        )
        page = Page(int(answer.get("total_items") or 0), list(answer.get("members") or []))
        self.record(page.members)
        return page

    def read_all(self, status: str) -> bool:
        """Every member of this status since the watermark; False if they kept moving."""
        for _ in range(ATTEMPTS):
            opened = self.page(status, 0)
            if opened.total <= len(opened.members) or len(opened.members) < READ_PAGE:
                return True
            offsets = list(range(READ_PAGE, opened.total, READ_PAGE))
            pages = in_parallel(self.client, lambda offset: self.page(status, offset), offsets)
            closed = self.page(status, 0)
            totals = {opened.total, closed.total, *(p.total for p in pages)}
            if len(totals) == 1 and opened.signature() == closed.signature():
                return True
        return False

    def record(self, members: list[dict[str, Any]]) -> None:
        """Store Mailchimp's view of these members and journal the profiles whose member's
        status is news, in one transaction; note who left or joined each status."""
        list_id = self.audience.list_id
        with self.lock, self.engine.begin() as conn:
            self.calls += 1
            self.fetched += len(members)
            current = recorded(conn, list_id, [m["id"] for m in members])
            for m in members:
                self.held.setdefault(m["id"], current.get(m["id"]))
                self.note(m)
            news = [
                m["email_address"].lower()
                for m in members
                if (held := current.get(m["id"])) is None or held[0] != m["status"]
            ]
            write_mailchimp_members(conn, list_id, members)
            journal.append(conn, journal.MEMBER, profiles_at(conn, self.audience.name, news))

    def note(self, member: dict[str, Any]) -> None:
        held, status = self.held[member["id"]], member["status"]
        counted = held is not None and self.counted(held)
        if counted and held is not None and held[0] == status:
            return  # where the cache expects it
        if counted and held is not None:
            self.left[held[0]].add(member["id"])
        self.unknown[status].add(member["id"])

    def counted(self, held: tuple[str, datetime | None]) -> bool:
        """Whether this recorded member is among those `recorded_counts` expects."""
        if self.since is None:
            return True
        return held[1] is not None and held[1] >= self.since + timedelta(seconds=1)


def recorded(conn: Connection, list_id: str, hashes: Iterable[str]) -> dict[str, Any]:
    """hash → (status, last_changed) the cache holds for these members."""
    m = MEMBERS.c
    out: dict[str, Any] = {}
    for part in chunks(sorted(set(hashes))):
        query = select(m.subscriber_hash, m.status, m.last_changed).where(
            m.list_id == list_id, m.subscriber_hash.in_(part)
        )
        out.update({h: (status, as_utc(lc)) for h, status, lc in conn.execute(query)})
    return out


def recorded_counts(conn: Connection, list_id: str, since: datetime | None) -> dict[str, int]:
    """Recorded members per status changed after the watermark's second (all without one)."""
    m = MEMBERS.c
    query = select(m.status, func.count()).where(m.list_id == list_id).group_by(m.status)
    if since is not None:
        query = query.where(m.last_changed >= since + timedelta(seconds=1))
    return {status: int(n) for status, n in conn.execute(query)}


def newest_recorded(conn: Connection, list_id: str) -> datetime | None:
    m = MEMBERS.c
    newest = conn.execute(select(func.max(m.last_changed)).where(m.list_id == list_id)).scalar()
    if isinstance(newest, str):  # SQLite hands an aggregate back as text
        newest = datetime.fromisoformat(newest)
    return as_utc(newest)
