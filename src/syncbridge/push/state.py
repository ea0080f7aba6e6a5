"""Reads and writes the push layer's tables: acknowledged member state and Mailchimp's view."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from ..store.bulk import as_utc, chunks, utcnow
from ..store.rawsql import insert_many, read_json, select_in
from ..store.tables import AudienceMember, AudienceSync, MemberState, Profile
from .plan import Acked

STATES = MemberState.__table__
MEMBERS = AudienceMember.__table__
SYNC = AudienceSync.__table__
PROFILES = Profile.__table__
_STATE_COLUMNS = ("email", "status", "merge_hash", "merge_fields", "tags", "acknowledged_at",
                  "error", "error_hash")  # fmt: skip


def profiles(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[dict[str, Any], bool]]:
    """id → (attributes, deleted) for these profiles."""
    sql = "SELECT id, attributes, deleted FROM profile WHERE id IN ({in})"
    return {
        pid: (read_json(attributes) or {}, bool(deleted))
        for pid, attributes, deleted in select_in(conn, sql, (), ids)
    }


def rule_results(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """id → (traits, content, tags, segments) the rules stored for these profiles."""
    sql = "SELECT profile_id, traits, content, tags, segments FROM profile_rules WHERE "
    sql += "profile_id IN ({in})"
    return {
        pid: (read_json(traits), read_json(content), read_json(tags), read_json(segments))
        for pid, traits, content, tags, segments in select_in(conn, sql, (), ids)
    }


def acked_states(conn: Connection, audience: str, ids: Sequence[int]) -> dict[int, Acked]:
    sql = (
        "SELECT profile_id, email, status, merge_hash, merge_fields, tags, error_hash "
        "FROM member_state WHERE audience = ? AND profile_id IN ({in})"
    )
    return {
        pid: Acked(
            email,
            status,
            merge_hash,
            read_json(merge) or {},
            frozenset(read_json(tags) or ()),
            error_hash,
        )
        for pid, email, status, merge_hash, merge, tags, error_hash in select_in(
            conn, sql, (audience,), ids
        )
    }


def address_holders(conn: Connection, audience: str, emails: Iterable[str]) -> dict[str, set[int]]:
    """Which profiles' acknowledged state holds each of these addresses (not archived)."""
    s = STATES.c
    out: dict[str, set[int]] = {}
    for part in chunks(sorted(set(emails))):
        query = select(s.email, s.profile_id).where(
            s.audience == audience, s.email.in_(part), s.status.is_distinct_from("archived")
        )
        for email, pid in conn.execute(query):
            out.setdefault(email, set()).add(pid)
    return out


def status_changed(conn: Connection, list_id: str, members: list[dict[str, Any]]) -> list[str]:
    """Addresses among these read-back members whose status differs from the one stored
    (a member the push itself just wrote is no news; an unsubscribe in Mailchimp is)."""
    if not members:
        return []
    m = MEMBERS.c
    hashes = [member["id"] for member in members]
    before: dict[str, str] = {}
    for part in chunks(hashes):
        query = select(m.subscriber_hash, m.status).where(
            m.list_id == list_id, m.subscriber_hash.in_(part)
        )
        before.update(dict(conn.execute(query).all()))
    return [
        member["email_address"].lower()
        for member in members
        if member["id"] in before and before[member["id"]] != member["status"]
    ]


def profiles_at(conn: Connection, audience: str, emails: Iterable[str]) -> list[int]:
    """Profiles whose acknowledged member in this audience is at one of these addresses."""
    s = STATES.c
    out: list[int] = []
    for part in chunks(sorted(set(emails))):
        query = select(s.profile_id).where(s.audience == audience, s.email.in_(part))
        out.extend(conn.execute(query).scalars())
    return out


def drop_states(conn: Connection, audience: str, ids: list[int]) -> None:
    """Forget profiles' acknowledged state (merged away: the survivor holds the member now)."""
    for part in chunks(sorted(set(ids))):
        conn.execute(
            STATES.delete().where(STATES.c.audience == audience, STATES.c.profile_id.in_(part))
        )


