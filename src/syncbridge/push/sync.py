"""One push: read back Mailchimp's changes, plan, apply in batches, acknowledge.

Acknowledged state is written only after Mailchimp confirmed an operation, in the transaction
that follows the call. A crash between a call and its acknowledgement repeats the call next
time (every call here is idempotent) and never skips it. Each audience is a destination with
its own queue (`destinations/queue.py`): a profile leaves it only once everything the
audience's plan needed for it was confirmed. The plan is made and applied in chunks
(`chunks.py`, `apply.py`), so the push keeps every connection busy and its memory bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Select, exists, func, select

from ..config.models import AudienceConfig, MailchimpConfig
from ..destinations import queue
from ..store import journal
from .apply import StreamedPush
from .chunks import CHUNK, Planner, whole_plan
from .client import MailchimpClient
from .guard import MassRemovalError, mass_removal_of
from .plan import Plan
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
    live_member_count,
    read_watermark,
)

log = logging.getLogger(__name__)


def build_plan(
    engine: Engine,
    audience: AudienceConfig,
    profile_ids: Sequence[int],
    declared_tags: Sequence[str] = (),
) -> Plan:
    """The plan for these profiles from local state only (no API call), in one piece."""
    return whole_plan(engine, audience, profile_ids, declared_tags)


def check_provisioning(client: MailchimpClient, plan: Plan) -> None:
    """Fill in which merge fields and tags the push would create (read-only calls)."""
    audience = plan.audience
    existing = existing_merge_fields(client, audience.list_id)
    plan.fields_to_create = [f.tag for f in audience.merge_fields if f.tag not in existing]
    wanted = {t for t, members in plan.tag_adds.items() if members}
    plan.tags_to_create = sorted(wanted - set(static_segments(client, audience.list_id)))


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
    declared_tags: Sequence[str] = (),
) -> PushReport:
    """Each audience as a destination: provision, read back, claim from the journal, plan,
    apply, acknowledge; what was acknowledged leaves the audience's queue.

    `upstream` is the journal kind that says a profile's desired member may have changed:
    the rules' entries when a rules file is configured (they come after evaluation), else
    identity's. Raises MassRemovalError, before applying that audience's plan, when it would
    remove more of the audience than `max_removal_share` (unless `allow_mass_removal`)."""
    result = PushReport()
    for audience in config.audiences:
        destination = MailchimpAudience(audience, config, client, upstream, progress, declared_tags)
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
        declared_tags: Sequence[str] = (),
    ) -> None:
        self.audience, self.config, self.client = audience, config, client
        self.declared_tags = declared_tags
        """The rules' tag names: a data tag differing only in case is sent with theirs."""
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
        planner = Planner(
            engine, audience, lambda: queue.queued_chunks(engine, self.name, CHUNK),
            self.declared_tags,
        )  # fmt: skip
        removals = planner.prepare()
        with engine.connect() as conn:
            if not self.allow_mass_removal:
                members = live_member_count(conn, audience.list_id)
                if (why := mass_removal_of(audience, removals, members)) is not None:
                    raise MassRemovalError(why)
            _, segment_ids = read_watermark(conn, audience.list_id)
            threshold = self.config.batch_threshold
            through_batches = threshold is not None and (
                new_members(conn, self.name, audience) >= threshold
            )
        applying = StreamedPush(client, engine, audience, report, self.config, segment_ids)
        failed = applying.run(planner, through_batches)
        report.planned = dict(applying.planned)
        for found, sent in sorted(planner.rules.respelled.items()):
            log.warning("%s", case_clash_note(audience, found, sent))
        for ids in queue.queued_chunks(engine, self.name, 10 * CHUNK):
            queue.release(engine, self.name, [i for i in ids if i not in failed])
        return failed


def case_clash_note(audience: AudienceConfig, found: str, sent: str) -> str:
    """Why a data tag went out spelt as a rules tag, and how to keep the two apart."""
    return (
        f"audience {audience.name}: tag {found!r} (from {', '.join(audience.tag_attributes)}) "
        f"is the rules' tag {sent!r} in Mailchimp, which ignores case in tag names, so it is "
        f"sent as {sent!r}; to keep them apart, set the audience's attribute_tag_prefix "
        f"(e.g. \"shop:\" sends it as 'shop:{found}') or rename the rules' tag"
    )


def new_members(conn: Any, destination: str, audience: AudienceConfig) -> int:
    """Queued profiles without an acknowledged address in the audience: an initial load's
    size, which decides whether upserts go through `/batches`."""
    q, s = queue.QUEUE.c, STATES.c
    known = exists().where(
        s.audience == audience.name, s.profile_id == q.profile_id, s.email.is_not(None)
    )
    query = select(func.count()).where(q.destination == destination, ~known)
    return int(conn.execute(query).scalar_one())


def everyone_for(audience: AudienceConfig) -> Select[Any]:
    held = select(STATES.c.profile_id).where(STATES.c.audience == audience.name)
    live = select(PROFILES.c.id).where(PROFILES.c.deleted.is_(False))
    return live.union(held)  # type: ignore[return-value]
