"""Tags in Mailchimp: segment batch calls per tag, and acknowledgement per address.

A tag is a static segment; one call adds up to 500 and removes up to 500 addresses. An address
is acknowledged as having (or not having) the tag once Mailchimp confirmed it, or answered that
it was so already: a repeated removal after a lost answer comes back as "not a member of the
segment", and any other complaint is settled by looking at the member's tags.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine

from .client import ApiError, MailchimpClient
from .desired import subscriber_hash
from .parallel import in_parallel
from .plan import Plan
from .provision import ensure_tags
from .report import AudienceReport
from .state import acked_states, read_watermark, write_states, write_sync

BATCH = 500
"""Emails per side of a segment call (Mailchimp's limit)."""
_tag_lock = threading.Lock()
"""Serialises the read-modify-write of members' acknowledged tag sets."""


def apply_tags(
    client: MailchimpClient, engine: Engine, plan: Plan, report: AudienceReport, skip: set[int]
) -> None:
    audience = plan.audience
    tags = {t for t, members in plan.tag_adds.items() if members} | {
        t for t, members in plan.tag_removes.items() if members
    }
    if not tags:
        return
    with engine.connect() as conn:
        read_until, known = read_watermark(conn, audience.list_id)
    segment_ids, created = ensure_tags(client, audience.list_id, tags, known)
    report.created_tags.extend(created)
    with engine.begin() as conn:
        write_sync(conn, audience.list_id, read_until, segment_ids)

    def one_tag(tag: str) -> None:
        adds = [(p, e) for p, e in plan.tag_adds.get(tag, []) if p not in skip]
        removes = [(p, e) for p, e in plan.tag_removes.get(tag, []) if p not in skip]
        while adds or removes:
            add_part, adds = adds[:BATCH], adds[BATCH:]
            remove_part, removes = removes[:BATCH], removes[BATCH:]
            body = {"members_to_add": [e for _, e in add_part],
                    "members_to_remove": [e for _, e in remove_part]}  # fmt: skip
            response = client.call(
                client.sdk.lists.batch_segment_members, body, audience.list_id, segment_ids[tag]
            )
            added, removed = settle_tag_call(
                client, audience.list_id, tag, add_part, remove_part, response, report
            )
            _ack_tags(engine, audience.name, tag, add_part, remove_part, added, removed)
            report.bump("tag additions", len(added))
            report.bump("tag removals", len(removed))

    in_parallel(client, one_tag, sorted(tags))


def settle_tag_call(
    client: MailchimpClient,
    list_id: str,
    tag: str,
    adds: list[tuple[int, str]],
    removes: list[tuple[int, str]],
    response: dict[str, Any],
    report: AudienceReport,
) -> tuple[set[str], set[str]]:
    """The addresses whose tag now is as wanted: (have it, do not have it).

    Confirmed are those Mailchimp lists as added or removed, those it does not complain
    about, and those already in the wanted state: a repeated removal (after a crash or a lost
    answer) comes back as "Email address is not a member of the segment", and the removal
    holds. For any other complaint the member's tags are looked up, so the acknowledged state
    follows what Mailchimp really has."""
    complaints: dict[str, str] = {}
    for err in response.get("errors", []):
        for email in err.get("email_addresses", []):
            complaints[str(email).lower()] = str(err.get("error", ""))
    adding = {e for _, e in adds}
    added = {e for e in adding if e not in complaints}
    removed = {e for _, e in removes if e not in complaints}
    for email, message in complaints.items():
        if email not in adding and "not a member of the segment" in message.lower():
            removed.add(email)
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


def _ack_tags(
    engine: Engine,
    audience_name: str,
    tag: str,
    adds: list[tuple[int, str]],
    removes: list[tuple[int, str]],
    added: set[str],
    removed: set[str],
) -> None:
    """A member's tag set moves only for the addresses whose tag is confirmed as wanted."""
    pids = [p for p, _ in adds + removes]
    with _tag_lock, engine.begin() as conn:
        current = acked_states(conn, audience_name, pids)
        rows = []
        for pid, email in adds:
            if email in added:
                tags = set(current[pid].tags) if pid in current else set()
                rows.append({"profile_id": pid, "tags": sorted(tags | {tag})})
        for pid, email in removes:
            if email in removed:
                tags = set(current[pid].tags) if pid in current else set()
                rows.append({"profile_id": pid, "tags": sorted(tags - {tag})})
        write_states(conn, audience_name, rows)
