"""The NATS JetStream source (issue 15, point 5) against the real server on 127.0.0.1:4222.

Every test gets a stream of its own (and each cache a durable consumer of its own), so that
workers and tests never read each other's messages. Beyond the contract: a message is
acknowledged only once its page is stored (a killed read's messages come back), and a bad
message is a per-record error that is not delivered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syncbridge.config.loader import Settings
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import RecordErrorRow, SourceRecord

from ..builders import settings_from
from .contract import ConnectorContract, Harness, people

nats = pytest.importorskip("nats")

MAPPING = """
[identifiers]
email = "email"
external = { "bus:customer" = "id" }
[attributes]
first_name = "first_name"
signed_up = { field = "signed_up", type = "date" }
"""
SECRET = "s3cr3t-Pa55word"
SERVER = ("127.0.0.1", 4222)


def _server_up() -> bool:
    try:
        with socket.create_connection(SERVER, timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _server_up(), reason="no NATS server on 127.0.0.1:4222")


class NatsHarness(Harness):
    secret = SECRET

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        (tmp_path / "customers.toml").write_text(MAPPING, encoding="utf-8")
        tag = uuid.uuid4().hex[:12]
        self.stream, self.subject = f"SB_{tag}", f"sb.{tag}.customers"
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect("nats://127.0.0.1:4222"))
        self.js = self.nc.jetstream()
        self.loop.run_until_complete(self.js.add_stream(name=self.stream, subjects=[self.subject]))
        self.sequences: dict[str, int] = {}

    def close(self) -> None:
        with contextlib.suppress(Exception):  # deleted by break_credentials already
            self.loop.run_until_complete(self.js.delete_stream(self.stream))
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()

    def publish(self, messages: list[Any]) -> None:
        async def send() -> None:
            for message in messages:
                data = message if isinstance(message, bytes) else json.dumps(message).encode()
                ack = await self.js.publish(self.subject, data)
                if isinstance(message, dict):
                    self.sequences[message["id"]] = ack.seq

        self.loop.run_until_complete(send())

    def put(self, people: list[dict[str, Any]]) -> None:
        self.publish([p | {"signed_up": "2026-11-01"} for p in people])

    def delete(self, ids: list[str]) -> None:
        self.publish([{"id": i, "deleted": True} for i in ids])

    def break_record(self, person_id: str) -> str:
        self.publish([{"id": person_id, "email": f"{person_id.lower()}@gmail.com",
                       "signed_up": "the fifteenth"}])  # fmt: skip
        return person_id

    def break_credentials(self) -> None:
        """The stream is gone (a revoked permission looks the same to a reader)."""
        self.loop.run_until_complete(self.js.delete_stream(self.stream))

    def stream_options(self, store_url: str) -> dict[str, Any]:
        durable = "sb_" + hashlib.sha1(store_url.encode()).hexdigest()[:12]
        return {"name": "customers", "mapping": "customers.toml", "stream": self.stream,
                "subject": self.subject, "durable": durable, "primary_key": "id",
                "deleted_field": "deleted", "page_size": self.page_size,
                "fetch_wait_s": 0.3, "ack_wait_s": 30}  # fmt: skip

    def settings(self, store_url: str) -> Settings:
        data = {
            "store": {"url": store_url},
            "ingest": {"parallel": True},  # a bus is read in-process all the same
            "sources": [{"name": "bus", "connector": "nats",
                         "url": f"nats://syncbridge:{SECRET}@127.0.0.1:4222",
                         "streams": [self.stream_options(store_url)]}],
        }  # fmt: skip
        return settings_from(data, self.dir)


class TestNatsContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[NatsHarness]:
        harness = NatsHarness(tmp_path)
        yield harness
        harness.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[NatsHarness]:
    harness = NatsHarness(tmp_path)
    yield harness
    harness.close()


def _records(url: str) -> int:
    engine = open_engine(url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(SourceRecord.__table__)).scalar_one()
    engine.dispose()
    return int(count)


def test_messages_of_a_page_that_was_not_stored_come_back(
    harness: NatsHarness, tmp_path: Path
) -> None:
    """A read that dies after fetching (the page never stored) hands its messages back."""
    from syncbridge.connectors import build_connector

    harness.put(people(1, 25))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    settings = harness.settings(url)
    stream = build_connector(settings.config.sources[0], tmp_path).streams()[0]
    pages = stream.read(None)
    first = next(pages)
    assert len(first.records) == harness.page_size
    pages.close()  # as when the writer fails: nothing of this page was acknowledged
    run_cycle(settings, open_engine(url))
    assert _records(url) == 25


def test_a_message_that_is_not_json_is_an_error_and_is_not_delivered_again(
    harness: NatsHarness, tmp_path: Path
) -> None:
    harness.put(people(1, 3))
    harness.publish([b"{not json"])
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = open_engine(url)
    run_cycle(harness.settings(url), engine)
    with engine.connect() as conn:
        errors = conn.execute(select(RecordErrorRow.__table__.c.external_id,
                                     RecordErrorRow.__table__.c.message)).all()  # fmt: skip
    assert any(f"{harness.stream} message 4" in str(where) and "not JSON" in why
               for where, why in errors), errors  # fmt: skip
    again = run_cycle(harness.settings(url), engine)
    assert again.totals.read == 0  # acknowledged with its page: not delivered forever
    assert _records(url) == 3
    engine.dispose()


def test_two_caches_each_get_every_message(harness: NatsHarness, tmp_path: Path) -> None:
    harness.put(people(1, 12))
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    for url in (first, second):
        run_cycle(harness.settings(url), open_engine(url))
    assert _records(first) == _records(second) == 12
