"""Read back what others changed in Mailchimp since the last read, without re-reading what the
push itself wrote.

Mailchimp moves a member's `last_changed` on every change, the push's own writes (upserts,
tags) included, so "changed since the last read" holds every member the last push wrote. Their
state is no news: the push recorded it from Mailchimp's answers (`audience_member`). The read
therefore proves that the members it does not fetch are the ones the cache already holds:

- members are listed per status (subscribed, unsubscribed, cleaned, pending, transactional,
  archived), newest first, only the fields needed;
- the status the cache holds most members under (normally `subscribed`, where a push writes)
  is opened first, whole (not only since the watermark): one page and its `total_items`.
  Every other status is then read in full since the watermark, its pages side by side within
  the client's connection limit;
- a member the cache held under the first status, seen under another, has left it. If the
  first status's total exceeds what the cache holds there, less those that left, by exactly
  the number of members on its first page the cache did not hold there, the rest of it is as
  the cache holds it; otherwise it is read in full as well, and members the cache holds there
  that Mailchimp showed nowhere are forgotten (deleted permanently, or renamed).

A listing read in several pages is opened and closed by its first page: different totals or a
different first page mean members moved meanwhile (an offset may have skipped one), and it is
read again. Each page is recorded, and the profiles whose member's status changed (or whose
address appeared) are journalled (kind `member`), in one transaction; the watermark moves only
after everything was read, so a crash repeats the read and loses nothing.

Time comes from Mailchimp only: the next read starts one second before the newest
`last_changed` the cache held when this one began, which no later change can predate, whatever
our clock says. Not provable from counts: a member the cache holds deleted (or renamed) in
Mailchimp, offset exactly by an unknown member of the same status older than the first page;
the next full read of that status settles it.
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
        expected = recorded_counts(conn, list_id)
        newest = newest_recorded(conn, list_id)
    first = max(STATUSES, key=lambda status: (expected.get(status, 0), status == "subscribed"))
    reader = Reader(client, engine, audience, since, first)
    opened = reader.page(first, 0)
    rest = [status for status in STATUSES if status != first]
    complete = all(in_parallel(client, reader.read_all, rest))
    surplus = opened.total - expected.get(first, 0) + len(reader.left)
    proven = opened.total <= len(opened.members) or len(reader.unknown) == surplus
    if not proven:
        read = reader.read_all(first)
        if read:  # a member the cache holds there and Mailchimp no longer has is gone
            with engine.begin() as conn:
                forget_missing(conn, list_id, first, reader.held)
        complete = read and complete
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
    first: str
    """The status counted whole (every member of it, not only those changed since)."""
    fetched: int = 0
    calls: int = 0
    held: dict[str, str | None] = field(default_factory=dict)
    """The status the cache held, before this read, for each member met."""
    left: set[str] = field(default_factory=set)
    """Members the cache held under `first`, seen under another status."""
    unknown: set[str] = field(default_factory=set)
    """Members seen under `first` that the cache did not hold there."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self, status: str, offset: int) -> Page:
        kwargs: dict[str, Any] = {"status": status, "sort_field": "last_changed",
                                  "sort_dir": "DESC", "fields": FIELDS}  # fmt: skip
        if self.since is not None and status != self.first:
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
            news = [m["email_address"].lower() for m in members
                    if current.get(m["id"]) != m["status"]]  # fmt: skip
            write_mailchimp_members(conn, list_id, members)
            journal.append(conn, journal.MEMBER, profiles_at(conn, self.audience.name, news))

    def note(self, member: dict[str, Any]) -> None:
        held, status = self.held[member["id"]], member["status"]
        if status == self.first and held != status:
            self.unknown.add(member["id"])
        elif status != self.first and held == self.first:
            self.left.add(member["id"])


def recorded(conn: Connection, list_id: str, hashes: Iterable[str]) -> dict[str, str]:
    """hash → status the cache holds for these members."""
    m = MEMBERS.c
    out: dict[str, str] = {}
    for part in chunks(sorted(set(hashes))):
        query = select(m.subscriber_hash, m.status).where(
            m.list_id == list_id, m.subscriber_hash.in_(part)
        )
        out.update(dict(conn.execute(query).all()))
    return out


def recorded_counts(conn: Connection, list_id: str) -> dict[str, int]:
    """Recorded members per status."""
    m = MEMBERS.c
    query = select(m.status, func.count()).where(m.list_id == list_id).group_by(m.status)
    return {status: int(n) for status, n in conn.execute(query)}


def forget_missing(conn: Connection, list_id: str, status: str, seen: dict[str, Any]) -> None:
    """After a whole, consistent read of a status: members the cache holds under it that
    Mailchimp showed nowhere are gone (deleted permanently, or renamed), and forgotten."""
    m = MEMBERS.c
    query = select(m.subscriber_hash).where(m.list_id == list_id, m.status == status)
    gone = [h for h in conn.execute(query).scalars() if h not in seen]
    for part in chunks(gone):
        conn.execute(MEMBERS.delete().where(m.list_id == list_id, m.subscriber_hash.in_(part)))


def newest_recorded(conn: Connection, list_id: str) -> datetime | None:
    m = MEMBERS.c
    newest = conn.execute(select(func.max(m.last_changed)).where(m.list_id == list_id)).scalar()
    if isinstance(newest, str):  # SQLite hands an aggregate back as text
        newest = datetime.fromisoformat(newest)
    return as_utc(newest)
