"""The profile cache's schema (SQLModel). Changes go through Alembic migrations in `migrations/`.

Natural keys carry unique constraints so that every write can be an idempotent upsert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel


class CacheTable(SQLModel):
    """Base of the cache's tables: says to type checkers that each has a Core `__table__`,
    which the bulk write paths use (SQLAlchemy sets it; SQLModel does not declare it)."""

    __table__: ClassVar[Table]


# BIGINT on PostgreSQL, but INTEGER on SQLite so that the id is the rowid alias (autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index)
    )


class SourceRecord(CacheTable, table=True):
    """One raw record as a source last sent it, with what its mapping made of it."""

    __tablename__ = "source_record"
    __table_args__ = (
        UniqueConstraint("source", "stream", "external_id", name="uq_source_record_key"),
        Index("ix_source_record_profile", "profile_id"),
        Index("ix_source_record_pending", "pending"),
    )

    id: int | None = _id()
    source: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    external_id: str = Field(max_length=500)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(max_length=32)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    identifiers: list[list[str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    source_ts: datetime | None = _ts()
    deleted: bool = False
    pending: bool = True
    """True until identity resolution has placed this record's change into a profile."""
    profile_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    updated_at: datetime | None = _ts()
    run_id: int | None = None


class Identity(CacheTable, table=True):
    """A join key (valid email, phone, external id) and the profile that holds it."""

    __tablename__ = "identity"
    __table_args__ = (Index("ix_identity_profile", "profile_id"),)

    kind: str = Field(primary_key=True, max_length=100)
    value: str = Field(primary_key=True, max_length=500)
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False))


class Profile(CacheTable, table=True):
    """One person, resolved from all records that share identifiers."""

    __tablename__ = "profile"
    __table_args__ = (
        Index("ix_profile_dirty", "dirty"),
        Index("ix_profile_email", "email"),
    )

    id: int | None = _id()
    email: str | None = Field(default=None, max_length=320)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attribute_sources: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    record_count: int = 0
    created_at: datetime | None = _ts()
    updated_at: datetime | None = _ts()
    dirty: bool = True
    """The rules stage's work set: claimed from the journal (and set by identity resolution
    as it writes), cleared by the rules stage once evaluated."""
    deleted: bool = False
    """Set when its last record went away or it merged into another; the push removes it."""
    merged_into: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ProfileMerge(CacheTable, table=True):
    """A record of two profiles becoming one (the older id survives)."""

    __tablename__ = "profile_merge"

    id: int | None = _id()
    survivor_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    merged_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    merged_at: datetime | None = _ts()
    run_id: int | None = None


class Event(CacheTable, table=True):
    """A behaviour event (purchase, product viewed, …) derived from a source record."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("record_id", "ordinal", name="uq_event_record_ordinal"),
        Index("ix_event_profile_type_time", "profile_id", "type", "occurred_at"),
    )

    id: int | None = _id()
    record_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    ordinal: int = 0
    profile_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    type: str = Field(max_length=100)
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class StreamCursor(CacheTable, table=True):
    """The saved position of one stream, committed together with the data it covers."""

    __tablename__ = "stream_cursor"

    source: str = Field(primary_key=True, max_length=100)
    stream: str = Field(primary_key=True, max_length=100)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    updated_at: datetime | None = _ts()


class Run(CacheTable, table=True):
    """One cycle of the pipeline, with what it did."""

    __tablename__ = "run"

    id: int | None = _id()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    status: str = Field(default="running", max_length=20)
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    message: str | None = None


class RecordErrorRow(CacheTable, table=True):
    """A value (or record) that could not be used, with where and why."""

    __tablename__ = "record_error"
    __table_args__ = (Index("ix_record_error_record", "source", "stream", "external_id"),)

    id: int | None = _id()
    run_id: int | None = Field(default=None, index=True)
    source: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    external_id: str | None = Field(default=None, max_length=500)
    field: str | None = Field(default=None, max_length=500)
    value: str | None = None
    message: str
    created_at: datetime | None = _ts()


class CacheSetting(CacheTable, table=True):
    """Fingerprints of the settings the cache was built with (e.g. identity rules)."""

    __tablename__ = "cache_setting"

    key: str = Field(primary_key=True, max_length=100)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    updated_at: datetime | None = _ts()


class MemberState(CacheTable, table=True):
    """What Mailchimp last acknowledged for one profile in one audience (written only after a
    confirmed call), and the last per-member error with the desired state it belonged to."""

    __tablename__ = "member_state"
    __table_args__ = (Index("ix_member_state_email", "audience", "email"),)

    audience: str = Field(primary_key=True, max_length=100)
    profile_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    email: str | None = Field(default=None, max_length=320)
    status: str | None = Field(default=None, max_length=20)
    merge_hash: str | None = Field(default=None, max_length=32)
    merge_fields: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    acknowledged_at: datetime | None = _ts()
    error: str | None = None
    error_hash: str | None = Field(default=None, max_length=32)
    """Hash of the desired state that failed: not retried until the profile changes."""


class AudienceMember(CacheTable, table=True):
    """Mailchimp's own view of an audience's members (read back each cycle): status is theirs."""

    __tablename__ = "audience_member"

    list_id: str = Field(primary_key=True, max_length=100)
    subscriber_hash: str = Field(primary_key=True, max_length=32)
    email: str = Field(max_length=320)
    status: str = Field(max_length=20)
    last_changed: datetime | None = _ts()
    unsubscribe_reason: str | None = None


class AudienceSync(CacheTable, table=True):
    """Per audience: the read-back watermark and the ids of the static segments used as tags."""

    __tablename__ = "audience_sync"

    list_id: str = Field(primary_key=True, max_length=100)
    members_read_until: datetime | None = _ts()
    segment_ids: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )


class ProfileRules(CacheTable, table=True):
    """What the rules made of a profile at its last evaluation, and when that can next change."""

    __tablename__ = "profile_rules"
    __table_args__ = (Index("ix_profile_rules_next_expiry", "next_expiry_at"),)

    profile_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    traits: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    content: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    explain: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    evaluated_at: datetime | None = _ts()
    next_expiry_at: datetime | None = _ts()


class SegmentMembership(CacheTable, table=True):
    """When a profile entered and left a segment (an open row: it is still a member)."""

    __tablename__ = "segment_membership"
    __table_args__ = (Index("ix_segment_membership_open", "segment", "exited_at"),)

    id: int | None = _id()
    segment: str = Field(max_length=100)
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    entered_at: datetime | None = _ts(index=True)
    exited_at: datetime | None = _ts(index=True)
    """Indexed, as `entered_at`: the status page counts the last day's entries and exits."""


