"""Real-time lane benchmark: a changed source row → visible in Mailchimp, through the daemon.

    python bench/latency.py --changes 1000 --rate 20 --latency 0.1 --flush-s 2

A `syncbridge daemon` process runs against the Mailchimp fake (in this process, 100 ms per
call, 10 connections) and a file source: one CSV export of `--people` people, pulled every
`--schedule` (1 s). After the first load, `--changes` changes arrive one by one at `--rate`
per second on average (Poisson arrivals): a person's new first name, the export rewritten
with it (atomically, as an export job would). For each change the time from the rewritten
file to the fake holding the new FNAME is measured. Then one bulk change of `--bulk` rows
checks that a load still goes in full 500-member batches.

With `--events` each change is an event instead (issue 15): a `Product Added` posted to the
daemon's intake (`/v1/track`, Segment's shape, the person named by `context.traits.email`),
measured from the POST until the person has the rules' `Added_to_Cart` tag in the fake: the
path through the intake's group commit, identity resolution, the rules and the destination's
tag call. No bulk change follows.

Prints one JSON object: p50, p95, p99 and max latency, the batch-subscribe calls the changes
took (micro-batches), the bulk load's calls and time, and the calibration loop's seconds.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake lives in tests/

from tests.fakes.mailchimp import FakeMailchimp  # noqa: E402

MAPPING = """
[identifiers]
email = "email"
external = { "crm" = "id" }
[attributes]
first_name = "first_name"
accepts_email_marketing = { field = "optin", type = "boolean" }
"""


def calibrate() -> float:
    """The pure-Python loop of bench/ingest.py: the VM's speed drifts (lower is faster)."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i * i
    return round(time.perf_counter() - started, 3)


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """The export anew, complete before it takes the export's name."""
    temporary = path.with_suffix(".part")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "email", "first_name", "optin"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def row(i: int, name: str) -> dict[str, str]:
    return {"id": f"c{i}", "email": f"person{i}@gmail.com", "first_name": name, "optin": "yes"}


WRITE_KEY = "bench-write-key"


RULES = """
[[tags]]
name = "Added_to_Cart"   # as in mappings/rules.toml
event = "added_to_cart"
within = "7d"
"""


