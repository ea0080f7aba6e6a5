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


def demo_config_data(db_path: Path) -> dict[str, Any]:
    """The example config with its sample-data and mapping paths made absolute."""
    data = tomllib.loads(example_config().read_text(encoding="utf-8"))
    examples = data_dir("examples")
    mappings = data_dir("mappings")
    for source in data.get("sources", []):
        for stream in source.get("streams", []):
            stream["path"] = str(examples / Path(stream["path"]).relative_to("examples"))
            stream["mapping"] = str(mappings / Path(stream["mapping"]).name)
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
    db_path: Path, env: dict[str, str] | None = None, audience: str | None = None
) -> Settings:
    """The demo's settings; with `audience`, pushes there for real with $MAILCHIMP_API_KEY."""
    data = demo_config_data(db_path)
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
