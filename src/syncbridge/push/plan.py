"""The diff between what profiles should be in an audience and what Mailchimp acknowledged.

Consent rules live here. An existing member keeps the status Mailchimp holds (it is never
re-subscribed, never downgraded); only an explicit source opt-out sends `unsubscribed`, and a
transactional contact becomes subscribed only with recorded consent. A new member is subscribed
only with recorded consent; without it the audience's `without_consent` decides (skip, or add as
transactional). Archived members are left alone unless `recreate_archived` is set.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..config.models import AudienceConfig
from .desired import DesiredMember


@dataclass(frozen=True)
class Acked:
    """The acknowledged state of one profile's member (a `member_state` row)."""

    email: str | None
    status: str | None
    merge_hash: str | None
    merge_fields: dict[str, Any]
    tags: frozenset[str]
    error_hash: str | None


@dataclass
class Upsert:
    member: DesiredMember
    status: str
    merge_fields: dict[str, Any]
    """Only the fields that changed (all of them for a new member)."""
    new: bool
    send_status: bool = True
    """False for a pending member whose status stays pending: writing `pending` again makes
    Mailchimp re-send the opt-in email, so the update goes without a status (a PATCH)."""
    tags_before: frozenset[str] | None = None
    """When the profile takes over an address (a new member, or one another profile held),
    the tags that address is known to have; written with the acknowledgement."""


@dataclass
class EmailChange:
    profile_id: int
    old_email: str
    new_email: str


@dataclass
class Removal:
    profile_id: int
    email: str
    tags: frozenset[str]
    replaced: bool = False
    """The profile moved to another address that already had a member: only the old one goes."""


@dataclass
class Plan:
    audience: AudienceConfig
    upserts: list[Upsert] = field(default_factory=list)
    email_changes: list[EmailChange] = field(default_factory=list)
    tag_adds: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    tag_removes: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    archives: list[Removal] = field(default_factory=list)
    untags: list[Removal] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unchanged: int = 0
    fields_to_create: list[str] | None = None
    tags_to_create: list[str] | None = None
    """Known only when the plan was checked against Mailchimp (None: not checked)."""
    skipped_members: list[tuple[str, str]] = field(default_factory=list)
    """(email, reason) of each member left out: the details behind `skipped`."""
    respelled: dict[str, str] = field(default_factory=dict)
    """Data tags that differ from a declared tag only in case: {as found: as sent}."""
    done: list[int] = field(default_factory=list)
    """Profiles that need no call (already in the desired state, or deliberately skipped)."""
    released: list[int] = field(default_factory=list)
    """Deleted or merged-away profiles whose address another profile now holds: their
    acknowledged state is dropped once the plan is applied, the member is left in place."""
    tags_had: dict[int, frozenset[str]] = field(default_factory=dict)
    """For each profile with tag additions or removals, the tags its address is known to
    have before them: its acknowledged tag set is this, plus what was confirmed added, less
    what was confirmed removed."""

    def extend(self, other: Plan) -> None:
        """Add another part of the same audience's plan (planned in chunks) to this one."""
        self.upserts += other.upserts
        self.email_changes += other.email_changes
        for tag, members in other.tag_adds.items():
            self.tag_adds[tag] += members
        for tag, members in other.tag_removes.items():
            self.tag_removes[tag] += members
        self.archives += other.archives
        self.untags += other.untags
        for reason, n in other.skipped.items():
            self.skipped[reason] += n
        self.skipped_members += other.skipped_members
        self.unchanged += other.unchanged
        self.done += other.done
        self.released += other.released
        self.tags_had.update(other.tags_had)

    def skip(self, email: str, reason: str) -> None:
        """Leave a member out, for a reason the plan shows (counted, and listed by --json)."""
        self.skipped[reason] += 1
        self.skipped_members.append((email, reason))

    def counts(self) -> dict[str, int]:
        return {
            "new members": sum(1 for u in self.upserts if u.new),
            "member updates": sum(1 for u in self.upserts if not u.new),
            "email changes": len(self.email_changes),
            "tag additions": sum(len(v) for v in self.tag_adds.values()),
            "tag removals": sum(len(v) for v in self.tag_removes.values()),
            "archives": len(self.archives),
            "untags": len(self.untags),
            "unchanged": self.unchanged,
            **{f"skipped: {reason}": n for reason, n in sorted(self.skipped.items())},
            **({"merge fields to create": len(self.fields_to_create)}
               if self.fields_to_create is not None else {}),
            **({"tags to create": len(self.tags_to_create)}
               if self.tags_to_create is not None else {}),
        }  # fmt: skip

    def removals(self) -> dict[str, int]:
        """Members this plan takes out of the audience (archives, untags), and the removals
        of each tag: what the mass-removal guard weighs."""
        out = {"members": sum(1 for r in self.archives if not r.replaced) + len(self.untags)}
        out.update({f"tag {t}": len(m) for t, m in sorted(self.tag_removes.items()) if m})
        return out

    @property
    def empty(self) -> bool:
        return not (
            self.upserts or self.email_changes or self.archives or self.untags
            or any(self.tag_adds.values()) or any(self.tag_removes.values())
        )  # fmt: skip


