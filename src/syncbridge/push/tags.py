"""Tags in Mailchimp: segment batch calls filled across chunks, acknowledged once per member.

A tag is a static segment; one call adds up to 500 and removes up to 500 addresses. The push
hands `TagBatcher` the tag operations of each chunk once that chunk's members exist in
Mailchimp; the batcher sends a tag's call as soon as 500 of its additions (or removals) are
waiting, so every call is full and the calls of all tags run side by side on the connections,
and sends what is left once the last chunk is in. A missing tag is created with its first
members (`static_segment`) by the first call that needs it.

An address is confirmed as having (or not having) a tag once Mailchimp said so, or answered
that it was so already: a repeated removal after a lost answer comes back as "not a member of
the segment", a repeated addition as "already a member"; any other complaint is settled by
looking at the member's tags. A member's acknowledged tag set is written once, when all of its
operations are settled — the tags it had, plus those confirmed added, less those confirmed
removed — in one statement for many members. Until then it keeps the set it had, so a crash
repeats the operations, never skips one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from ..errors import FatalError
from .client import ApiError, MailchimpClient
from .desired import subscriber_hash
from .plan import Plan
from .provision import folded_match, static_segments
from .report import AudienceReport
from .state import write_segment_ids, write_states

BATCH = 500
"""Emails per side of a segment call (Mailchimp's limit)."""
OPEN_LIMIT = 50_000
"""Members waiting for a tag call before every partly filled call is sent anyway: what the
batcher holds stays bounded whatever the number of rare tags."""
ACK_ROWS = 500
"""Settled members written in one statement."""

Member = tuple[int, str]
"""(profile id, email)"""


class TagSegments:
    """Static segment ids by tag name: known from earlier pushes, looked up in Mailchimp, or
    created (with the first members to add) the first time a tag is sent. Thread-safe; a
    tag is created at most once, while other tags go on.

    Beside each id it keeps the name Mailchimp knows the tag by (Mailchimp matches tag names
    without regard to case: our `vip` may be its `VIP`), saved with the ids as `[id, name]`
    (a bare id was saved before the names were: its name is looked up once; a name learned
    from a member object has no id yet), so a steady cycle sends its tags as Mailchimp spells
    them without listing the audience's tags."""

    def __init__(
        self, client: MailchimpClient, engine: Engine, list_id: str, known: dict[str, Any]
    ) -> None:
        self.client, self.engine, self.list_id = client, engine, list_id
        self.ids: dict[str, int] = {}
        self.names: dict[str, str] = {}
        for tag, saved in known.items():
            if isinstance(saved, list) and len(saved) == 2:
                self.names[tag] = str(saved[1])
                if saved[0] is not None:
                    self.ids[tag] = int(saved[0])
            else:
                self.ids[tag] = int(saved)
        self.created: list[str] = []
        self._lock = threading.Lock()
        self._tag_locks: dict[str, threading.Lock] = {}
        self._in_mailchimp: dict[str, int] | None = None

    def get(self, tag: str, first: list[str]) -> tuple[int, bool]:
        """(segment id, whether the segment was just created holding `first`)."""
        found = self.ids.get(tag)
        if found is not None:
            return found, False
        with self._lock:
            tag_lock = self._tag_locks.setdefault(tag, threading.Lock())
        with tag_lock:
            found = self.ids.get(tag)
            if found is not None:
                return found, False
            match = folded_match(self._mailchimp(), tag)
            holds = False
            if match is None:
                name, found, holds = self._create(tag, first)
            else:
                name, found = match
            self._remember(tag, found, name)
            return found, holds

    def spelling(self, tag: str) -> str:
        """The name Mailchimp knows this tag by (its case may differ), or the tag itself when
        Mailchimp has no such tag yet (as the push began)."""
        known = self.names.get(tag)
        if known is not None:
            return known
        match = folded_match(self._mailchimp(), tag)
        if match is None:
            return tag
        self._remember(tag, match[1], match[0])
        return match[0]

    def spell(self, tags: list[str]) -> None:
        """Learn Mailchimp's names of these tags (one listing, only if one is not known)."""
        for tag in tags:
            self.spelling(tag)

    def learn(self, tag: str, name: str) -> None:
        """A tag's name as a member object listed it (a tag a batch upsert made). Only the
        name: the id a member object gives its tags is not documented as the segment's."""
        if self.names.get(tag) != name:
            self._remember(tag, None, name)

    def _remember(self, tag: str, segment: int | None, name: str) -> None:
        with self._lock:
            if self.names.get(tag) == name and (segment is None or self.ids.get(tag) == segment):
                return
            self.names[tag] = name
            if segment is not None:
                self.ids[tag] = segment
            saved: dict[str, Any] = {t: [self.ids.get(t), n] for t, n in self.names.items()}
            saved.update({t: i for t, i in self.ids.items() if t not in self.names})
            with self.engine.begin() as conn:
                write_segment_ids(conn, self.list_id, saved)

    def _mailchimp(self, again: bool = False) -> dict[str, int]:
        with self._lock:
            if self._in_mailchimp is None or again:
                self._in_mailchimp = static_segments(self.client, self.list_id)
            return self._in_mailchimp

    def _create(self, tag: str, first: list[str]) -> tuple[str, int, bool]:
        """Create the tag with its first members: (its name in Mailchimp, its id, whether it
        holds them). Mailchimp ignores addresses it does not hold, so they count as tagged only
        when the new segment's count says all of them are in; a create refused because the name
        exists (an earlier answer was lost, or it was made meanwhile in another case) is looked
        up, with the name Mailchimp gave it."""
        body = {"name": tag, "static_segment": first}
        try:
            segment = self.client.call(self.client.sdk.lists.create_segment, self.list_id, body)
        except ApiError as exc:
            match = folded_match(self._mailchimp(again=True), tag)
            if match is None:
                raise FatalError(
                    f"cannot create tag {tag!r} in audience {self.list_id}: {exc}"
                ) from None
            return match[0], match[1], False
        with self._lock:
            self.created.append(tag)
        return tag, int(segment["id"]), segment.get("member_count") == len(set(first))


@dataclass
class _Open:
    """A member whose tag operations are not all settled yet."""

    had: frozenset[str]
    waiting: int
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)


