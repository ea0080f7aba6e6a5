"""`segments` and `segments preview` count and show live profiles only."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from syncbridge.config.mapping import Mapping
from syncbridge.config.models import IdentityConfig
from syncbridge.identity import resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import run_rules
from syncbridge.store.tables import Profile
from syncbridge.transform import RecordTransformer
from syncbridge.views import segment_counts, segment_sample, tag_counts

from .streams import ListStream

ORDERS = Mapping.model_validate(tomllib.loads("""
[identifiers]
email = "email"
external = { "shop:customer" = "customer" }
[[events]]
type = "purchase"
time = { field = "at", type = "datetime" }
[events.properties]
amount = { field = "amount", type = "number" }
"""))  # fmt: skip
RULES = RulesConfig.model_validate(
    {
        "traits": [
            {"name": "lifetime_value", "aggregate": "sum", "event": "purchase",
             "property": "amount"},
        ],
        "tags": [{"name": "buyer", "event": "purchase"}],
        "segments": [{"name": "Big", "rule": "lifetime_value > 100"}],
    }
)  # fmt: skip
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order(key: str, email: str, customer: str, amount: float) -> dict[str, Any]:
    return {"id": key, "email": email, "customer": customer, "amount": str(amount),
            "at": "2026-10-30T10:00:00+00:00"}  # fmt: skip


def cycle(engine: Engine, rows: list[dict[str, Any]]) -> None:
    stream = ListStream("orders", rows)
    ingest_stream(engine, StreamIngest("shop", stream, RecordTransformer(ORDERS)))
    resolve_pending(engine, IdentityConfig())
    run_rules(engine, RULES, NOW)


def test_merged_away_profile_is_no_longer_counted_or_shown_in_a_segment(engine: Engine) -> None:
    first = [order("o1", "ann@gmail.com", "c1", 150), order("o2", "ann.lee@yahoo.com", "c2", 200)]
    cycle(engine, first)
    assert segment_counts(engine) == {"Big": 2}
    # An order by c2 with Ann's gmail address: the two profiles are one person.
    cycle(engine, [*first, order("o3", "ann@gmail.com", "c2", 10)])
    with engine.connect() as conn:
        live = (
            conn.execute(
                select(Profile.__table__.c.id).where(Profile.__table__.c.deleted.is_(False))
            )
            .scalars()
            .all()
        )
    assert len(live) == 1
    assert segment_counts(engine) == {"Big": 1}
    assert [m["id"] for m in segment_sample(engine, "Big")] == live
    assert tag_counts(engine) == {"buyer": 1}
