"""An in-memory stream for engine tests: pages of records exactly as a connector yields them."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, select

from syncbridge.config.mapping import Mapping
from syncbridge.config.models import IdentityConfig
from syncbridge.connectors import DELETED, Page, Stream
from syncbridge.identity import ResolveStats, resolve_pending
from syncbridge.ingest import StreamIngest, StreamStats, ingest_stream
from syncbridge.store.tables import Profile, SourceRecord
from syncbridge.transform import RecordTransformer

PERSON_MAPPING = Mapping.model_validate(
    tomllib.loads(
        """
[record]
timestamp = { field = "updated", type = "datetime" }
[identifiers]
email = "email"
phone = "phone"
external = { "crm" = "crm_id", "shop" = "shop_id" }
[attributes]
first_name = "first_name"
city = "city"
"""
    )
)


class ListStream(Stream):
    def __init__(self, name: str, records: list[dict[str, Any]], page_size: int = 100) -> None:
        self.name = name
        self.primary_key = ("id",)
        self.records = records
        self.page_size = page_size

    def read(self, cursor: Any | None) -> Iterator[Page]:
        for start in range(0, len(self.records), self.page_size):
            yield Page([dict(r) for r in self.records[start : start + self.page_size]], None)


def ingest(
    engine: Engine, source: str, stream: str, records: list[dict[str, Any]], page_size: int = 100
) -> StreamStats:
    job = StreamIngest(
        source, ListStream(stream, records, page_size), RecordTransformer(PERSON_MAPPING, "US")
    )
    return ingest_stream(engine, job)


def deleted(source_record: dict[str, Any]) -> dict[str, Any]:
    return {**source_record, DELETED: True}


def resolve(
    engine: Engine, config: IdentityConfig | None = None, batch: int = 20_000
) -> ResolveStats:
    return resolve_pending(engine, config or IdentityConfig(), batch_size=batch)


def partition(engine: Engine) -> dict[frozenset[str], dict[str, Any]]:
    """Live profiles as {record keys: attributes}: what resolution means, without the ids."""
    r, p = SourceRecord.__table__.c, Profile.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.profile_id, r.source, r.stream, r.external_id).where(r.deleted.is_(False))
        ).all()
        attrs = dict(conn.execute(select(p.id, p.attributes).where(p.deleted.is_(False))).all())
    groups: dict[int, set[str]] = {}
    for pid, source, stream, key in rows:
        assert pid is not None, "a live record was left without a profile"
        groups.setdefault(pid, set()).add(f"{source}/{stream}/{key}")
    assert set(groups) == set(attrs), "live profiles and live records disagree"
    return {frozenset(keys): attrs[pid] for pid, keys in groups.items()}


def profile_of(engine: Engine, source: str, stream: str, key: str) -> int | None:
    r = SourceRecord.__table__.c
    with engine.connect() as conn:
        return conn.execute(
            select(r.profile_id).where(r.source == source, r.stream == stream, r.external_id == key)
        ).scalar_one()


def journal_head(engine: Engine) -> int:
    """The newest journal sequence number: later entries are what happened since."""
    from syncbridge.store import journal

    with engine.connect() as conn:
        return journal.head(conn)


def journaled(engine: Engine, kind: str, since: int = 0) -> list[int]:
    """Subjects of journal entries of one kind above `since`, each once, in order."""
    from syncbridge.store import journal

    with engine.connect() as conn:
        found = conn.execute(journal.subjects([kind], since, journal.head(conn))).scalars()
        return list(dict.fromkeys(found))
