"""Rules benchmark: change-data evaluation at 100 k and 1 M cached profiles, and a full pass.

    python bench/rules.py --profiles 100000 1000000 --changed 1000

For each size: profiles and their events are written straight into a fresh SQLite cache (bulk
SQL), everything is evaluated once (the full re-evaluation, 10 segments), then `--changed`
profiles get a new event and are marked dirty (after the full pass's writes are put on disk, as
between a daemon's cycles), and the cycle's evaluation is timed. A steady
state cycle should cost the same at 1 M as at 100 k: it reads only dirty and expiring profiles.
Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import run_rules
from syncbridge.store.engine import open_engine
from syncbridge.store.rawsql import insert_many, update_many
from syncbridge.store.tables import Event, Profile, SourceRecord

NOW = datetime(2026, 11, 23, tzinfo=UTC)
RULES = RulesConfig.model_validate(
    {
        "traits": [
            {"name": "lifetime_value", "aggregate": "sum", "event": "purchase", "property": "amount"},
            {"name": "order_count", "aggregate": "count", "event": "purchase"},
            {"name": "last_order_at", "aggregate": "max", "event": "purchase", "property": "@time"},
            {"name": "engagement_30d", "aggregate": "count", "event": "product_viewed", "within": "30d"},
        ],
        "tags": [{"name": "Browsed:{category}", "event": "product_viewed", "within": "30d"}],
        "segments": [
            {"name": f"S{i}", "rule": rule}
            for i, rule in enumerate(
                [
                    "lifetime_value > 500",
                    "lifetime_value > 2000 and last_order_at within 30d",
                    "order_count >= 3",
                    'city = "New York"',
                    'country in ["US", "CA"]',
                    "engagement_30d >= 2",
                    'tag "Browsed:Shoes"',
                    "last_order_at older than 180d",
                    "count(purchase within 90d) >= 1",
                    'segment "S0" and not segment "S3"',
                ]
            )
        ],
    }
)  # fmt: skip
CITIES = ["New York", "Boston", "Chicago", "Austin", "Seattle"]
CATEGORIES = ["Shoes", "Apparel", "Gear", "Accessories"]


def populate(url: str, profiles: int, seed: int = 3) -> None:
    """Profiles with attributes, a source record each, and 2 events on average."""
    rng = random.Random(seed)
    engine = open_engine(url)
    now = NOW
    page = 20_000
    event_id = 0
    for start in range(1, profiles + 1, page):
        ids = range(start, min(start + page, profiles + 1))
        prof, recs, events = [], [], []
        for pid in ids:
            prof.append({
                "id": pid, "email": f"p{pid}@gmail.com", "record_count": 1,
                "attributes": {"email": f"p{pid}@gmail.com", "email_valid": True,
                               "city": rng.choice(CITIES), "country": rng.choice(["US", "CA", "DE"])},
                "attribute_sources": {}, "created_at": now, "updated_at": now, "dirty": False,
                "deleted": False,
            })  # fmt: skip
            recs.append({
                "id": pid, "source": "bench", "stream": "people", "external_id": str(pid),
                "payload": {}, "content_hash": "", "attributes": {}, "identifiers": [],
                "deleted": False, "pending": False, "profile_id": pid,
            })  # fmt: skip
            for _ in range(rng.choice([0, 1, 2, 3, 4])):
                event_id += 1
                purchase = rng.random() < 0.5
                events.append({
                    "id": event_id, "record_id": pid, "ordinal": event_id, "profile_id": pid,
                    "type": "purchase" if purchase else "product_viewed",
                    "occurred_at": now - timedelta(seconds=rng.randint(0, 400 * 86400)),
                    "properties": {"amount": rng.randint(20, 900)} if purchase
                    else {"category": rng.choice(CATEGORIES)},
                })  # fmt: skip
        with engine.begin() as conn:
            insert_many(conn, Profile.__table__, prof)
            insert_many(conn, SourceRecord.__table__, recs)
            insert_many(conn, Event.__table__, events)
    engine.dispose()


def mark_changed(url: str, profiles: int, changed: int) -> None:
    engine = open_engine(url)
    rng = random.Random(9)
    chosen = rng.sample(range(1, profiles + 1), changed)
    with engine.begin() as conn:
        base = conn.exec_driver_sql("SELECT max(id) FROM event").scalar_one() + 1
        insert_many(conn, Event.__table__, [
            {"id": base + i, "record_id": pid, "ordinal": 10_000 + i, "profile_id": pid,
             "type": "purchase", "occurred_at": NOW - timedelta(hours=1), "properties": {"amount": 99}}
            for i, pid in enumerate(chosen)
        ])  # fmt: skip
        update_many(conn, Profile.__table__, [{"id": pid, "dirty": True} for pid in chosen], "id")
    engine.dispose()


def settle(engine: Any) -> None:
    """Put the full pass's writes on disk, as they are minutes later when a daemon's next cycle
    runs; else that cycle's first checkpoint pays for flushing gigabytes it did not write."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--changed", type=int, default=1000)
    args = parser.parse_args()
    for size in args.profiles:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'rules.db'}"
            started = time.perf_counter()
            populate(url, size)
            setup_s = time.perf_counter() - started
            engine = open_engine(url)
            started = time.perf_counter()
            run_rules(engine, RULES, NOW)
            full_s = time.perf_counter() - started
            settle(engine)
            mark_changed(url, size, args.changed)
            started = time.perf_counter()
            cycle = run_rules(engine, RULES, NOW + timedelta(minutes=1))  # the next cycle
            cycle_s = time.perf_counter() - started
            print(json.dumps({
                "profiles": size, "setup_s": round(setup_s, 1),
                "full_evaluation_s": round(full_s, 1), "full_profiles_per_s": round(size / full_s),
                "changed": args.changed, "cycle_evaluated": cycle.evaluated,
                "cycle_s": round(cycle_s, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
            }))  # fmt: skip
            engine.dispose()


if __name__ == "__main__":
    main()
