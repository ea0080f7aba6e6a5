"""Events pushed to the daemon (`connector = "intake"`): nothing to pull, a stream to store into.

The daemon's event intake (`syncbridge.intake`, Segment's HTTP tracking API) writes each
accepted message as a record of this source's stream, keyed by `messageId`, through the
stream's mapping (`mappings/events.toml` by default) — so identity resolution, the rules, a
mapping edit (re-map) and `syncbridge status` treat events like any other source's records.
A pull of it reads nothing: the daemon schedules none.

    [[sources]]
    name = "web"
    connector = "intake"
    streams = [{ name = "events", mapping = "mappings/events.toml" }]

    [intake]
    write_keys = ["..."]     # or SYNCBRIDGE_INTAKE__WRITE_KEYS='["..."]'
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from syncbridge.connectors import Connector, Page, Stream

PRIMARY_KEY = ("messageId",)


class IntakeStream(Stream):
    """The stream events are written into; reading it yields nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.primary_key = PRIMARY_KEY

    def read(self, cursor: Any | None) -> Iterator[Page]:
        return iter(())


class IntakeConnector(Connector):
    pulled: ClassVar[bool] = False
    """Records arrive by HTTP; the daemon schedules no pull of this source."""

    def streams(self) -> list[Stream]:
        return [IntakeStream(s.name) for s in self.stream_configs]