def status_for(
    desired: DesiredMember, mailchimp_status: str | None, audience: AudienceConfig
) -> str | None:
    """The status to send, or None to leave the person out."""
    if mailchimp_status is None:  # a new member
        if desired.consent is True:
            return "subscribed"
        if desired.consent is False:
            return None
        return "transactional" if audience.without_consent == "transactional" else None
    if desired.consent is False and mailchimp_status in ("subscribed", "transactional"):
        return "unsubscribed"  # an explicit opt-out at a source
    if mailchimp_status == "transactional" and desired.consent is True:
        return "subscribed"
    return mailchimp_status


def plan_member(
    plan: Plan,
    profile_id: int,
    desired: DesiredMember | None,
    acked: Acked | None,
    statuses: dict[str, str],
    taken: frozenset[str] = frozenset(),
    left_behind: dict[str, Acked] | None = None,
) -> None:
    """Add what one profile needs to the plan. `statuses` maps subscriber hashes to Mailchimp's
    current status for every address involved. `taken`: addresses another profile wants or
    holds (a leaving profile's member is not archived from under it); `left_behind`: the
    acknowledged state of leaving profiles by address, for the profile that takes it over."""
    audience = plan.audience
    live = acked is not None and acked.email and acked.status not in (None, "archived")
    if desired is None:
        if acked is not None and acked.email and acked.email in taken:
            plan.released.append(profile_id)  # merged away: the survivor took the address
            plan.done.append(profile_id)
        elif live and acked is not None and acked.email and audience.removal == "archive":
            plan.archives.append(Removal(profile_id, acked.email, acked.tags))
            if acked.tags:
                plan.tags_had[profile_id] = acked.tags
            for tag in acked.tags:
                plan.tag_removes[tag].append((profile_id, acked.email))
        elif live and acked is not None and acked.email and audience.removal == "untag":
            if acked.tags:  # once taken, the member stays as it is: nothing left to remove
                plan.untags.append(Removal(profile_id, acked.email, acked.tags))
                plan.tags_had[profile_id] = acked.tags
                for tag in acked.tags:
                    plan.tag_removes[tag].append((profile_id, acked.email))
            else:
                plan.done.append(profile_id)
        else:
            plan.done.append(profile_id)
        return
    if acked is not None and acked.error_hash == desired.state_hash:
        plan.skip(desired.email, "refused before, unchanged since")
        plan.done.append(profile_id)
        return
    current = statuses.get(desired.hash)
    if live and acked is not None and acked.email and acked.email != desired.email:
        if current is None:  # the new address is free: change the member in place
            plan.email_changes.append(EmailChange(profile_id, acked.email, desired.email))
            current = acked.status
        elif audience.removal == "archive":  # taken: the old member leaves, the new one is used
            plan.archives.append(Removal(profile_id, acked.email, acked.tags, replaced=True))
    if current == "archived" and not audience.recreate_archived:
        plan.skip(desired.email, "archived in Mailchimp")
        plan.done.append(profile_id)
        return
    status = status_for(desired, None if current == "archived" else current, audience)
    if status is None:
        reason = "no consent recorded" if desired.consent is None else "opted out"
        plan.skip(desired.email, reason)
        plan.done.append(profile_id)
        return
    same_member = acked is not None and acked.email == desired.email and current is not None
    inherited = (left_behind or {}).get(desired.email) if current is not None else None
    if same_member and acked is not None:
        before, had = acked.merge_fields, acked.tags
    elif inherited is not None:  # the address a merged-away profile held: its known state
        before, had = inherited.merge_fields, inherited.tags
    else:
        before, had = {}, frozenset()
    changed = {k: v for k, v in desired.merge_fields.items() if before.get(k) != v}
    changed.update({k: "" for k in before if k not in desired.merge_fields})  # cleared values
    if same_member and acked is not None and not changed and acked.status == status:
        plan.unchanged += 1
    else:
        resend = current == "pending" and status == "pending"
        plan.upserts.append(
            Upsert(desired, status, changed, current is None, send_status=not resend,
                   tags_before=None if same_member else had)
        )  # fmt: skip
    retagged = desired.tags ^ had
    if retagged:
        plan.tags_had[profile_id] = had
        for tag in sorted(desired.tags - had):
            plan.tag_adds[tag].append((profile_id, desired.email))
        for tag in sorted(had - desired.tags):
            plan.tag_removes[tag].append((profile_id, desired.email))
    needs_call = (plan.upserts and plan.upserts[-1].member.profile_id == profile_id) or retagged
    if not needs_call:
        plan.done.append(profile_id)


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The whole plan as plain data (for `syncbridge plan --json`)."""
    return {
        "audience": plan.audience.name,
        "list_id": plan.audience.list_id,
        "counts": plan.counts(),
        "upserts": [
            {
                "email": u.member.email,
                "status": u.status,
                "new": u.new,
                "merge_fields": u.merge_fields,
            }
            for u in plan.upserts
        ],
        "email_changes": [{"from": c.old_email, "to": c.new_email} for c in plan.email_changes],
        "tag_additions": {t: [e for _, e in m] for t, m in sorted(plan.tag_adds.items()) if m},
        "tag_removals": {t: [e for _, e in m] for t, m in sorted(plan.tag_removes.items()) if m},
        "archives": [r.email for r in plan.archives],
        "untags": [r.email for r in plan.untags],
        "merge_fields_to_create": plan.fields_to_create,
        "tags_to_create": plan.tags_to_create,
        "skipped": [{"email": email, "reason": why} for email, why in plan.skipped_members],
    }
