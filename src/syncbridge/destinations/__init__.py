"""Destinations: where profiles go (a Mailchimp audience today; its e-commerce API later).

A destination is a journal consumer with its own offset, its own work set (the
`destination_queue` rows it claimed) and its own acknowledged state. It plans what the remote
system should hold for the profiles in its queue, applies that, and acknowledges what was
confirmed; profiles whose calls did not all succeed stay queued for its next pass.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine


class Destination(Protocol):
    """What the pipeline needs of a destination."""

    name: str
    """Its consumer name in the journal, e.g. "mailchimp:customers"."""

    def sync(self, engine: Engine) -> set[int]:
        """Claim, plan, apply, acknowledge; returns the profiles still owed (kept queued)."""
        ...


__all__ = ["Destination"]