def mailchimp_statuses(conn: Connection, list_id: str, hashes: Iterable[str]) -> dict[str, str]:
    sql = "SELECT subscriber_hash, status FROM audience_member WHERE list_id = ? AND "
    sql += "subscriber_hash IN ({in})"
    return dict(select_in(conn, sql, (list_id,), sorted(set(hashes))))  # type: ignore[arg-type]


def write_states(conn: Connection, audience: str, rows: list[dict[str, Any]]) -> None:
    """Upsert member_state rows ({profile_id, and any of _STATE_COLUMNS})."""
    for row in rows:  # rows differ in the columns they set: one statement per shape
        row["audience"] = audience
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(tuple(sorted(row)), []).append(row)
    for shape, group in by_shape.items():
        update_cols = [c for c in shape if c in _STATE_COLUMNS]
        defaults: dict[str, Any] = {"merge_fields": {}, "tags": []}
        filled = [{**{k: v for k, v in defaults.items() if k not in r}, **r} for r in group]
        insert_many(conn, STATES, filled, ["audience", "profile_id"], update_cols)


def write_mailchimp_members(conn: Connection, list_id: str, members: list[dict[str, Any]]) -> None:
    """Record Mailchimp's view of members from any API response that returned them."""
    rows = {}
    for m in members:
        rows[m["id"]] = {
            "list_id": list_id,
            "subscriber_hash": m["id"],
            "email": m["email_address"].lower(),
            "status": m["status"],
            "last_changed": _parse_time(m.get("last_changed")),
            "unsubscribe_reason": m.get("unsubscribe_reason"),
        }
    insert_many(
        conn, MEMBERS, list(rows.values()), ["list_id", "subscriber_hash"],
        ["email", "status", "last_changed", "unsubscribe_reason"],
    )  # fmt: skip


def forget_mailchimp_member(conn: Connection, list_id: str, subscriber: str) -> None:
    """Mailchimp has no member at this hash any more (it was renamed to another address)."""
    m = MEMBERS.c
    conn.execute(MEMBERS.delete().where(m.list_id == list_id, m.subscriber_hash == subscriber))


def live_member_count(conn: Connection, list_id: str) -> int:
    """Members of the audience as last read back, archived ones not counted."""
    m = MEMBERS.c
    query = select(func.count()).where(m.list_id == list_id, m.status != "archived")
    return int(conn.execute(query).scalar_one())


def set_mailchimp_status(conn: Connection, list_id: str, subscriber: str, status: str) -> None:
    m = MEMBERS.c
    conn.execute(
        update(MEMBERS)
        .where(m.list_id == list_id, m.subscriber_hash == subscriber)
        .values(status=status)
    )


def read_watermark(conn: Connection, list_id: str) -> tuple[datetime | None, dict[str, Any]]:
    row = conn.execute(select(SYNC).where(SYNC.c.list_id == list_id)).mappings().first()
    if row is None:
        return None, {}
    return as_utc(row["members_read_until"]), dict(row["segment_ids"] or {})


def write_sync(
    conn: Connection, list_id: str, read_until: datetime | None, segment_ids: dict[str, Any]
) -> None:
    row = {"list_id": list_id, "members_read_until": read_until, "segment_ids": segment_ids}
    insert_many(conn, SYNC, [row], ["list_id"], ["members_read_until", "segment_ids"])


def write_segment_ids(conn: Connection, list_id: str, segment_ids: dict[str, Any]) -> None:
    """Remember the tags' segment ids (the read-back watermark beside them is left as it is)."""
    done = conn.execute(
        update(SYNC).where(SYNC.c.list_id == list_id).values(segment_ids=segment_ids)
    ).rowcount
    if not done:
        write_sync(conn, list_id, None, segment_ids)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


def now() -> datetime:
    return utcnow()
