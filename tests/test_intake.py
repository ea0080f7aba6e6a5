"""The event intake (issue 15, point 3): Segment's HTTP tracking API on the daemon's server.

A live server (uvicorn on 127.0.0.1, the daemon's own app and intake) over a migrated cache;
requests go over real HTTP: by hand (urllib), and from Segment's and RudderStack's official
Python libraries pointed at it unchanged.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from syncbridge.config.loader import Settings
from syncbridge.errors import ConfigError
from syncbridge.identity import resolve_pending
from syncbridge.intake.segment import Invalid, messages_of, stamped
from syncbridge.intake.setup import serving
from syncbridge.settings import load_settings
from syncbridge.store.engine import open_engine

from .fakes.http import post

REPO = Path(__file__).resolve().parents[1]
KEY = "wk_test_4f9a2c7e"
CONFIG = """
[store]
url = "{url}"
[[sources]]
name = "web"
connector = "intake"
streams = [{{ name = "events", mapping = "{mapping}" }}]
[intake]
write_keys = ["{key}"]
"""


def write_config(folder: Path, url: str, **extra: str) -> Path:
    mapping = REPO / "mappings" / "events.toml"
    path = folder / "config.toml"
    body = CONFIG.format(url=url, mapping=mapping, key=KEY)
    for key, value in extra.items():
        body = body.replace(key, value)
    path.write_text(body, encoding="utf-8")
    return path


@dataclass
class Intake:
    url: str
    engine: Engine
    settings: Settings

    def post(
        self, path: str, body: Any, key: str | None = KEY, *, basic: bool = True,
        headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if key is not None and basic:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        return post(self.url + path, data, {**sent, **(headers or {})})

    def stored(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT external_id, payload FROM source_record WHERE source = 'web'"
            )).all()  # fmt: skip
        return {key: _json(payload) for key, payload in rows}


def _json(value: Any) -> Any:
    """A JSON column's value: text on SQLite, decoded already on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def intake(tmp_path: Path, store_url: str) -> Iterator[Intake]:
    settings = load_settings(write_config(tmp_path, store_url))
    engine = open_engine(store_url)
    with serving(lambda: settings, engine) as base:
        yield Intake(base, engine, settings)
    engine.dispose()


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "anonymousId": "anon-1",
            "messageId": message_id, "properties": {"sku": "JK-1", "price": 99.0},
            "timestamp": "2026-11-30T10:00:00Z"} | fields  # fmt: skip


# --- the API's rules, without a server


def test_each_rule_names_the_field_it_concerns() -> None:
    def refused(body: dict[str, Any], kind: str = "track") -> tuple[str | None, str]:
        with pytest.raises(Invalid) as caught:
            messages_of(body, kind)
        return caught.value.field, str(caught.value)

    assert refused({"event": "x"})[0] == "userId"
    assert refused({"userId": "u1"}) == ("event", "a track message needs an event name")
    assert refused({"userId": "u1", "event": "x", "properties": [1]})[0] == "properties"
    assert refused({"userId": "u1", "event": "x", "timestamp": "yesterday"})[0] == "timestamp"
    assert refused({"userId": "u1", "event": "x", "messageId": "m" * 101})[0] == "messageId"
    assert refused({"type": "page", "userId": "u1"})[0] == "type"  # sent to /v1/track
    assert refused({"batch": [{"type": "identify", "userId": "u"}, {"type": "shout"}]},
                   "batch")[0] == "batch[1].type"  # fmt: skip
    assert refused({"batch": {"type": "track"}}, "batch")[0] == "batch"
    big = {"userId": "u1", "event": "x", "properties": {"blob": "x" * 33_000}}
    assert "at most 32768" in refused(big)[1]
    many = {"batch": [{"type": "identify", "userId": "u"}] * 2501}
    assert "at most 2500" in refused(many, "batch")[1]


