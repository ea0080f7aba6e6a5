"""Member calls of a push: batch upserts, pending-member patches, renames and archives.

Each function makes its call, then acknowledges what Mailchimp confirmed in one transaction of
its own (one statement per table for a whole batch): a crash between the call and the
acknowledgement repeats the call next time (every call here is idempotent) and never skips it.
They return the profiles whose operation did not succeed (not acknowledged: planned again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine

from ..config.models import AudienceConfig, MailchimpConfig
from .batches import run_batch
from .client import ApiError, MailchimpClient
from .desired import subscriber_hash
from .inline_tags import confirmed_tags
from .plan import EmailChange, Removal, Upsert
from .report import AudienceReport
from .state import (
    forget_mailchimp_member,
    now,
    set_mailchimp_status,
    write_mailchimp_members,
    write_states,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]


@dataclass
class Upserted:
    """What one batch upsert settled."""

    absent: set[int] = field(default_factory=set)
    """Profiles not acknowledged (planned again)."""
    tagged: dict[int, set[str]] = field(default_factory=dict)
    """Tags sent inside the call that Mailchimp confirmed, by profile."""
    learned: dict[str, str] = field(default_factory=dict)
    """Confirmed tags' names as the answer lists them."""
    tags_refused: bool = False
    """The call carried tags and was refused for it: it was made again without them."""
    tags_unseen: bool = False
    """The call carried tags but the answer confirmed none of them (its members list no tags,
    or not the ones sent: a server that ignores the field)."""


def upsert_batch(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    upserts: list[Upsert],
    report: AudienceReport,
    inline: dict[int, dict[str, str]] | None = None,
    had: dict[int, frozenset[str]] | None = None,
) -> Upserted:
    """One batch-subscribe call (at most 500 members) and the acknowledgement of what it
    confirmed. `inline`: tags to add with the members (see inline_tags.py), acknowledged on
    top of `had` (what the member's address is known to have) when the answer lists them."""
    done = Upserted()
    call = client.sdk.lists.batch_list_members
    try:
        response = client.call(call, audience.list_id, upsert_body(upserts, inline))
    except ApiError as exc:
        if not inline or exc.status != 400:
            raise
        log.warning("batch-subscribe refused member tags (%s): sending them by segment", exc)
        done.tags_refused, inline = True, None
        response = client.call(call, audience.list_id, upsert_body(upserts))
    done.absent = acknowledge_upserts(
        engine, audience, upserts, response, report, inline, had, done
    )
    confirmed_members = response.get("new_members") or response.get("updated_members")
    if inline and confirmed_members and not done.tagged:  # sent, answered, none of them kept
        done.tags_unseen = True
    return done


def upsert_body(upserts: list[Upsert], inline: dict[int, dict[str, str]] | None = None) -> JSON:
    members = []
    for u in upserts:
        item = {"email_address": u.member.email, "status": u.status, "merge_fields": u.merge_fields}
        tags = inline.get(u.member.profile_id) if inline else None
        if tags:
            item["tags"] = sorted(tags.values())
        members.append(item)
    return {"members": members, "update_existing": True}


def patch_member(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    upsert: Upsert,
    report: AudienceReport,
) -> set[int]:
    """Update a pending member's merge fields without a status: Mailchimp sends the opt-in
    email again whenever `pending` is written, so a batch upsert (which needs a status) is
    not used for them."""
    email = upsert.member.email
    try:
        member = client.call(
            client.sdk.lists.update_list_member, audience.list_id, upsert.member.hash,
            {"merge_fields": upsert.merge_fields},
        )  # fmt: skip
    except ApiError as exc:
        if exc.status == 404:  # gone since the read-back: seen by the next one
            return {upsert.member.profile_id}
        response: dict[str, Any] = {"errors": [{"email_address": email, "error": str(exc)}]}
    else:
        response = {"updated_members": [member]}
    return acknowledge_upserts(engine, audience, [upsert], response, report)