class TagMembership(CacheTable, table=True):
    """When a profile got and lost a behaviour tag (an open row: it still has it), so a day's
    change of each tag can be shown (the status page) without keeping old rule results."""

    __tablename__ = "tag_membership"
    __table_args__ = (Index("ix_tag_membership_open", "tag", "exited_at"),)

    id: int | None = _id()
    tag: str = Field(max_length=100)
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    entered_at: datetime | None = _ts(index=True)
    exited_at: datetime | None = _ts(index=True)
    """Indexed, as `entered_at`: the status page counts the last day's entries and exits."""


class ShopifyWebhook(CacheTable, table=True):
    """A Shopify webhook delivery already applied (its `X-Shopify-Webhook-Id`), written in the
    transaction of its records, so that a retry (Shopify retries for about 4 hours) is answered
    without writing again, also after a restart; rows older than 48 hours are pruned."""

    __tablename__ = "shopify_webhook"

    webhook_id: str = Field(primary_key=True, max_length=100)
    received_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )


metadata = SQLModel.metadata


class Change(CacheTable, table=True):
    """One entry of the change journal: a record or a profile changed, and how (`kind`).

    Every writer appends in the same transaction as the change itself; every consumer reads
    the entries above its offset. Sequence numbers only grow (AUTOINCREMENT on SQLite, so that
    compaction emptying the table never lets a number come back)."""

    __tablename__ = "change"
    # No index beside the key: every change is appended once, and readers scan a key range.
    __table_args__ = {"sqlite_autoincrement": True}

    seq: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    kind: str = Field(max_length=40)
    subject: int = Field(sa_column=Column(BigInteger, nullable=False))


class ConsumerOffset(CacheTable, table=True):
    """How far one consumer (identity, rules, a destination) has read the journal."""

    __tablename__ = "consumer_offset"

    consumer: str = Field(primary_key=True, max_length=200)
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime | None = _ts()


class DestinationQueue(CacheTable, table=True):
    """Profiles a destination still owes its remote system: claimed from the journal by the
    destination itself, removed once they are acknowledged."""

    __tablename__ = "destination_queue"

    destination: str = Field(primary_key=True, max_length=200)
    profile_id: int = Field(sa_column=Column(BigInteger, primary_key=True))


class DaemonJob(CacheTable, table=True):
    """One daemon job (a source's pull, a consumer, a destination): who holds its lease until
    when (several agents on PostgreSQL), when it runs next and how its last run went. Written
    by the daemon, read by `syncbridge status` from any process."""

    __tablename__ = "daemon_job"

    job: str = Field(primary_key=True, max_length=200)
    holder: str | None = Field(default=None, max_length=300)
    """The agent holding the lease: `host pid=123`; None when released."""
    lease_expires_at: datetime | None = _ts()
    next_run_at: datetime | None = _ts()
    last_started_at: datetime | None = _ts()
    last_finished_at: datetime | None = _ts()
    last_success_at: datetime | None = _ts()
    last_status: str | None = Field(default=None, max_length=20)
    """`running`, `ok` or `failed`."""
    last_error: str | None = None
    failures: int = 0
    """Failed runs in a row (0 after a success)."""
    failing_since: datetime | None = _ts()
    run_id: int | None = None
    """The run row of the job's current or last run."""