def test_a_batch_shares_its_context_and_the_clock_of_the_sender_is_corrected() -> None:
    body = {"batch": [{"type": "track", "event": "x", "userId": 42,
                       "timestamp": "2026-12-01T10:00:00Z", "context": {"ip": "1.2.3.4"}}],
            "context": {"library": {"name": "analytics-python"}, "ip": "9.9.9.9"},
            "sentAt": "2026-12-01T10:00:05Z"}  # fmt: skip
    (message,) = messages_of(body, "batch")
    assert message["context"] == {"library": {"name": "analytics-python"}, "ip": "1.2.3.4"}
    received = datetime(2026, 12, 1, 10, 1, 0, tzinfo=UTC)  # the sender's clock is 55 s late
    out = stamped(message, received, body["sentAt"])
    assert out["timestamp"] == "2026-12-01T10:00:55.000Z"  # received - (sentAt - timestamp)
    assert out["originalTimestamp"] == "2026-12-01T10:00:00Z"
    assert out["receivedAt"] == "2026-12-01T10:01:00.000Z"
    assert out["userId"] == "42"  # a numeric id is stored as the string it names
    again = stamped(message, received + timedelta(seconds=3), body["sentAt"])
    assert out["messageId"] == again["messageId"]  # no messageId: one from the content


# --- a live server


@pytest.mark.postgres
def test_both_auth_styles_are_accepted_and_a_wrong_key_is_401(intake: Intake) -> None:
    assert intake.post("/v1/track", track("m1")) == (200, {"success": True})
    in_body = track("m2") | {"writeKey": KEY}
    assert intake.post("/v1/track", in_body, basic=False) == (200, {"success": True})
    status, body = intake.post("/v1/track", track("m3"), key="wk_wrong_key_1")
    assert status == 401 and body["success"] is False
    assert intake.post("/v1/track", track("m4"), key=None)[0] == 401
    stored = intake.stored()
    assert sorted(stored) == ["m1", "m2"]
    assert "writeKey" not in stored["m2"]  # a credential is never stored with the event


@pytest.mark.postgres
def test_a_bad_payload_is_400_naming_the_field_and_nothing_of_it_is_stored(
    intake: Intake,
) -> None:
    batch = {"batch": [track("ok-1"), {"type": "track", "anonymousId": "a", "messageId": "b"}]}
    status, body = intake.post("/v1/batch", batch)
    assert status == 400 and body["field"] == "batch[1].event"
    status, body = intake.post("/v1/track", None, raw=b"{not json")
    assert status == 400 and "invalid JSON" in body["message"]
    status, body = intake.post("/v1/batch", None, raw=b"[" + b" " * 600_000 + b"]")
    assert status == 400 and "larger than" in body["message"]
    assert intake.post("/v1/shout", track("x"))[0] == 404
    assert intake.stored() == {}


@pytest.mark.postgres
def test_a_repeated_message_id_is_stored_once_and_the_first_copy_wins(intake: Intake) -> None:
    assert intake.post("/v1/track", track("dup", properties={"sku": "FIRST"}))[0] == 200
    assert intake.post("/v1/track", track("dup", properties={"sku": "SECOND"}))[0] == 200
    batch = {"batch": [track("b1"), track("b1"), track("dup")]}
    assert intake.post("/v1/batch", batch)[0] == 200
    stored = intake.stored()
    assert sorted(stored) == ["b1", "dup"]
    assert stored["dup"]["properties"]["sku"] == "FIRST"
    with intake.engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM event")).scalar_one()
    assert events == 2  # one product_viewed per stored message


@pytest.mark.postgres
def test_identify_stitches_the_anonymous_events_to_the_person(intake: Intake) -> None:
    views = [track(f"v{i}", anonymousId="anon-7") for i in range(3)]
    assert intake.post("/v1/batch", {"batch": views})[0] == 200
    identify = {"type": "identify", "anonymousId": "anon-7", "userId": "7766162584384",
                "messageId": "id-1", "traits": {"email": "Pat.Lee@Example.com",
                                                "firstName": "Pat"}}  # fmt: skip
    assert intake.post("/v1/identify", identify)[0] == 200
    assert intake.post("/v1/p", {"type": "page", "anonymousId": "anon-7", "messageId": "pg",
                                 "properties": {"path": "/"}})[0] == 200  # fmt: skip
    resolve_pending(intake.engine, intake.settings.config.identity)
    with intake.engine.connect() as conn:
        profiles = conn.execute(text("SELECT id, email, attributes FROM profile")).all()
        events = conn.execute(text("SELECT DISTINCT profile_id FROM event")).scalars().all()
        count = conn.execute(text("SELECT count(*) FROM event")).scalar_one()
    assert len(profiles) == 1
    pid, email, attributes = profiles[0]
    assert email == "pat.lee@example.com" and _json(attributes)["first_name"] == "Pat"
    assert events == [pid] and count == 4  # 3 views and the page view, all the person's


