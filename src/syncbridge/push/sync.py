"""One push: read back Mailchimp's changes, plan, apply in batches, acknowledge.

Acknowledged state is written only after Mailchimp confirmed an operation, per member, in the
transaction that follows the call. A crash between a call and its acknowledgement repeats the
call next time (every call here is idempotent) and never skips it. Each audience is a
destination with its own queue (`destinations/queue.py`): a profile leaves it only once
everything the audience's plan needed for it was confirmed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, select

from ..config.models import AudienceConfig, MailchimpConfig
from ..destinations import queue
from ..rules.stage import results_for
from ..store import journal
from .batches import MAX_OPERATIONS, run_batch
from .client import ApiError, MailchimpClient
from .desired import AudienceRules, subscriber_hash
from .guard import MassRemovalError, mass_removal
from .parallel import in_parallel
from .plan import EmailChange, Plan, Removal, Upsert, plan_member
from .provision import (
    existing_merge_fields,
    provision_merge_fields,
    provision_segments,
    static_segments,
)
from .readback import read_back
from .report import AudienceReport
from .state import (
    PROFILES,
    STATES,
    acked_states,
    address_holders,
    drop_states,
    forget_mailchimp_member,
    live_member_count,
    mailchimp_statuses,
    now,
    profiles,
    set_mailchimp_status,
    write_mailchimp_members,
    write_states,
)
from .tags import apply_tags

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH = 500
"""Members per batch-subscribe call, and emails per side of a segment call (Mailchimp's limit)."""


def build_plan(engine: Engine, audience: AudienceConfig, profile_ids: list[int]) -> Plan:
    """The plan for these profiles from local state only (no API call)."""
    rules = AudienceRules(audience)
    plan = Plan(audience)
    with engine.connect() as conn:
        found = profiles(conn, profile_ids)
        acked = acked_states(conn, audience.name, profile_ids)
        computed = results_for(conn, profile_ids)
        desired = {}
        for pid, (attributes, deleted) in found.items():
            result = computed.get(pid) or {}
            values = {**attributes, **(result.get("traits") or {}), **(result.get("content") or {})}
            segments = frozenset(result.get("segments") or ())
            tags = frozenset(result.get("tags") or ()) | segments
            outside = audience.segment is not None and audience.segment not in segments
            desired[pid] = None if deleted or outside else rules.desire(pid, values, tags)
        hashes = [d.hash for d in desired.values() if d is not None]
        hashes += [subscriber_hash(a.email) for a in acked.values() if a.email]
        statuses = mailchimp_statuses(conn, audience.list_id, hashes)
        # A profile merged into another leaves its address to the survivor: not archived.
        leaving = {pid: a.email for pid, a in acked.items() if a.email and desired.get(pid) is None}
        holders = address_holders(conn, audience.name, set(leaving.values()))
    wanted = {d.email for d in desired.values() if d is not None}
    taken = frozenset(
        email for pid, email in leaving.items()
        if email in wanted or holders.get(email, set()) - set(leaving)
    )  # fmt: skip
    left_behind = {email: acked[pid] for pid, email in leaving.items() if email in taken}
    for pid in profile_ids:
        plan_member(plan, pid, desired.get(pid), acked.get(pid), statuses, taken, left_behind)
    return plan


def check_provisioning(client: MailchimpClient, plan: Plan) -> None:
    """Fill in which merge fields and tags the push would create (read-only calls)."""
    audience = plan.audience
    existing = existing_merge_fields(client, audience.list_id)
    plan.fields_to_create = [f.tag for f in audience.merge_fields if f.tag not in existing]
    wanted = {t for t, members in plan.tag_adds.items() if members}
    plan.tags_to_create = sorted(wanted - set(static_segments(client, audience.list_id)))


def apply_plan(
    client: MailchimpClient,
    engine: Engine,
    plan: Plan,
    report: AudienceReport,
    config: MailchimpConfig | None = None,
) -> set[int]:
    """Run the plan's calls; returns profiles whose operations did not all succeed."""
    audience = plan.audience
    failed: set[int] = set()
    for change in plan.email_changes:
        _change_email(client, engine, audience, change.profile_id, change, report, failed)
    # The old address of a profile that moved to a taken one goes first: once the new
    # address is acknowledged, nothing would remember the old one after a crash.
    replaced = [r for r in plan.archives if r.replaced]
    failed |= _archive_all(client, engine, audience, replaced, report)
    upserts = [u for u in plan.upserts if u.send_status and u.member.profile_id not in failed]
    patches = [u for u in plan.upserts if not u.send_status and u.member.profile_id not in failed]
    batches = [upserts[i : i + BATCH] for i in range(0, len(upserts), BATCH)]
    absent: set[int] = set()
    config = config or MailchimpConfig()
    if len(upserts) >= config.batch_threshold:
        absent = _upsert_through_batches(client, engine, audience, batches, report, config)
    else:
        for missing in in_parallel(
            client, lambda batch: _upsert_batch(client, engine, audience, batch, report), batches
        ):
            absent |= missing
    for missing in in_parallel(
        client, lambda upsert: _patch_member(client, engine, audience, upsert, report), patches
    ):
        absent |= missing
    failed |= absent
    apply_tags(client, engine, plan, report, skip=failed)
    leaving = [r for r in plan.archives if not r.replaced]
    failed |= _archive_all(client, engine, audience, leaving, report)
    if plan.released:
        with engine.begin() as conn:
            drop_states(conn, audience.name, plan.released)
    return failed


def _archive_all(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    removals: list[Removal],
    report: AudienceReport,
) -> set[int]:
    """Archive these members side by side; returns the profiles whose archive failed. A 404
    is an archive already done (a repeat after a lost answer, or a member renamed away)."""

    def archive(removal: Removal) -> int | None:
        member: dict[str, Any] | None = {"status": "archived"}
        try:
            client.call(
                client.sdk.lists.delete_list_member, audience.list_id,
                subscriber_hash(removal.email),
            )  # fmt: skip
        except ApiError as exc:
            if exc.status != 404:
                report.errors.append((removal.email, str(exc)))
                return removal.profile_id
            member = find_member(client, audience.list_id, removal.email)  # archived, or none?
        with engine.begin() as conn:
            if not removal.replaced:  # else the profile's state now belongs to its new address
                row = {"profile_id": removal.profile_id, "status": "archived",
                       "acknowledged_at": now()}  # fmt: skip
                write_states(conn, audience.name, [row])
            hashed = subscriber_hash(removal.email)
            if member is None:  # no member at this address at all (renamed away)
                forget_mailchimp_member(conn, audience.list_id, hashed)
            else:
                set_mailchimp_status(conn, audience.list_id, hashed, member["status"])
        report.bump("archived")
        return None

    return {pid for pid in in_parallel(client, archive, removals) if pid is not None}


def _change_email(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    profile_id: int,
    change: EmailChange,
    report: AudienceReport,
    failed: set[int],
) -> None:
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
            failed.add(profile_id)
            return
    with engine.begin() as conn:
        write_mailchimp_members(conn, audience.list_id, [member])
        forget_mailchimp_member(conn, audience.list_id, subscriber_hash(change.old_email))
        write_states(
            conn,
            audience.name,
            [{"profile_id": profile_id, "email": change.new_email, "acknowledged_at": now()}],
        )
    report.bump("email changes")


def _upsert_batch(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    upserts: list[Upsert],
    report: AudienceReport,
) -> set[int]:
    """One batch-subscribe call; acknowledge each confirmed member, record each refused one."""
    body = _upsert_body(upserts)
    response = client.call(client.sdk.lists.batch_list_members, audience.list_id, body)
    return _acknowledge_upserts(engine, audience, upserts, response, report)


def _patch_member(
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
    return _acknowledge_upserts(engine, audience, [upsert], response, report)


def find_member(client: MailchimpClient, list_id: str, email: str) -> dict[str, Any] | None:
    """The member at this address, or None when Mailchimp has none."""
    try:
        return client.call(client.sdk.lists.get_list_member, list_id, subscriber_hash(email))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _upsert_body(upserts: list[Upsert]) -> dict[str, Any]:
    return {
        "members": [
            {"email_address": u.member.email, "status": u.status, "merge_fields": u.merge_fields}
            for u in upserts
        ],
        "update_existing": True,
    }


def _upsert_through_batches(
    client: MailchimpClient,
    engine: Engine,
    audience: AudienceConfig,
    batches: list[list[Upsert]],
    report: AudienceReport,
    config: MailchimpConfig,
) -> set[int]:
    """Send batch-subscribe operations through /batches, 1,000 operations per request."""
    absent: set[int] = set()
    for start in range(0, len(batches), MAX_OPERATIONS):
        group = batches[start : start + MAX_OPERATIONS]
        operations = [
            {"method": "POST", "path": f"/lists/{audience.list_id}",
             "operation_id": f"upsert-{start + i}", "body": json.dumps(_upsert_body(batch))}
            for i, batch in enumerate(group)
        ]  # fmt: skip
        results = run_batch(client, operations, poll_s=config.batch_poll_s)
        for i, batch in enumerate(group):
            status, body = results.get(f"upsert-{start + i}", (0, None))
            if status == 200 and isinstance(body, dict):
                absent |= _acknowledge_upserts(engine, audience, batch, body, report)
            else:  # not acknowledged: planned again next cycle
                log.warning("batch operation upsert-%d failed with %s: %s", start + i, status, body)
                absent |= {u.member.profile_id for u in batch}
        report.bump("batches", 1)
    return absent


def _acknowledge_upserts(
    engine: Engine,
    audience: AudienceConfig,
    upserts: list[Upsert],
    response: dict[str, Any],
    report: AudienceReport,
) -> set[int]:
    """Acknowledge each confirmed member, record each refused one; returns the others."""
    confirmed = {m["email_address"].lower(): m for m in response.get("new_members", [])}
    confirmed.update({m["email_address"].lower(): m for m in response.get("updated_members", [])})
    refused = {e.get("email_address", "").lower(): e for e in response.get("errors", [])}
    rows, absent = [], set()
    stamp = now()
    for u in upserts:
        member = confirmed.get(u.member.email)
        if member is not None:
            row = {"profile_id": u.member.profile_id, "email": u.member.email,
                   "status": member["status"], "merge_hash": u.member.merge_hash,
                   "merge_fields": u.member.merge_fields, "acknowledged_at": stamp,
                   "error": None, "error_hash": None}  # fmt: skip
            if u.tags_before is not None:  # the address's tags, not the previous address's
                row["tags"] = sorted(u.tags_before)
            rows.append(row)
            report.bump("new members" if u.new else "member updates")
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
    return absent


@dataclass
class PushReport:
    audiences: list[AudienceReport] = field(default_factory=list)


def push(
    engine: Engine,
    config: MailchimpConfig,
    client: MailchimpClient,
    progress: Callable[[str, int], None] | None = None,
    allow_mass_removal: bool = False,
    upstream: str = journal.PROFILE,
) -> PushReport:
    """Each audience as a destination: provision, read back, claim from the journal, plan,
    apply, acknowledge; what was acknowledged leaves the audience's queue.

    `upstream` is the journal kind that says a profile's desired member may have changed:
    the rules' entries when a rules file is configured (they come after evaluation), else
    identity's. Raises MassRemovalError, before applying that audience's plan, when it would
    remove more of the audience than `max_removal_share` (unless `allow_mass_removal`)."""
    result = PushReport()
    for audience in config.audiences:
        destination = MailchimpAudience(audience, config, client, upstream, progress)
        destination.allow_mass_removal = allow_mass_removal
        destination.sync(engine)
        result.audiences.append(destination.report)
    return result


def destination_name(audience: AudienceConfig) -> str:
    return f"mailchimp:{audience.name}"


class MailchimpAudience:
    """One Mailchimp audience as a destination (see `syncbridge.destinations`)."""

    def __init__(
        self,
        audience: AudienceConfig,
        config: MailchimpConfig,
        client: MailchimpClient,
        upstream: str = journal.PROFILE,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.audience, self.config, self.client = audience, config, client
        self.name = destination_name(audience)
        self.kinds = [upstream, journal.MEMBER]
        self.report = AudienceReport(audience.name, progress=progress)
        self.allow_mass_removal = False

    def everyone(self) -> Select[Any]:
        """A first pass takes every live profile, and every profile the audience holds."""
        return everyone_for(self.audience)

    def sync(self, engine: Engine) -> set[int]:
        audience, client, report = self.audience, self.client, self.report
        report.created_fields = provision_merge_fields(client, audience)
        report.segments_changed = provision_segments(client, audience)
        report.read_back = read_back(client, engine, audience)
        queue.claim(engine, self.name, self.kinds, self.everyone())
        with engine.connect() as conn:
            ids = queue.queued(conn, self.name)
        plan = build_plan(engine, audience, ids)
        report.planned = plan.counts()
        if not self.allow_mass_removal:
            with engine.connect() as conn:
                members = live_member_count(conn, audience.list_id)
            if (why := mass_removal(plan, members)) is not None:
                raise MassRemovalError(why)
        failed = apply_plan(client, engine, plan, report, self.config)
        queue.release(engine, self.name, [i for i in ids if i not in failed])
        return failed


def everyone_for(audience: AudienceConfig) -> Select[Any]:
    held = select(STATES.c.profile_id).where(STATES.c.audience == audience.name)
    live = select(PROFILES.c.id).where(PROFILES.c.deleted.is_(False))
    return live.union(held)  # type: ignore[return-value]