class TagBatcher:
    """Tag operations of confirmed members, sent in full calls as they accumulate.

    `submit(fn, *args)` runs a call on the push's connections (`apply.Runner.submit`)."""

    def __init__(
        self,
        client: MailchimpClient,
        engine: Engine,
        audience: str,
        segments: TagSegments,
        report: AudienceReport,
        submit: Callable[..., None],
    ) -> None:
        self.client, self.engine, self.audience = client, engine, audience
        self.segments, self.report, self.submit = segments, report, submit
        self._adds: dict[str, list[Member]] = {}
        self._removes: dict[str, list[Member]] = {}
        self._open: dict[int, _Open] = {}
        self._ready: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, plan: Plan, skip: Iterable[int] = ()) -> None:
        """The tag operations of a planned chunk whose members now exist (all but `skip`)."""
        skipped = set(skip)
        counts: dict[int, int] = {}
        adds = _without(plan.tag_adds, skipped, counts)
        removes = _without(plan.tag_removes, skipped, counts)
        if not counts:
            return
        full: list[tuple[str, list[Member], list[Member]]] = []
        with self._lock:
            for pid, n in counts.items():
                self._open[pid] = _Open(plan.tags_had.get(pid, frozenset()), n)
            for tag, members in adds.items():
                self._adds.setdefault(tag, []).extend(members)
            for tag, members in removes.items():
                self._removes.setdefault(tag, []).extend(members)
            for tag in set(adds) | set(removes):
                full += self._take(tag, whole_only=True)
            if len(self._open) > OPEN_LIMIT:
                full += self._take_all()
        for call in full:
            self.submit(self._send, *call)

    def flush(self) -> None:
        """Send every operation still waiting (after the last chunk)."""
        with self._lock:
            calls = self._take_all()
        for call in calls:
            self.submit(self._send, *call)

    def finish(self) -> None:
        """Write the acknowledgements still buffered (after every call finished)."""
        with self._lock:
            rows, self._ready = self._ready, []
        self._write(rows)

    # ------------------------------------------------------------------ internals

    def _take(self, tag: str, whole_only: bool) -> list[tuple[str, list[Member], list[Member]]]:
        adds, removes = self._adds.get(tag, []), self._removes.get(tag, [])
        calls = []
        while len(adds) >= BATCH or len(removes) >= BATCH or (not whole_only and (adds or removes)):
            calls.append((tag, adds[:BATCH], removes[:BATCH]))
            adds, removes = adds[BATCH:], removes[BATCH:]
        self._adds[tag], self._removes[tag] = adds, removes
        return calls

    def _take_all(self) -> list[tuple[str, list[Member], list[Member]]]:
        calls = []
        for tag in sorted(set(self._adds) | set(self._removes)):
            calls += self._take(tag, whole_only=False)
        return calls

    def _send(self, tag: str, adds: list[Member], removes: list[Member]) -> None:
        emails = [e for _, e in adds]
        segment, holds = self.segments.get(tag, emails)
        if holds:  # created holding them; a new tag has nobody to remove
            added, removed = set(emails), {e for _, e in removes}
        else:
            body = {"members_to_add": emails, "members_to_remove": [e for _, e in removes]}
            lists = self.client.sdk.lists
            response = self.client.call(
                lists.batch_segment_members, body, self.segments.list_id, segment
            )
            added, removed = settle_tag_call(
                self.client, self.segments.list_id, tag, adds, removes, response, self.report
            )
        self._settle(tag, adds, removes, added, removed)
        self.report.bump("tag additions", len(added))
        self.report.bump("tag removals", len(removed))

    def _settle(
        self,
        tag: str,
        adds: list[Member],
        removes: list[Member],
        added: set[str],
        removed: set[str],
    ) -> None:
        rows: list[dict[str, Any]] = []
        with self._lock:
            for members, confirmed, adding in ((adds, added, True), (removes, removed, False)):
                for pid, email in members:
                    state = self._open[pid]
                    if email in confirmed:
                        (state.added if adding else state.removed).add(tag)
                    state.waiting -= 1
                    if state.waiting == 0:
                        del self._open[pid]
                        tags = (state.had | state.added) - state.removed
                        self._ready.append({"profile_id": pid, "tags": sorted(tags)})
            if len(self._ready) >= ACK_ROWS:
                rows, self._ready = self._ready, []
        self._write(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                write_states(conn, self.audience, rows)


def _without(
    ops: dict[str, list[Member]], skip: set[int], counts: dict[int, int]
) -> dict[str, list[Member]]:
    """The operations of members not in `skip`, counting each member's operations."""
    out: dict[str, list[Member]] = {}
    for tag, members in ops.items():
        kept = [m for m in members if m[0] not in skip] if skip else members
        if kept:
            out[tag] = kept
            for pid, _ in kept:
                counts[pid] = counts.get(pid, 0) + 1
    return out


def settle_tag_call(
    client: MailchimpClient,
    list_id: str,
    tag: str,
    adds: list[Member],
    removes: list[Member],
    response: dict[str, Any],
    report: AudienceReport,
) -> tuple[set[str], set[str]]:
    """The addresses whose tag now is as wanted: (have it, do not have it).

    Confirmed are those Mailchimp lists as added or removed, those it does not complain
    about, and those already in the wanted state: a repeated removal (after a crash or a lost
    answer) comes back as "Email address is not a member of the segment", a repeated addition
    as "already a member of the segment", and either holds. For any other complaint the
    member's tags are looked up, so the acknowledged state follows what Mailchimp really has."""
    complaints: dict[str, str] = {}
    for err in response.get("errors") or ():
        for email in err.get("email_addresses") or ():
            complaints[str(email).lower()] = str(err.get("error", ""))
    adding = {e for _, e in adds}
    added = {e for e in adding if e not in complaints}
    removed = {e for _, e in removes if e not in complaints}
    for email, message in complaints.items():
        folded = message.lower()
        if email not in adding and "not a member of the segment" in folded:
            removed.add(email)
            continue
        if email in adding and "already a member of the segment" in folded:
            added.add(email)
            continue
        has = member_has_tag(client, list_id, email, tag)
        if email in adding:
            if has:
                added.add(email)
            else:
                report.errors.append((email, f"tag {tag!r}: {message}"))
        elif not has:
            removed.add(email)
    return added, removed


def member_has_tag(client: MailchimpClient, list_id: str, email: str, tag: str) -> bool:
    """Whether the member carries the tag now (False when there is no such member)."""
    try:
        page = client.call(
            client.sdk.lists.get_list_member_tags, list_id, subscriber_hash(email), count=1000
        )
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return any(t.get("name", "").lower() == tag.lower() for t in page.get("tags", []))
