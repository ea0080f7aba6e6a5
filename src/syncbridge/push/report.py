"""What a push did for one audience: planned and applied counts, refusals, read-back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_count_lock = threading.Lock()
"""Guards report counters bumped from the push's worker threads."""


@dataclass
class AudienceReport:
    audience: str
    planned: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(email, Mailchimp's message) for members Mailchimp refused."""
    read_back: int = 0
    created_fields: list[str] = field(default_factory=list)
    created_tags: list[str] = field(default_factory=list)
    segments_changed: list[str] = field(default_factory=list)
    progress: Callable[[str, int], None] | None = field(default=None, repr=False)
    """Told (label, count) as operations are confirmed, for a progress display."""

    def bump(self, key: str, n: int = 1) -> None:
        with _count_lock:
            self.applied[key] = self.applied.get(key, 0) + n
            if self.progress is not None and n:
                self.progress(f"{self.audience}: {key}", n)
