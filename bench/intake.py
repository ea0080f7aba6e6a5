"""Event intake benchmark: accepted events per second, single calls and batches, SQLite cache.

    python bench/intake.py                       # 20 clients; 5,000 single calls, 50,000 in batches
    python bench/intake.py --clients 20 --single 5000 --batches 500 --batch-size 100

The intake (the daemon's own app: uvicorn, the Segment routes, group commit into a fresh SQLite
cache through `mappings/events.toml`) runs in a child process, so the load generator's CPU is
not the server's. `--clients` threads each keep one HTTP/1.1 connection open and send either
single `/v1/track` calls or `/v1/batch` calls of `--batch-size` events; every call must get 200
(an acknowledged event is a committed one). At the end the cache is counted: every
acknowledged event must be there. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "wk_bench_intake_key"
CONFIG = """
[store]
url = "sqlite:///{db}"
[daemon]
http = "127.0.0.1:0"
[[sources]]
name = "web"
connector = "intake"
streams = [{{ name = "events", mapping = "{mapping}" }}]
[intake]
write_keys = ["{key}"]
"""


def serve(config: Path) -> None:
    """The child: the intake on a free port (printed), until stdin closes."""
    from syncbridge.intake.setup import serving
    from syncbridge.settings import load_settings
    from syncbridge.store.engine import open_engine

    settings = load_settings(config)
    engine = open_engine(settings.config.store.url)
    with serving(lambda: settings, engine) as base:
        print(base.removeprefix("http://"), flush=True)
        sys.stdin.read()
        cpu = time.process_time()
    print(json.dumps({"server_cpu_s": round(cpu, 2)}), flush=True)


def event(n: int, client: int) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "anonymousId": f"anon-{client}-{n % 50}",
            "messageId": str(uuid.uuid4()), "timestamp": "2026-12-01T10:00:00Z",
            "properties": {"sku": f"SKU-{n % 300}", "price": 19.5, "name": "Trail Sock"},
            "context": {"page": {"url": "https://shop.example.com/p/trail-sock"}}}  # fmt: skip


def load(address: str, clients: int, calls: int, batch: int) -> dict[str, Any]:
    """`calls` requests in all, spread over `clients` threads; `batch` 0: single /v1/track."""
    host, port = address.rsplit(":", 1)
    auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    failures: list[Any] = []
    sent = [0] * clients

    def run(c: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        for n in range(c, calls, clients):
            if batch:
                path = "/v1/batch"
                body = {"batch": [event(n * batch + i, c) for i in range(batch)]}
            else:
                path, body = "/v1/track", event(n, c)
            data = json.dumps(body).encode()
            conn.request("POST", path, data, {"Content-Type": "application/json",
                                              "Authorization": auth})  # fmt: skip
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                failures.append((response.status, answer[:200]))
                continue
            sent[c] += batch or 1
        conn.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    events = sum(sent)
    return {"requests": calls, "events": events, "seconds": round(seconds, 2),
            "requests_per_s": round(calls / seconds), "events_per_s": round(events / seconds),
            "failures": len(failures)}  # fmt: skip


def count(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM source_record").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--single", type=int, default=5000, help="single-event calls")
    parser.add_argument("--batches", type=int, default=500, help="batch calls")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cache.db"
        config = Path(tmp) / "config.toml"
        mapping = ROOT / "mappings" / "events.toml"
        config.write_text(CONFIG.format(db=db, mapping=mapping, key=KEY), encoding="utf-8")
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(config)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert child.stdout is not None and child.stdin is not None
        address = child.stdout.readline().strip()
        single = load(address, args.clients, args.single, 0)
        batches = load(address, args.clients, args.batches, args.batch_size)
        child.stdin.close()
        server = json.loads(child.stdout.read().strip().splitlines()[-1])
        child.wait(timeout=60)
        stored = count(db)
        acknowledged = single["events"] + batches["events"]
        print(json.dumps({
            "clients": args.clients, "single": single, "batches": batches,
            "batch_size": args.batch_size, "acknowledged": acknowledged, "stored": stored,
            "lost": acknowledged - stored, **server,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}",
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
