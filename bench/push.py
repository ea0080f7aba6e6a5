"""Push benchmark: N members into the Mailchimp fake at a given latency, 10 connections at most.

    python bench/push.py --members 100000 --latency 0.1

Profiles (email, first name, city, lifetime value, consent, and 0-11 shop tags: the largest tag
on 60 % of people) are written straight into a fresh SQLite cache (bulk SQL); the audience has 3
merge fields and the tags. Three pushes are measured:

- **first push**: the audience is empty; everyone is sent;
- **1,000 changed**: 1,000 profiles get a new lifetime value and one tag more or less, and are
  journalled as changed (as identity resolution does);
- **unchanged**: nothing changed since the last push: it should write nothing.

The fake runs in a child process (`--serve-fake`), so this process's CPU time and peak RSS are
syncbridge's alone; the child counts calls by endpoint and reports its own CPU. For each phase:
calls by endpoint, write calls, wall time, the ideal (write calls / 10 connections x latency),
wall / ideal, CPU seconds per 1,000 members (of this process, and of the fake) and peak RSS.
Prints one JSON object per phase, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake lives in tests/

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LIST_ID = "L1"
CONNECTIONS = 10
# 11 shop tags; the share of people who have each (the largest on 60 %)
TAG_SHARES = {"VIP": 0.60, "Repeat": 0.40, "Shoes": 0.30, "Apparel": 0.20, "Gear": 0.15,
              "Sale": 0.10, "Wholesale": 0.08, "Newsletter": 0.05, "Gift": 0.03,
              "Returns": 0.02, "Press": 0.01}  # fmt: skip
CITIES = ["New York", "Boston", "Chicago", "Austin", "Seattle"]
PATTERNS = [
    (re.compile(r"/members/[^/]+"), "/members/{hash}"),
    (re.compile(r"/segments/\d+"), "/segments/{id}"),
    (re.compile(r"/lists/[^/]+"), "/lists/{id}"),
    (re.compile(r"/batches/[^/]+"), "/batches/{id}"),
    (re.compile(r"^/batch-results/.*"), "/batch-results/{archive}"),
]


def calibrate() -> float:
    """A fixed pure-Python loop: the VM's speed drifts, so figures carry it (lower is faster)."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):  # the loop of bench/ingest.py, so calibrations compare
        total += i * i
    return round(time.perf_counter() - started, 3)


# --------------------------------------------------------------------------- the fake's process


def endpoint(method: str, path: str) -> str:
    """'POST /lists/{id}/segments/{id}': calls grouped by what they do, not by which member."""
    path = path.removeprefix("/3.0")
    for pattern, replacement in PATTERNS:
        path = pattern.sub(replacement, path)
    return f"{method} {path}"


