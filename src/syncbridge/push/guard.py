"""The mass-removal guard: a push that would take a large share of an audience out at once
stops before it applies anything.

An emptied export (a snapshot stream that lost its rows), a typo in a segment rule or a broken
mapping all look, to the push, like many people leaving at once; in Mailchimp that is many
archives or untags that a marketer has to undo by hand. So removals above `max_removal_share`
of the audience's members (archives and untags, or one tag taken from many) need
`--allow-mass-removal`. A handful of removals (fewer than `FLOOR`) never trips it, so small
audiences and test lists are not blocked by one deletion.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config.models import AudienceConfig
from ..errors import FatalError
from .plan import Plan

FLOOR = 10
"""Removals below this count never trip the guard, whatever the share."""


class MassRemovalError(FatalError):
    """The push would remove more of an audience than its `max_removal_share` allows."""


def mass_removal(plan: Plan, members: int) -> str | None:
    """Why this plan is a mass removal for an audience of `members` live members, or None."""
    return mass_removal_of(plan.audience, plan.removals(), members)


def mass_removal_of(
    audience: AudienceConfig, removals: Mapping[str, int], members: int
) -> str | None:
    """The same for removals counted over a plan made in chunks (`Plan.removals`' keys)."""
    share = audience.max_removal_share
    limit = max(share * members, FLOOR - 1)
    over = [(what, n) for what, n in sorted(removals.items()) if n > limit]
    if not over:
        return None
    parts = [
        f"{n} of {members} members ({n / max(members, 1):.0%})"
        + (" leave the audience" if what == "members" else f" lose {what}")
        for what, n in over
    ]
    return (
        f"audience {audience.name!r} ({audience.list_id}): this push would remove "
        f"more than max_removal_share ({share:.0%}): {'; '.join(parts)}. Nothing was sent to "
        "this audience. An emptied export or a typo in a rule looks like this: check the "
        "sources and rules, or run again with --allow-mass-removal if it is intended."
    )
