"""Tag additions sent inside the batch-subscribe call that upserts the member.

Mailchimp's batch-subscribe (`POST /lists/{id}`) accepts a `tags` list per member and, without
`sync_tags`, only adds those tags: it cannot take off a tag the marketer set by hand. A first
push then needs no segment call at all for the tags a member gains (about two thirds of a first
push's calls). Removals always go through segment calls.

Only what Mailchimp confirms counts: a tag is acknowledged when the member object in the answer
lists it (a member object shows 50 tags at most; a tag not shown goes through a segment call,
which finds it "already a member" and holds). If an answer lists no tags at all, or the call
is refused with a 400 while it carried tags (a server that does not know the field), the push
stops sending them and the segment calls do the work, as they did before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .plan import Plan, Upsert

log = logging.getLogger(__name__)


class InlineTags:
    """Whether tags still go inside batch upserts in this push, and the plan's bookkeeping."""

    def __init__(self, enabled: bool, spelling: Callable[[str], str]) -> None:
        """`spelling(tag)`: the name Mailchimp knows the tag by (Mailchimp matches tag names
        without regard to case; a new `vip` must not be made beside `VIP`)."""
        self.enabled, self.spelling = enabled, spelling
        self._lock = threading.Lock()

    def wanted(self, plan: Plan, upserts: Iterable[Upsert]) -> dict[int, dict[str, str]]:
        """The tags each of these members gains in this plan, to send with its upsert:
        {profile: {tag: the name to send}}."""
        if not self.enabled:
            return {}
        ids = {u.member.profile_id for u in upserts}
        out: dict[int, dict[str, str]] = {}
        for tag, members in plan.tag_adds.items():
            sent = None
            for pid, _ in members:
                if pid in ids:
                    sent = sent or self.spelling(tag)
                    out.setdefault(pid, {})[tag] = sent
        return out

    def stop(self, why: str) -> None:
        with self._lock:
            if self.enabled:
                self.enabled = False
                log.warning("tags no longer sent inside batch upserts: %s", why)

    def settle(self, plan: Plan, tagged: dict[int, set[str]]) -> int:
        """Take the confirmed additions out of the plan's tag operations (the segment calls
        left to make) and into the tags the members are known to have; returns how many."""
        if not tagged:
            return 0
        confirmed = 0
        for tag in list(plan.tag_adds):
            members = plan.tag_adds[tag]
            kept = [m for m in members if tag not in tagged.get(m[0], ())]
            confirmed += len(members) - len(kept)
            plan.tag_adds[tag] = kept
        for pid, tags in tagged.items():
            plan.tags_had[pid] = plan.tags_had.get(pid, frozenset()) | tags
        return confirmed


def confirmed_tags(
    member: dict[str, Any], sent: Iterable[str], learned: dict[str, str] | None = None
) -> set[str] | None:
    """The sent tags that the member object Mailchimp answered with lists (whatever their
    case); None when the object carries no tag list at all (nothing confirms them). Into
    `learned`: each confirmed tag's name as Mailchimp lists it (a tag the call created is
    spelled right from then on without a look-up)."""
    shown = member.get("tags")
    if not isinstance(shown, list):
        return None
    listed = {str(t["name"]).casefold(): str(t["name"])
              for t in shown if isinstance(t, dict) and t.get("name")}  # fmt: skip
    found = {t for t in sent if t.casefold() in listed}
    if learned is not None:
        learned.update({t: listed[t.casefold()] for t in found})
    return found