def events_config(port: int, folder: Path) -> str:
    """`--events`: the intake on `port`, stored through mappings/events.toml, and the rules'
    `Added_to_Cart` tag, which each event should earn its person."""
    (folder / "rules.toml").write_text(RULES)
    return f"""
[intake]
write_keys = ["{WRITE_KEY}"]
[rules]
file = "{folder / "rules.toml"}"
[[sources]]
name = "site"
connector = "intake"
streams = [{{ name = "events", mapping = "{ROOT / "mappings" / "events.toml"}" }}]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_event(port: int, i: int, n: int) -> None:
    """Person i adds a product to the cart, as a site's Segment snippet reports it."""
    body = {"type": "track", "event": "Product Added", "anonymousId": f"visitor-{i}",
            "messageId": f"bench-{n}", "context": {"traits": {"email": f"person{i}@gmail.com"}},
            "properties": {"sku": "SKU-1", "price": 42.0, "quantity": 1}}  # fmt: skip
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/track",
                                     data=json.dumps(body).encode(), method="POST")  # fmt: skip
    request.add_header("Content-Type", "application/json")
    request.add_header(
        "Authorization", "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def config_text(folder: Path, fake: FakeMailchimp, args: argparse.Namespace) -> str:
    http = f"127.0.0.1:{args.port}" if args.events else ""
    return (
        (events_config(args.port, folder) if args.events else "")
        + f"""
[store]
url = "sqlite:///{folder / "cache.db"}"
[ingest]
parallel = false
[logging]
level = "{args.log_level}"
[daemon]
http = "{http}"
flush_s = {args.flush_s}
[mailchimp]
api_key = "{fake.api_key}"
api_base_url = "{fake.base_url}"
[[mailchimp.audiences]]
name = "customers"
list_id = "L1"
[[mailchimp.audiences.merge_fields]]
tag = "FNAME"
name = "First Name"
source = "first_name"
[[sources]]
name = "crm"
connector = "files"
schedule = "{args.schedule}"
[[sources.streams]]
name = "contacts"
mapping = "mapping.toml"
path = "contacts.csv"
primary_key = "id"
"""
    )


class Watcher:
    """Polls the fake for the changes still in flight; records when each became visible."""

    def __init__(self, fake: FakeMailchimp) -> None:
        self.fake = fake
        self.pending: dict[str, tuple[str, float]] = {}  # email -> (expected name, written at)
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def expect(self, email: str, name: str, at: float) -> None:
        """`name`: the FNAME to see, or "tag:<name>" for a tag the member must have."""
        with self.lock:
            self.pending[email] = (name, at)

    def _poll(self) -> None:
        while not self.done.is_set():
            with self.lock:
                waiting = dict(self.pending)
            if waiting:
                found = self.fake.members("L1").values()
                members = {m["email_address"]: m["merge_fields"].get("FNAME") for m in found}
                tags = {m["email_address"]: {f"tag:{t}" for t in m["tags"]} for m in found}
                now = time.monotonic()
                with self.lock:
                    for email, (name, at) in waiting.items():
                        seen = name in tags.get(email, ()) or members.get(email) == name
                        if seen and self.pending.get(email) == (name, at):
                            del self.pending[email]
                            self.latencies.append(now - at)
            time.sleep(0.02)

    def wait_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return
            time.sleep(0.05)
        raise SystemExit(f"{len(self.pending)} changes never arrived")


def batch_calls(fake: FakeMailchimp) -> int:
    with fake._lock:
        return sum(1 for m, p, *_ in fake.requests if m == "POST" and p == "/3.0/lists/L1")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--flush-s", type=float, default=2.0)
    parser.add_argument("--schedule", default="1s")
    parser.add_argument("--bulk", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log-level", default="WARNING", help="the daemon's, on stderr")
    parser.add_argument(
        "--events", action="store_true",
        help="each change is a 'Product Added' event posted to the intake; measured until the "
             "person has the Added_to_Cart tag in the fake (no bulk change)",
    )  # fmt: skip
    args = parser.parse_args()
    args.port = free_port()
    if args.events and args.changes > args.people:
        raise SystemExit("--events changes one person each: --changes must be <= --people")
    calibration = calibrate()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, FakeMailchimp(latency=args.latency) as fake:
        folder = Path(tmp)
        fake.add_list("L1")
        (folder / "mapping.toml").write_text(MAPPING)
        (folder / "config.toml").write_text(config_text(folder, fake, args))
        export = folder / "contacts.csv"
        names = {i: f"P{i}" for i in range(args.people)}
        write_rows(export, [row(i, n) for i, n in names.items()])
        daemon = subprocess.Popen(
            [sys.executable, "-c", "from syncbridge.cli import main; main()",
             "daemon", "-c", str(folder / "config.toml")],
            stdout=subprocess.DEVNULL, stderr=None if args.log_level != "WARNING" else subprocess.PIPE,
            text=True,
        )  # fmt: skip
        watcher = Watcher(fake)
        try:
            started = time.monotonic()
            while len(fake.members("L1")) < args.people:
                if daemon.poll() is not None or time.monotonic() - started > 600:
                    raise SystemExit(f"the first load did not arrive: {daemon.stderr.read()}")
                time.sleep(0.1)
            time.sleep(3)  # let the first load's read-back pass settle
            before = batch_calls(fake)
            order = rng.sample(range(args.people), args.changes) if args.events else []
            for n in range(1, args.changes + 1):
                time.sleep(rng.expovariate(args.rate))
                if args.events:
                    i = order[n - 1]
                    at = time.monotonic()
                    post_event(args.port, i, n)
                    watcher.expect(f"person{i}@gmail.com", "tag:Added_to_Cart", at)
                    continue
                i, name = rng.randrange(args.people), f"v{n}"
                names[i] = name
                write_rows(export, [row(k, v) for k, v in names.items()])
                watcher.expect(f"person{i}@gmail.com", name, time.monotonic())
            watcher.wait_empty(180)
            lane_calls = batch_calls(fake) - before
            if args.events:
                args.bulk = 0
            bulk_name = "bulk"
            before, at = batch_calls(fake), time.monotonic()
            for i in range(min(args.bulk, args.people)):
                names[i] = bulk_name
            write_rows(export, [row(k, v) for k, v in names.items()])  # fmt: skip
            bulk = min(args.bulk, args.people)
            while sum(1 for m in fake.members("L1").values()
                      if m["merge_fields"].get("FNAME") == bulk_name) < bulk:  # fmt: skip
                if time.monotonic() - at > 600:
                    raise SystemExit("the bulk change did not arrive")
                time.sleep(0.05)
            bulk_s, bulk_calls = time.monotonic() - at, batch_calls(fake) - before
        finally:
            watcher.done.set()
            daemon.terminate()
            code = daemon.wait(timeout=120)
        result: dict[str, Any] = {
            "changes": len(watcher.latencies), "rate_per_s": args.rate,
            "latency_s": args.latency, "flush_s": args.flush_s, "schedule": args.schedule,
            "p50_s": percentile(watcher.latencies, 0.50),
            "p95_s": percentile(watcher.latencies, 0.95),
            "p99_s": percentile(watcher.latencies, 0.99),
            "max_s": round(max(watcher.latencies), 3),
            "batch_calls_for_changes": lane_calls,
            "bulk_members": bulk, "bulk_batch_calls": bulk_calls, "bulk_s": round(bulk_s, 2),
            "daemon_exit": code, "calibration_s": calibration,
        }  # fmt: skip
        print(json.dumps(result))


if __name__ == "__main__":
    main()