def serve_fake(latency: float, batch_op_s: float | None) -> None:
    """Run FakeMailchimp; print its port; answer 'stats' lines with the calls since the last."""
    from tests.fakes.mailchimp import FakeMailchimp

    class CountingLog(list[Any]):
        """Counts requests by endpoint instead of keeping their bodies (1 M members' worth)."""

        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter[str] = Counter()
            self.lock = threading.Lock()

        def append(self, item: Any) -> None:
            with self.lock:
                self.counts[endpoint(item[0], item[1])] += 1

    class CountingFake(FakeMailchimp):
        def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Any:
            reply = super()._handle(method, target, raw, headers)
            if reply.status == 429:
                with log.lock:
                    log.counts["429 answers"] += 1
            return reply

    fake = CountingFake(max_connections=CONNECTIONS, latency=latency, batch_op_s=batch_op_s)
    log = CountingLog()
    fake.requests = log
    fake.start()
    fake.add_list(LIST_ID)
    print(json.dumps({"base_url": fake.base_url, "api_key": fake.api_key}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            with log.lock:
                counts, log.counts = dict(log.counts), Counter()
            cpu = time.process_time()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(json.dumps({"calls": counts, "cpu_s": cpu, "peak_rss_mib": rss}), flush=True)
    fake.stop()


class FakeProcess:
    def __init__(self, latency: float, batch_op_s: float | None) -> None:
        extra = [] if batch_op_s is None else ["--batch-op-s", str(batch_op_s)]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake", "--latency", str(latency), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        hello = json.loads(self._line())
        self.base_url, self.api_key = hello["base_url"], hello["api_key"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake's process exited (code {self.proc.poll()})")
        return line

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._line())
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --------------------------------------------------------------------------- the cache


def populate(url: str, members: int, seed: int = 5) -> None:
    """Profiles with the attributes the audience sends, in pages of bulk inserts."""
    from syncbridge.store.engine import open_engine
    from syncbridge.store.rawsql import insert_many
    from syncbridge.store.tables import Profile

    rng = random.Random(seed)
    engine = open_engine(url)
    page = 20_000
    for start in range(1, members + 1, page):
        rows = []
        for pid in range(start, min(start + page, members + 1)):
            tags = [t for t, share in TAG_SHARES.items() if rng.random() < share]
            email = f"p{pid}@gmail.com"
            rows.append({
                "id": pid, "email": email, "record_count": 1,
                "attributes": {"email": email, "email_valid": True, "first_name": f"Pat{pid}",
                               "city": rng.choice(CITIES), "ltv": rng.randint(0, 5000),
                               "accepts_email_marketing": True, "shop_tags": tags},
                "attribute_sources": {}, "created_at": NOW, "updated_at": NOW, "dirty": False,
                "deleted": False,
            })  # fmt: skip
        with engine.begin() as conn:
            insert_many(conn, Profile.__table__, rows)
    engine.dispose()


def change(engine: Any, members: int, changed: int) -> None:
    """A new lifetime value and one tag toggled for `changed` profiles, journalled."""
    from sqlalchemy import select

    from syncbridge.store import journal
    from syncbridge.store.rawsql import update_many
    from syncbridge.store.tables import Profile

    table = Profile.__table__
    chosen = random.Random(9).sample(range(1, members + 1), min(changed, members))
    with engine.begin() as conn:
        rows = conn.execute(select(table.c.id, table.c.attributes).where(table.c.id.in_(chosen)))
        updates = []
        for pid, attributes in rows:
            tags = set(attributes["shop_tags"]) ^ {"Press"}
            attributes = attributes | {"ltv": attributes["ltv"] + 1, "shop_tags": sorted(tags)}
            updates.append({"id": pid, "attributes": attributes})
        update_many(conn, table, updates, "id")
        journal.append(conn, journal.PROFILE, chosen)


# --------------------------------------------------------------------------- the pushes


def measure(name: str, fake: FakeProcess, members: int, latency: float, run: Any) -> dict[str, Any]:
    fake_before = fake.stats()
    cpu, started = time.process_time(), time.perf_counter()
    report = run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    after = fake.stats()
    calls = dict(sorted(after["calls"].items()))
    rejected = calls.pop("429 answers", 0)
    writes = sum(n for key, n in calls.items() if not key.startswith("GET "))
    ideal = writes / CONNECTIONS * latency
    audience = report.audiences[0]
    return {
        "phase": name, "members": members, "latency_s": latency,
        "calls": calls, "write_calls": writes, "total_calls": sum(calls.values()),
        "429_answers": rejected, "wall_s": round(wall, 2), "ideal_s": round(ideal, 3),
        "wall_over_ideal": round(wall / ideal, 2) if ideal else None,
        "cpu_s": round(cpu, 2), "cpu_s_per_1000_members": round(cpu / members * 1000, 4),
        "fake_cpu_s_per_1000_members":
            round((after["cpu_s"] - fake_before["cpu_s"]) / members * 1000, 4),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "fake_peak_rss_mib": after["peak_rss_mib"],
        "planned": audience.planned,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--db", type=Path, help="SQLite file to use (default: a temporary one)")
    parser.add_argument(
        "--batch-threshold",
        type=int,
        help="new members from which upserts go through /batches (default: the config's)",
    )
    parser.add_argument(
        "--batch-op-s",
        type=float,
        help="seconds the fake spends on each /batches operation (default: --latency)",
    )
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.latency, args.batch_op_s)
        return

    from pydantic import SecretStr

    from syncbridge.config.models import AudienceConfig, MailchimpConfig, MergeFieldConfig
    from syncbridge.push.client import MailchimpClient
    from syncbridge.push.sync import push
    from syncbridge.store.engine import open_engine

    calibration = calibrate()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "push.db"
        for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            leftover.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        started = time.perf_counter()
        populate(url, args.members)
        setup_s = time.perf_counter() - started
        fake = FakeProcess(args.latency, args.batch_op_s)
        try:
            audience = AudienceConfig(
                name="customers", list_id=LIST_ID, tag_attributes=["shop_tags"],
                merge_fields=[
                    MergeFieldConfig(tag="FNAME", name="First Name", source="first_name"),
                    MergeFieldConfig(tag="CITY", name="City", source="city"),
                    MergeFieldConfig(tag="LTV", name="Lifetime value", type="number",
                                     source="ltv"),
                ],
            )  # fmt: skip
            config = MailchimpConfig(
                api_key=SecretStr(fake.api_key), api_base_url=fake.base_url, audiences=[audience]
            )
            if args.batch_threshold is not None:
                config = config.model_copy(update={"batch_threshold": args.batch_threshold})
            client = MailchimpClient(config)
            engine = open_engine(url)
            phases = [
                measure("first push", fake, args.members, args.latency,
                        lambda: push(engine, config, client)),
            ]  # fmt: skip
            change(engine, args.members, args.changed)
            phases.append(measure(f"{args.changed:,} changed", fake, args.members, args.latency,
                                  lambda: push(engine, config, client)))  # fmt: skip
            phases.append(measure("unchanged", fake, args.members, args.latency,
                                  lambda: push(engine, config, client)))  # fmt: skip
            engine.dispose()
        finally:
            fake.close()
    for phase in phases:
        print(json.dumps(phase))
    print(json.dumps({
        "members": args.members, "latency_s": args.latency, "setup_s": round(setup_s, 1),
        "batch_threshold": config.batch_threshold, "calibration_loop_s": calibration,
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
