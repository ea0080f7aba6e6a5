"""The demo: the whole pipeline on the bundled sample exports, into a local SQLite file.

It uses the same config as `config.example.toml`, with paths pointed at the sample data that
ships inside the package, so it works after a plain `pip install .` with no credentials.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .bundled import data_dir, example_config
from .config.loader import Settings, parse_config
from .settings import check_settings

DEMO_DB = "syncbridge-demo.db"
SAMPLE_DATE = datetime(2026, 11, 23, tzinfo=UTC)
"""The sample exports were taken on this day; the demo evaluates time windows as of then."""


DEMO_WRITE_KEY = "demo-write-key"
"""`demo --events`: the intake's write key (the intake runs on 127.0.0.1 for the demo only)."""
EVENTS_PERSON = "susananderson@hotmail.com"
"""Whom `demo --events` follows: a sample subscriber with no recent activity and no cart."""


def demo_config_data(db_path: Path, events: bool = False) -> dict[str, Any]:
    """The example config with its sample-data and mapping paths made absolute; with
    `events`, an intake source (`site`) that the event intake stores into."""
    data = tomllib.loads(example_config().read_text(encoding="utf-8"))
    examples = data_dir("examples")
    mappings = data_dir("mappings")
    for source in data.get("sources", []):
        for stream in source.get("streams", []):
            stream["path"] = str(examples / Path(stream["path"]).relative_to("examples"))
            stream["mapping"] = str(mappings / Path(stream["mapping"]).name)
    if events:
        data["intake"] = {"write_keys": [DEMO_WRITE_KEY]}
        data["sources"].append({"name": "site", "connector": "intake", "streams": [
            {"name": "events", "mapping": str(mappings / "events.toml")}]})  # fmt: skip
    if data.get("rules", {}).get("file"):
        data["rules"]["file"] = str(mappings / Path(data["rules"]["file"]).name)
    data["store"] = {"url": f"sqlite:///{db_path}"}
    # One stream after another: producer processes would interleave the streams' pages in
    # whatever order they finish, and with them profile ids and every sample the demo prints.
    # A few thousand records gain nothing from them; a demo that prints the same each time does.
    data.setdefault("ingest", {})["parallel"] = False
    mailchimp = data.get("mailchimp", {})
    mailchimp.pop("api_key", None)
    for audience in mailchimp.get("audiences", []):
        audience["list_id"] = "demo"
    return data


def demo_settings(
    db_path: Path,
    env: dict[str, str] | None = None,
    audience: str | None = None,
    events: bool = False,
) -> Settings:
    """The demo's settings; with `audience`, pushes there for real with $MAILCHIMP_API_KEY."""
    data = demo_config_data(db_path, events)
    env = env or {}
    if audience:
        for config in data["mailchimp"]["audiences"]:
            config["list_id"] = audience
        data["mailchimp"]["api_key"] = "${MAILCHIMP_API_KEY}"
    config = parse_config(data, "demo config", example_config().parent, env or {})
    return check_settings(config, None)


def reset(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def demo_events(moment: datetime) -> dict[str, Any]:
    """A visitor's afternoon, as a site's Segment snippet would send it: anonymous product
    views, an identify at login that names the visitor, an add to cart of 189.00, no order."""
    from datetime import timedelta

    visitor = "demo-visitor-7f3a"

    def at(hours: float) -> str:
        return (moment - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")

    page = {"url": "https://www.northwind-outfitters.com/products/summit-down-jacket"}
    jacket = {"product_id": "8045180099001", "sku": "JK-5520-BLU-M", "category": "Apparel",
              "name": "Summit Down Jacket - Blue / M", "price": 189.0, "quantity": 1}  # fmt: skip
    batch = [
        {"type": "track", "event": "Product Viewed", "anonymousId": visitor, "timestamp": at(6.2),
         "messageId": "demo-ev-1", "properties": jacket, "context": {"page": page}},
        {"type": "identify", "anonymousId": visitor, "timestamp": at(6.1),
         "messageId": "demo-ev-2", "traits": {"email": EVENTS_PERSON}},
        {"type": "track", "event": "Product Added", "anonymousId": visitor, "timestamp": at(6),
         "messageId": "demo-ev-3", "properties": jacket, "context": {"page": page}},
        {"type": "track", "event": "Product Viewed", "anonymousId": visitor, "timestamp": at(1),
         "messageId": "demo-ev-4", "properties": jacket, "context": {"page": page}},
    ]  # fmt: skip
    # No sentAt: the intake would correct the timestamps by the real clock, and the demo's
    # clock is the sample date.
    return {"batch": batch}


def post_events(settings: Settings, engine: Any, body: dict[str, Any]) -> tuple[str, int]:
    """Serve the intake on a free local port, POST `body` to /v1/batch as Segment's clients do,
    and stop; returns (the URL posted to, the HTTP status)."""
    import base64
    import json
    import urllib.request

    from .intake.setup import serving

    with serving(lambda: settings, engine) as base:
        url = f"{base}/v1/batch"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        token = base64.b64encode(f"{DEMO_WRITE_KEY}:".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return url, response.status
