"""Ingestion benchmark: N synthetic people across three sources, full load and re-runs.

    python bench/ingest.py --people 50000            # ~100k source records
    python bench/ingest.py --people 500000 --db /tmp/bench.db
    python bench/ingest.py --people 500000 --url postgresql+psycopg://postgres@127.0.0.1/bench

Measures (each in its own timing): ingest of all records into SQLite, identity resolution, an
unchanged re-run (files untouched: skipped by fingerprint), a re-run over rewritten but
identical files (every row hashed and compared, nothing written), and a re-map after an
attribute was added to the contacts and customers mappings (every stored record of those two
streams transformed again from its payload and rewritten; the files are not read), then the
same re-map once more (every record compares equal: nothing is written). With `--rules`, the
first load also evaluates the example rules (`mappings/rules.toml`) after resolution, as
`run --once` does, and reports ingest + resolution + rules (the rules about purchases find none:
this data has product views only). `--load-only` stops after the first
load (its peak RSS is then the load's). Peak RSS is the process's maximum resident set size.
Prints one JSON object; copy the figures into bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

from syncbridge.config.loader import parse_config
from syncbridge.identity import resolve_pending
from syncbridge.ingest import StreamIngest, ingest_streams
from syncbridge.pipeline import stream_jobs
from syncbridge.remap import remap_stream
from syncbridge.rules.config import RulesConfig
from syncbridge.rules.stage import run_rules
from syncbridge.settings import check_settings
from syncbridge.store.engine import open_engine

REPO = Path(__file__).resolve().parents[1]
FIRST = ["Ann", "Bob", "Zoë", "Jürgen", "François", "Łukasz", "Maria", "José", "Li", "Sam"]
LAST = ["Lee", "Stone", "Müller", "Lefèvre", "Wójcik", "Núñez", "Smith", "Nguyễn", "Brown"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "web.de", "proton.me"]
COUNTRIES = ["United States", "USA", "Canada", "Deutschland", "UK", "France", "Japan"]


def generate(directory: Path, people: int, seed: int = 7) -> dict[str, int]:
    """Write a Salesforce report, a Shopify customer export and web events for `people`."""
    rng = random.Random(seed)
    counts = {"crm": 0, "shop": 0, "web": 0}
    (directory / "crm").mkdir(parents=True)
    (directory / "shop").mkdir()
    (directory / "web").mkdir()
    crm = (directory / "crm" / "contacts.csv").open("w", encoding="utf-8", newline="")
    shop = (directory / "shop" / "customers.csv").open("w", encoding="utf-8", newline="")
    web = (directory / "web" / "events.jsonl").open("w", encoding="utf-8")
    crm_w = csv.writer(crm, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    shop_w = csv.writer(shop, lineterminator="\n")
    crm_w.writerow(
        [
            "Contact ID",
            "First Name",
            "Last Name",
            "Email",
            "Phone",
            "Mailing Country",
            "Email Opt Out",
            "Last Modified Date",
        ]
    )
    shop_w.writerow(
        [
            "Customer ID",
            "First Name",
            "Last Name",
            "Email",
            "Accepts Email Marketing",
            "Default Address City",
            "Default Address Country Code",
            "Total Spent",
            "Total Orders",
            "Phone",
        ]
    )
    for i in range(people):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore")
        email = f"{local.decode().lower()}{i}@{rng.choice(DOMAINS)}"
        in_crm, in_shop = rng.random() < 0.7, rng.random() < 0.8
        if not (in_crm or in_shop):
            in_shop = True
        if in_crm:
            month, day = rng.randint(1, 12), rng.randint(1, 28)
            crm_w.writerow(
                [
                    f"003{i:015d}",
                    first,
                    last,
                    email.title() if i % 3 else email,
                    f"(415) 555-{i % 10000:04d}",
                    rng.choice(COUNTRIES),
                    "1" if i % 13 == 0 else "0",
                    f"{month}/{day}/2026 4:05 PM",
                ]
            )
            counts["crm"] += 1
        if in_shop:
            shop_w.writerow(
                [
                    f"'{7391094000000 + i}",
                    first,
                    last,
                    f" {email} ",
                    "yes" if i % 4 else "no",
                    "Boston",
                    "US",
                    f"{rng.randint(0, 500000) / 100:.2f}",
                    rng.randint(0, 40),
                    "",
                ]
            )
            counts["shop"] += 1
        if rng.random() < 0.5:
            web.write(
                json.dumps(
                    {
                        "messageId": f"m-{i}",
                        "type": "track",
                        "event": "Product Viewed",
                        "userId": str(7391094000000 + i) if in_shop else None,
                        "anonymousId": f"a-{i}",
                        "timestamp": f"2026-11-{rng.randint(1, 22):02d}T10:00:00Z",
                        "context": {"traits": {"email": email}},
                        "properties": {"sku": "TR-2041", "category": "Shoes", "price": 139.0},
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
            counts["web"] += 1
    for fh in (crm, shop, web):
        fh.close()
    return counts


def config_for(directory: Path, db: Path) -> dict[str, Any]:
    mappings = REPO / "mappings"
    return {
        "store": {"url": f"sqlite:///{db}"},
        "identity": {"source_priority": ["crm", "shop", "web"]},
        "sources": [
            {
                "name": "crm",
                "connector": "files",
                "streams": [
                    {
                        "name": "contacts",
                        "path": str(directory / "crm" / "contacts.csv"),
                        "primary_key": "Contact ID",
                        "mapping": str(directory / "crm.toml"),
                    }
                ],
            },
            {
                "name": "shop",
                "connector": "files",
                "streams": [
                    {
                        "name": "customers",
                        "path": str(directory / "shop" / "customers.csv"),
                        "primary_key": "Customer ID",
                        "snapshot": True,
                        "mapping": str(directory / "shop.toml"),
                    }
                ],
            },
            {
                "name": "web",
                "connector": "files",
                "streams": [
                    {
                        "name": "events",
                        "path": str(directory / "web" / "events.jsonl"),
                        "primary_key": "messageId",
                        "mapping": str(mappings / "web_events.toml"),
                    }
                ],
            },
        ],
    }


CRM_MAPPING = """
[record.timestamp]
field = "Last Modified Date"
type = "datetime"
format = "%m/%d/%Y %I:%M %p"
timezone = "America/Los_Angeles"
[identifiers]
email = "Email"
external = { "salesforce:contact" = "Contact ID" }
[attributes]
first_name = "First Name"
last_name = "Last Name"
phone = { field = "Phone", type = "phone" }
country = { field = "Mailing Country", type = "country" }
email_opt_out = { field = "Email Opt Out", type = "boolean" }
"""

SHOP_MAPPING = """
[identifiers]
email = "Email"
external = { "shopify:customer" = { field = "Customer ID", strip_chars = "'" } }
[attributes]
first_name = "First Name"
last_name = "Last Name"
city = "Default Address City"
country = { field = "Default Address Country Code", type = "country" }
accepts_email_marketing = { field = "Accepts Email Marketing", type = "boolean" }
shop_total_spent = { field = "Total Spent", type = "number" }
shop_order_count = { field = "Total Orders", type = "integer" }
"""


def remap_edited(directory: Path, engine: Any, data: dict[str, Any]) -> tuple[int, int]:
    """Add an attribute to the contacts and customers mappings and re-map those two streams'
    stored records; returns (records re-mapped, records changed)."""
    (directory / "crm.toml").write_text(CRM_MAPPING + 'opt_out_flag = "Email Opt Out"\n')
    (directory / "shop.toml").write_text(SHOP_MAPPING + 'spent_text = "Total Spent"\n')
    settings = check_settings(parse_config(data, "bench", directory, {}), None)
    remapped = changed = 0
    for job in jobs_for(settings):
        if job.source in ("crm", "shop"):
            stats = remap_stream(engine, job)
            remapped, changed = remapped + stats.remapped, changed + stats.changed
    return remapped, changed


def jobs_for(settings: Any) -> list[StreamIngest]:
    return list(stream_jobs(settings).values())


def ingest_all(settings: Any, engine: Any) -> int:
    jobs = jobs_for(settings)
    return sum(s.read for s in ingest_streams(engine, jobs, settings.config.ingest.workers))


def calibration_s() -> float:
    """Seconds for a fixed pure-Python loop: the VM's speed drifts, so figures come with it."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i * i
    return round(time.perf_counter() - started, 3)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (Linux reports KiB) of this process or of its waited-for children."""
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: a temp file)")
    parser.add_argument(
        "--url", default=None, help="a database URL instead, e.g. an empty PostgreSQL database"
    )
    parser.add_argument("--serial", action="store_true", help="no producer process")
    parser.add_argument("--workers", type=int, default=2, help="producer processes at once")
    parser.add_argument("--rules", action="store_true", help="evaluate mappings/rules.toml too")
    parser.add_argument("--load-only", action="store_true", help="stop after the first load")
    parser.add_argument(
        "--incremental", action="store_true", help="resolve the first load in batches, as before"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        db = args.db or directory / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        counts = generate(directory, args.people)
        (directory / "crm.toml").write_text(CRM_MAPPING, encoding="utf-8")
        (directory / "shop.toml").write_text(SHOP_MAPPING, encoding="utf-8")
        data = config_for(directory, db)
        if args.url:
            data["store"] = {"url": args.url}
        data["ingest"] = {"parallel": not args.serial, "workers": args.workers}
        config = parse_config(data, "bench", directory, {})
        settings = check_settings(config, None)
        engine = open_engine(config.store.url)
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT count(*) FROM source_record").scalar_one():
                sys.exit(f"{args.url}: the benchmark needs an empty database")
        records = sum(counts.values())
        result: dict[str, Any] = {"people": args.people, "records": records, **counts}
        result["parallel"] = config.ingest.parallel
        result["workers"] = config.ingest.workers

        started = time.perf_counter()
        ingest_all(settings, engine)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        stats = resolve_pending(engine, config.identity, first_load=not args.incremental)
        resolve_s = time.perf_counter() - started
        result.update(
            ingest_s=round(ingest_s, 2),
            ingest_records_per_s=round(records / ingest_s),
            resolve_s=round(resolve_s, 2),
            resolve_records_per_s=round(records / resolve_s),
            full_load_records_per_s=round(records / (ingest_s + resolve_s)),
            profiles=stats.profiles_created,
        )
        if args.rules:  # as a file they would fail validation: this data has no purchases
            text = (REPO / "mappings" / "rules.toml").read_text(encoding="utf-8")
            started = time.perf_counter()
            rules = run_rules(engine, RulesConfig.model_validate(tomllib.loads(text)))
            rules_s = time.perf_counter() - started
            result.update(
                rules_s=round(rules_s, 2),
                rules_profiles=rules.evaluated,
                load_with_rules_records_per_s=round(records / (ingest_s + resolve_s + rules_s)),
            )
        if args.load_only:
            result.update(peak_rss_mib=round(peak_rss_mib()), calibration_loop_s=calibration_s())
            print(json.dumps(result, indent=2))
            return
        started = time.perf_counter()
        ingest_all(settings, engine)
        resolve_pending(engine, config.identity)
        result["rerun_untouched_s"] = round(time.perf_counter() - started, 3)
        for path in directory.rglob("*.*"):
            if path.suffix in (".csv", ".jsonl"):
                os.utime(path)  # same bytes, new mtime: every row is read, hashed, compared
        started = time.perf_counter()
        reread = ingest_all(settings, engine)
        resolve_pending(engine, config.identity)
        rerun_s = time.perf_counter() - started
        started = time.perf_counter()
        remapped, changed = remap_edited(directory, engine, data)
        remap_s = time.perf_counter() - started
        started = time.perf_counter()
        resolve_pending(engine, config.identity)
        remap_resolve_s = time.perf_counter() - started
        started = time.perf_counter()
        again, _ = remap_edited(directory, engine, data)  # all equal now: compared, not written
        remap_equal_s = time.perf_counter() - started
        result.update(
            remapped=remapped,
            remap_changed=changed,
            remap_s=round(remap_s, 2),
            remap_records_per_s=round(remapped / remap_s),
            remap_resolve_s=round(remap_resolve_s, 2),
            remap_unchanged_records_per_s=round(again / remap_equal_s),
        )
        result.update(
            rerun_rewritten_s=round(rerun_s, 2),
            rerun_records_per_s=round(reread / rerun_s),
            peak_rss_mib=round(peak_rss_mib()),
            producer_peak_rss_mib=round(peak_rss_mib(resource.RUSAGE_CHILDREN)),
            db_mib=round(db.stat().st_size / 2**20) if not args.url else None,
            calibration_loop_s=calibration_s(),
            machine=f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}",
        )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
