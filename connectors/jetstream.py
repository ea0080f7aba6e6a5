"""An event bus as a source: NATS JetStream, through a durable pull consumer (`connector = "nats"`).

For sites whose events already flow through a bus. Each message is a JSON object (a Segment
message, an order, a customer change) and becomes a record of the stream, keyed by
`primary_key` (default `messageId`), through the stream's mapping.

**Acknowledged only once stored.** A pull fetches up to `page_size` messages, hands them to the
engine as a page and acknowledges them only when the engine asks for the next page (the page
is committed by then) or the read ends. A read that fails takes them back at once (a NAK: the
server redelivers them to the next read); a process killed mid-page never acknowledges them,
and the server redelivers them after `ack_wait_s`. A redelivered message is the same record
with the same content: the engine stores it once. The consumer is durable, so the position
survives restarts on the server's side; each cache has its own consumer (`durable`), and two
caches fed from one stream each get every message.

**Deletes** are messages whose `deleted_field` is true (e.g. `{"id": "c42", "deleted": true}`).

    [[sources]]
    name = "bus"
    connector = "nats"
    url = "nats://127.0.0.1:4222"      # or tls://…; user:${NATS_PASSWORD}@… for credentials
    [[sources.streams]]
    name = "events"
    mapping = "mappings/events.toml"
    stream = "EVENTS"                   # the JetStream stream
    subject = "events.>"                # the consumer's filter (default: the whole stream)

The interface is a fetch / acknowledge / take back loop over a durable consumer; a Kafka
consumer group (poll, commit offsets after the write, no commit on failure) fits the same
shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
from pydantic import Field, SecretStr, field_validator

from syncbridge.connectors import DELETED, Connector, Page, SourceOptions, Stream, StreamOptions
from syncbridge.errors import FatalError
from syncbridge.prepare import record_key
from syncbridge.redaction import redact, register_url_password

log = logging.getLogger(__name__)


class NatsOptions(SourceOptions):
    url: SecretStr = SecretStr("nats://127.0.0.1:4222")
    """The server(s), comma-separated; credentials in the URL are never logged."""
    connect_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _a_url(cls, value: SecretStr) -> SecretStr:
        for server in value.get_secret_value().split(","):
            if not re.match(r"^(nats|tls|ws|wss)://", server.strip()):
                raise ValueError("a NATS server URL starts with nats://, tls://, ws:// or wss://")
            register_url_password(server.strip())
        return value


class NatsStreamOptions(StreamOptions):
    stream: str = Field(min_length=1)
    """The JetStream stream to read."""
    subject: str | None = None
    """The consumer's filter subject (default: every subject of the stream)."""
    durable: str | None = None
    """The durable consumer's name (default: syncbridge_<source>_<stream>)."""
    primary_key: list[str] = Field(default_factory=lambda: ["messageId"])
    deleted_field: str | None = None
    page_size: int = Field(default=500, ge=1, le=10_000)
    ack_wait_s: float = Field(default=30.0, gt=0)
    """A message fetched but not acknowledged within this long is delivered again."""
    fetch_wait_s: float = Field(default=0.5, gt=0)
    """How long a pull waits for messages before it ends the read."""

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class NatsStream(Stream):
    in_process_only: ClassVar[bool] = True

    def __init__(self, connector: NatsConnector, options: NatsStreamOptions) -> None:
        self.connector, self.options = connector, options
        self.name = options.name
        self.primary_key = tuple(options.primary_key)
        source = connector.source.name
        self.durable = options.durable or re.sub(
            r"[^A-Za-z0-9_-]", "_", f"syncbridge_{source}_{options.name}"
        )

    def position(self, cursor: Any | None) -> Any:
        """The newest stream sequence stored: the engine never saves an older one."""
        return _sequence(cursor) or None

    def read(self, cursor: Any | None) -> Iterator[Page]:
        """Pages of messages until a fetch finds none; the cursor is the newest stream
        sequence stored (for status; the consumer keeps the position)."""
        loop = asyncio.new_event_loop()
        client = _Client(self.connector.options, self.options, self.durable, loop)
        newest = _sequence(cursor)
        pending: list[Any] = []
        try:
            client.open()
            client.subscribe()
            while True:
                messages = client.fetch()
                if not messages:
                    break
                records, errors, newest = self._page(messages, newest)
                pending = messages
                yield Page(records, {"sequence": newest}, errors=errors)
                client.ack(pending)  # the engine asked for more: that page is committed
                pending = []
        finally:
            if pending:  # the page was not stored: take it back for the next read
                client.nak(pending)
            client.close()
            loop.close()

    def _page(
        self, messages: list[Any], newest: int
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], int]:
        records, errors = [], []
        for message in messages:
            sequence = message.metadata.sequence.stream
            newest = max(newest, sequence)
            where = f"{self.options.stream} message {sequence}"
            try:
                record = orjson.loads(message.data)
            except orjson.JSONDecodeError as exc:
                errors.append((where, f"not JSON: {exc}"))
                continue
            if not isinstance(record, dict):
                errors.append((where, "a message must be a JSON object"))
                continue
            if record_key(record, self.primary_key) is None:
                errors.append((where, f"no {', '.join(self.primary_key)} to key the record by"))
                continue
            field = self.options.deleted_field
            if field and record.get(field) in (True, "true", "1", 1):
                record[DELETED] = True
            records.append(record)
        return records, errors, newest