def test_gzip_bodies_and_browser_preflights_are_understood(intake: Intake) -> None:
    data = gzip.compress(json.dumps({"batch": [track("gz-1")]}).encode())
    status, _ = intake.post("/v1/batch", None, raw=data, headers={"Content-Encoding": "gzip"})
    assert status == 200 and "gz-1" in intake.stored()
    bomb = gzip.compress(json.dumps({"batch": [track("big")] * 40_000}).encode())
    assert len(bomb) < 500_000  # small on the wire, far past the limit once inflated
    status, body = intake.post("/v1/batch", None, raw=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 400 and "larger than" in body["message"]
    request = urllib.request.Request(intake.url + "/v1/t", method="OPTIONS")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_segment_and_rudderstack_python_clients_work_unchanged(intake: Intake) -> None:
    from rudderstack.analytics.client import Client as RudderClient
    from segment.analytics.client import Client as SegmentClient

    errors: list[Any] = []
    segment = SegmentClient(KEY, host=intake.url, sync_mode=True, gzip=True,
                            on_error=lambda e, batch: errors.append(e))  # fmt: skip
    segment.identify("u-1", {"email": "seg@example.com", "firstName": "Sig"})
    segment.track("u-1", "Product Added", {"sku": "SKU-1", "price": 10})
    segment.page("u-1", "Docs", "Home", {"url": "https://example.com/"})
    rudder = RudderClient(KEY, host=intake.url, sync_mode=True,
                          on_error=lambda e, batch: errors.append(e))  # fmt: skip
    rudder.track("u-2", "Checkout Started", {"order_id": "o-1"}, anonymous_id="anon-r")
    assert errors == []
    stored = list(intake.stored().values())
    assert sorted(m["type"] for m in stored) == ["identify", "page", "track", "track"]
    added = next(m for m in stored if m.get("event") == "Product Added")
    assert added["context"]["library"]["name"] == "analytics-python"
    assert added["receivedAt"] and added["timestamp"]


def test_ten_thousand_events_from_twenty_clients_are_all_stored(intake: Intake) -> None:
    """Every acknowledged event is in the cache: 20 clients x 25 batches x 20 events, while
    the writer groups whatever requests wait into one transaction."""
    failures: list[Any] = []

    def client(c: int) -> None:
        for b in range(25):
            batch = [track(f"c{c}-b{b}-e{e}", anonymousId=f"a{c}") for e in range(20)]
            status, body = intake.post("/v1/batch", {"batch": batch})
            if status != 200:
                failures.append((c, b, status, body))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with intake.engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM source_record")).scalar_one()
    assert count == 10_000


def test_an_intake_setup_that_cannot_work_is_refused_by_validate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    keyless = write_config(tmp_path, url, **{f'write_keys = ["{KEY}"]': "write_keys = []"})
    with pytest.raises(ConfigError, match="needs at least one write key"):
        load_settings(keyless)
    typo = write_config(tmp_path, url, **{"write_keys": "write_key"})
    with pytest.raises(ConfigError, match="did you mean 'write_keys'"):
        load_settings(typo)
    named = write_config(tmp_path, url, **{"[intake]": '[intake]\nsource = "shop"'})
    with pytest.raises(ConfigError, match="no enabled source 'shop'"):
        load_settings(named)
    short = write_config(tmp_path, url, **{KEY: "short"})
    with pytest.raises(ConfigError, match="at least 8 characters"):
        load_settings(short)


def test_write_keys_can_come_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    path = write_config(tmp_path, url)
    for value in ("wk_env_one_1,wk_env_two_2", '["wk_env_one_1", "wk_env_two_2"]'):
        settings = load_settings(path, env={"SYNCBRIDGE_INTAKE__WRITE_KEYS": value})
        keys = [k.get_secret_value() for k in settings.config.intake.write_keys]
        assert keys == ["wk_env_one_1", "wk_env_two_2"]
        assert "wk_env_one_1" not in repr(settings.config.intake)  # secrets stay hidden
