"""When the daemon runs a job: an interval (`schedule = "5m"`) or a crontab line (`cron`).

Both are checked while the config is parsed, so a bad one is a config problem with its key
path, never a daemon that starts and then fails. Intervals take seconds (`30s`, or a bare
number) besides the rule language's units (`5m`, `1h`, `1d`: `rules.language.parse_duration`,
the one reading of a duration).
"""

from __future__ import annotations

import re
from datetime import timedelta

_SECONDS = re.compile(r"(\d+(?:\.\d+)?)s?")
CRON_FIELDS = "minute hour day month weekday"


def interval(text: str) -> timedelta:
    """`30s`, `90`, `5m`, `1.5h`, `1d` as a timedelta; ValueError saying what is expected."""
    from ..rules.language import parse_duration

    value = text.strip()
    match = _SECONDS.fullmatch(value)
    try:
        span = timedelta(seconds=float(match.group(1))) if match else parse_duration(value)
    except ValueError:
        raise ValueError(f"{text!r} is not an interval like 30s, 5m, 1h or 1d") from None
    if span < timedelta(seconds=1):
        raise ValueError(f"{text!r} is shorter than one second")
    return span


def check_interval(text: str) -> None:
    interval(text)


def check_crontab(text: str) -> None:
    """A five-field crontab line (UTC); ValueError naming what is wrong in it."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a crontab line ({CRON_FIELDS}): {exc}") from None
