"""Read back what changed in Mailchimp since the last read: statuses, unsubscribes, archives.

Each page of members is recorded, and the profiles whose member's status changed are journalled
(kind `member`) in the same transaction, so a crash part-way repeats pages and loses none. The
watermark moves only once every page was read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from ..config.models import AudienceConfig
from ..remote import offset_pages
from ..store import journal
from .client import MailchimpClient
from .state import (
    now,
    profiles_at,
    read_watermark,
    status_changed,
    write_mailchimp_members,
    write_sync,
)

READ_PAGE = 1000
READ_OVERLAP = timedelta(seconds=2)


def read_back(client: MailchimpClient, engine: Engine, audience: AudienceConfig) -> int:
    """Fetch members changed in Mailchimp since the last read (all of them the first time)."""
    with engine.connect() as conn:
        since, segments = read_watermark(conn, audience.list_id)
    started = now()
    seen = 0
    # archived members are listed only when asked for by status
    for status in (None, "archived"):
        kwargs: dict[str, Any] = {}
        if status is not None:
            kwargs["status"] = status
        if since is not None:
            kwargs["since_last_changed"] = (since - READ_OVERLAP).isoformat()

        def fetch(count: int, offset: int, kwargs: dict[str, Any] = kwargs) -> dict[str, Any]:
            members_info = client.sdk.lists.get_list_members_info
            return client.call(members_info, audience.list_id, count=count, offset=offset, **kwargs)

        for members in offset_pages(fetch, READ_PAGE, "members"):
            with engine.begin() as conn:
                moved = status_changed(conn, audience.list_id, members)
                write_mailchimp_members(conn, audience.list_id, members)
                holders = profiles_at(conn, audience.name, moved)
                journal.append(conn, journal.MEMBER, holders)
            seen += len(members)
    with engine.begin() as conn:
        write_sync(conn, audience.list_id, started, segments)
    return seen