def acknowledge_upserts(
    engine: Engine,
    audience: AudienceConfig,
    upserts: list[Upsert],
    response: dict[str, Any],
    report: AudienceReport,
    inline: dict[int, dict[str, str]] | None = None,
    had: dict[int, frozenset[str]] | None = None,
    done: Upserted | None = None,
) -> set[int]:
    """Acknowledge each confirmed member, record each refused one; returns the others.
    Tags sent inline that the member object lists are acknowledged with it (into `done`)."""
    confirmed = {m["email_address"].lower(): m for m in response.get("new_members") or ()}
    confirmed.update({m["email_address"].lower(): m for m in response.get("updated_members") or ()})
    refused = {e.get("email_address", "").lower(): e for e in response.get("errors") or ()}
    rows, absent = [], set()
    stamp = now()
    created = updated = 0
    for u in upserts:
        member = confirmed.get(u.member.email)
        if member is not None:
            row = {"profile_id": u.member.profile_id, "email": u.member.email,
                   "status": member["status"], "merge_hash": u.member.merge_hash,
                   "merge_fields": u.member.merge_fields, "acknowledged_at": stamp,
                   "error": None, "error_hash": None}  # fmt: skip
            if u.tags_before is not None:  # the address's tags, not the previous address's
                row["tags"] = sorted(u.tags_before)
            sent = inline.get(u.member.profile_id) if inline else None
            if sent and done is not None:
                shown = confirmed_tags(member, sent, done.learned)
                if shown is None:
                    done.tags_unseen = True
                elif shown:
                    pid = u.member.profile_id
                    done.tagged[pid] = shown
                    row["tags"] = sorted((had or {}).get(pid, frozenset()) | shown)
            rows.append(row)
            if u.new:
                created += 1
            else:
                updated += 1
        elif u.member.email in refused:
            error = refused[u.member.email]
            message = f"{error.get('error', '')} {error.get('field_message') or ''}".strip()
            rows.append({"profile_id": u.member.profile_id, "error": message,
                         "error_hash": u.member.state_hash})  # fmt: skip
            report.errors.append((u.member.email, message))
            absent.add(u.member.profile_id)
        else:  # neither confirmed nor refused: not acknowledged, tried again next time
            absent.add(u.member.profile_id)
    with engine.begin() as conn:
        write_mailchimp_members(conn, audience.list_id, list(confirmed.values()))
        write_states(conn, audience.name, rows)
    if created:
        report.bump("new members", created)
    if updated:
        report.bump("member updates", updated)
    return absent


def upsert_through_batches(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    batches: list[list[Upsert]],
    report: AudienceReport,
    config: MailchimpConfig,
) -> set[int]:
    """Send batch-subscribe operations in one `/batches` request (at most 1,000), wait for
    Mailchimp to run them, and acknowledge each from the result archive."""
    operations = [
        {"method": "POST", "path": f"/lists/{audience.list_id}", "operation_id": f"upsert-{i}",
         "body": orjson.dumps(upsert_body(batch)).decode()}
        for i, batch in enumerate(batches)
    ]  # fmt: skip
    results = run_batch(client, operations, poll_s=config.batch_poll_s)
    absent: set[int] = set()
    for i, batch in enumerate(batches):
        status, body = results.get(f"upsert-{i}", (0, None))
        if status == 200 and isinstance(body, dict):
            absent |= acknowledge_upserts(engine, audience, batch, body, report)
        else:  # not acknowledged: planned again next cycle
            log.warning("batch operation upsert-%d failed with %s: %s", i, status, body)
            absent |= {u.member.profile_id for u in batch}
    report.bump("batches", 1)
    return absent


def change_email(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    change: EmailChange,
    report: AudienceReport,
) -> set[int]:
    """Rename the member. A 404 after a lost answer is the change already made: the member
    is found under its new address."""
    try:
        member = client.call(
            client.sdk.lists.update_list_member, audience.list_id,
            subscriber_hash(change.old_email), {"email_address": change.new_email},
        )  # fmt: skip
    except ApiError as exc:
        member = (
            find_member(client, audience.list_id, change.new_email) if exc.status == 404 else None
        )
        if member is None:
            report.errors.append((change.old_email, str(exc)))
            return {change.profile_id}
    row = {"profile_id": change.profile_id, "email": change.new_email, "acknowledged_at": now()}
    with engine.begin() as conn:
        write_mailchimp_members(conn, audience.list_id, [member])
        forget_mailchimp_member(conn, audience.list_id, subscriber_hash(change.old_email))
        write_states(conn, audience.name, [row])
    report.bump("email changes")
    return set()


def archive(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    removal: Removal,
    report: AudienceReport,
) -> set[int]:
    """Archive one member. A 404 is an archive already done (a repeat after a lost answer,
    or a member renamed away)."""
    member: dict[str, Any] | None = {"status": "archived"}
    try:
        client.call(
            client.sdk.lists.delete_list_member, audience.list_id, subscriber_hash(removal.email)
        )
    except ApiError as exc:
        if exc.status != 404:
            report.errors.append((removal.email, str(exc)))
            return {removal.profile_id}
        member = find_member(client, audience.list_id, removal.email)  # archived, or none?
    with engine.begin() as conn:
        if not removal.replaced:  # else the profile's state now belongs to its new address
            row = {"profile_id": removal.profile_id, "status": "archived", "acknowledged_at": now()}
            write_states(conn, audience.name, [row])
        hashed = subscriber_hash(removal.email)
        if member is None:  # no member at this address at all (renamed away)
            forget_mailchimp_member(conn, audience.list_id, hashed)
        else:
            set_mailchimp_status(conn, audience.list_id, hashed, member["status"])
    report.bump("archived")
    return set()


def find_member(client: MailchimpClient, list_id: str, email: str) -> dict[str, Any] | None:
    """The member at this address, or None when Mailchimp has none."""
    try:
        return client.call(client.sdk.lists.get_list_member, list_id, subscriber_hash(email))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
