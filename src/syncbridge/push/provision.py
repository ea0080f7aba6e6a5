"""Makes an audience ready: its merge fields and the static segments used as tags.

Re-running changes nothing. A mapping that conflicts with an existing field of another type,
or that would pass the audience's merge-field limit, is refused with a clear message.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config.models import AudienceConfig
from ..errors import FatalError
from ..remote import offset_items
from .client import ApiError, MailchimpClient

log = logging.getLogger(__name__)
PAGE = 1000


def existing_merge_fields(client: MailchimpClient, list_id: str) -> dict[str, dict[str, Any]]:
    def fetch(count: int, offset: int) -> dict[str, Any]:
        lists = client.sdk.lists
        return client.call(lists.get_list_merge_fields, list_id, count=count, offset=offset)

    return {item["tag"]: item for item in offset_items(fetch, PAGE, "merge_fields")}


def provision_merge_fields(client: MailchimpClient, audience: AudienceConfig) -> list[str]:
    """Create the merge fields the audience mapping needs; refuse type conflicts."""
    existing = existing_merge_fields(client, audience.list_id)
    conflicts = [
        f"{f.tag} is a {existing[f.tag]['type']} field in Mailchimp, the mapping says {f.type}"
        for f in audience.merge_fields
        if f.tag in existing and existing[f.tag]["type"] != f.type
    ]
    if conflicts:
        raise FatalError(
            f"audience {audience.name!r} ({audience.list_id}): merge field type conflicts: "
            + "; ".join(conflicts)
            + ". Rename the tag in the mapping or change the field in Mailchimp."
        )
    missing = [f.tag for f in audience.merge_fields if f.tag not in existing]
    if len(existing) + len(missing) > audience.merge_field_limit:
        raise FatalError(
            f"audience {audience.name!r} ({audience.list_id}) has {len(existing)} merge fields; "
            f"adding {', '.join(missing)} would pass its limit of {audience.merge_field_limit}. "
            "Remove fields in Mailchimp or from the mapping (or raise merge_field_limit on a "
            "Premium plan)."
        )
    created: list[str] = []
    for spec in audience.merge_fields:
        if spec.tag in existing:
            continue
        body: dict[str, Any] = {"tag": spec.tag, "name": spec.name, "type": spec.type}
        if spec.choices:
            body["options"] = {"choices": spec.choices}
        try:
            client.call(client.sdk.lists.add_list_merge_field, audience.list_id, body)
        except ApiError as exc:
            # "A Merge Field with the tag ... already exists": an earlier attempt whose answer
            # was lost (a timeout, a crash) created it. Look before calling it a failure.
            now_there = existing_merge_fields(client, audience.list_id).get(spec.tag)
            if now_there is None or now_there["type"] != spec.type:
                raise FatalError(
                    f"audience {audience.name!r}: cannot create merge field {spec.tag} "
                    f"({len(existing) + len(created)} fields exist): {exc}"
                ) from None
            log.info("merge field %s was already created (a lost answer)", spec.tag)
        created.append(spec.tag)
        log.info("created merge field %s in audience %s", spec.tag, audience.list_id)
    return created


def list_segments(client: MailchimpClient, list_id: str, kind: str) -> list[dict[str, Any]]:
    """Every segment of one type ("static": tags, or "saved"), all pages."""

    def fetch(count: int, offset: int) -> dict[str, Any]:
        lists = client.sdk.lists
        return client.call(lists.list_segments, list_id, type=kind, count=count, offset=offset)

    return list(offset_items(fetch, PAGE, "segments"))


def static_segments(client: MailchimpClient, list_id: str) -> dict[str, int]:
    return {s["name"]: int(s["id"]) for s in list_segments(client, list_id, "static")}


def folded_match(segments: dict[str, int], name: str) -> tuple[str, int] | None:
    """(the name as Mailchimp has it, its id) of the segment named `name`: Mailchimp matches
    segment and tag names without regard to case (`vip` is `VIP`)."""
    if name in segments:
        return name, segments[name]
    folded = name.casefold()
    return next(((n, i) for n, i in segments.items() if n.casefold() == folded), None)


def provision_segments(client: MailchimpClient, audience: AudienceConfig) -> list[str]:
    """Create or update the saved segments the config declares; returns names changed.

    Names are matched without regard to case, as Mailchimp does. A create refused because the
    name exists (an earlier attempt whose answer was lost) is looked up and updated instead."""
    if not audience.segments:
        return []

    def saved() -> dict[str, dict[str, Any]]:
        found = list_segments(client, audience.list_id, "saved")
        return {s["name"].casefold(): s for s in found}

    existing = saved()
    changed = []
    for segment in audience.segments:
        options = {"match": segment.match, "conditions": segment.conditions}
        current = existing.get(segment.name.casefold())
        if current is None:
            body = {"name": segment.name, "options": options}
            try:
                client.call(client.sdk.lists.create_segment, audience.list_id, body)
                changed.append(segment.name)
                continue
            except ApiError as exc:
                current = saved().get(segment.name.casefold())
                if current is None:
                    raise FatalError(
                        f"audience {audience.name!r}: cannot create segment {segment.name!r}: {exc}"
                    ) from None
        if current.get("options") != options:
            client.call(
                client.sdk.lists.update_segment, audience.list_id, current["id"],
                {"name": segment.name, "options": options},
            )  # fmt: skip
            changed.append(segment.name)
    return changed