class _Client:
    """nats-py (asyncio) driven from the engine's synchronous read, on a private loop."""

    def __init__(self, source: NatsOptions, stream: NatsStreamOptions, durable: str,
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        self.source, self.stream, self.durable, self.loop = source, stream, durable, loop
        self.nc: Any = None
        self.sub: Any = None

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def open(self) -> None:
        try:
            import nats
        except ImportError:
            raise FatalError(
                "the nats connector needs nats-py: pip install 'syncbridge[nats]'"
            ) from None
        servers = [s.strip() for s in self.source.url.get_secret_value().split(",")]
        where = f"NATS at {redact(', '.join(servers))}"
        try:
            self.nc = self._run(nats.connect(
                servers=servers, connect_timeout=self.source.connect_timeout_s,
                allow_reconnect=False, max_reconnect_attempts=0,
                error_cb=_quiet, closed_cb=None,
            ))  # fmt: skip
        except Exception as exc:
            raise FatalError(f"cannot connect to {where}: {redact(_why(exc))}") from None

    def subscribe(self) -> None:
        """The durable pull consumer (created on first use, with this stream's settings)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=self.stream.ack_wait_s,
            filter_subject=self.stream.subject,
        )  # fmt: skip
        js = self.nc.jetstream()
        where = f"NATS stream {self.stream.stream!r}"
        try:
            subject = self.stream.subject or ""
            subscribing = js.pull_subscribe(
                subject, durable=self.durable, stream=self.stream.stream, config=config
            )
            self.sub = self._run(subscribing)
        except Exception as exc:
            self.close()
            raise FatalError(f"cannot read {where}: {redact(_why(exc))}") from None

    def look_up(self) -> None:
        """The stream exists and this login may see it (no consumer is created)."""
        try:
            self._run(self.nc.jetstream().stream_info(self.stream.stream))
        except Exception as exc:
            raise FatalError(
                f"cannot read NATS stream {self.stream.stream!r}: {redact(_why(exc))}"
            ) from None

    def fetch(self) -> list[Any]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            return list(
                self._run(self.sub.fetch(self.stream.page_size, timeout=self.stream.fetch_wait_s))
            )
        except NatsTimeout:
            return []
        except TimeoutError:
            return []

    def ack(self, messages: list[Any]) -> None:
        self._run(_each(m.ack() for m in messages))

    def nak(self, messages: list[Any]) -> None:
        try:
            self._run(_each(m.nak() for m in messages))
        except Exception as exc:  # the server redelivers after ack_wait anyway
            log.warning("could not hand %d message(s) back to NATS: %s", len(messages), _why(exc))

    def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing to save
                self._run(self.nc.close())


def _sequence(cursor: Any) -> int:
    """The stream sequence a saved cursor holds ({"sequence": n}; 0: none yet)."""
    value = cursor.get("sequence") if isinstance(cursor, dict) else None
    return value if isinstance(value, int) else 0


async def _each(calls: Any) -> None:
    """Await these side by side (gathered inside the loop that runs them)."""
    await asyncio.gather(*calls)


async def _quiet(exc: Exception) -> None:
    """nats-py reports connection errors here as well as raising them: raised is enough."""


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class NatsConnector(Connector):
    source_options = NatsOptions
    stream_options = NatsStreamOptions

    def streams(self) -> list[Stream]:
        assert isinstance(self.options, NatsOptions)
        return [
            NatsStream(self, s) for s in self.stream_configs if isinstance(s, NatsStreamOptions)
        ]

    def check(self) -> None:
        """Connect and look the streams up (`validate --connect`)."""
        for stream in self.streams():
            assert isinstance(stream, NatsStream)
            loop = asyncio.new_event_loop()
            client = _Client(self.options, stream.options, stream.durable, loop)  # type: ignore[arg-type]
            try:
                client.open()
                client.look_up()
            finally:
                client.close()
                loop.close()
