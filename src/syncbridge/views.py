"""Read-only views of the cache for `status` and `profiles show` (data only; the CLI renders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select

from .cleaning import normalize_email
from .cursors import is_saved_form
from .store import journal
from .store.bulk import as_utc
from .store.tables import (
    ConsumerOffset,
    DestinationQueue,
    Event,
    Identity,
    MemberState,
    Profile,
    ProfileMerge,
    ProfileRules,
    RecordErrorRow,
    Run,
    SegmentMembership,
    SourceRecord,
    StreamCursor,
)
from .store.writer_lock import Holder, current_holder

R = SourceRecord.__table__.c
P = Profile.__table__.c
E = Event.__table__.c
I = Identity.__table__.c  # noqa: E741
ERR = RecordErrorRow.__table__.c


@dataclass
class StatusView:
    runs: list[dict[str, Any]]
    streams: list[dict[str, Any]]
    profiles: dict[str, int]
    recent_errors: list[dict[str, Any]]
    audiences: list[dict[str, Any]]
    """Per audience: members by acknowledged status, and members Mailchimp refused."""
    writer: Holder | None = None
    """The process holding the cache's writer lock now (None: no one is writing)."""
    consumers: list[dict[str, Any]] = field(default_factory=list)
    """Per journal consumer: its offset, the entries above it, and its claimed work."""
    journal_head: int = 0


def status(engine: Engine, runs: int = 10, errors: int = 10) -> StatusView:
    with engine.connect() as conn:
        run_rows = (
            conn.execute(select(Run.__table__).order_by(Run.__table__.c.id.desc()).limit(runs))
            .mappings()
            .all()
        )
        counts = conn.execute(
            select(R.source, R.stream, func.count(), func.sum(case((R.deleted, 1), else_=0)))
            .group_by(R.source, R.stream)
            .order_by(R.source, R.stream)
        ).all()
        error_counts = dict(
            ((s, t), n)
            for s, t, n in conn.execute(
                select(ERR.source, ERR.stream, func.count()).group_by(ERR.source, ERR.stream)
            )
        )
        cursors = {
            (c.source, c.stream): c for c in conn.execute(select(StreamCursor.__table__)).mappings()
        }
        live = conn.execute(select(func.count()).where(P.deleted.is_(False))).scalar_one()
        consumers = consumer_view(conn)
        head = journal.head(conn)
        merges = conn.execute(select(func.count()).select_from(ProfileMerge)).scalar_one()
        recent = (
            conn.execute(select(RecordErrorRow.__table__).order_by(ERR.id.desc()).limit(errors))
            .mappings()
            .all()
        )
    streams = []
    for source, stream, total, deleted in counts:
        cursor = cursors.get((source, stream))
        streams.append(
            {
                "stream": f"{source}/{stream}",
                "records": total,
                "deleted": int(deleted or 0),
                "errors": error_counts.get((source, stream), 0),
                "cursor": _cursor_summary(cursor["value"]) if cursor else "",
                "cursor_saved": as_utc(cursor["updated_at"]) if cursor else None,
            }
        )
    m = MemberState.__table__.c
    with engine.connect() as conn:
        by_status = conn.execute(
            select(m.audience, m.status, func.count()).group_by(m.audience, m.status)
        ).all()
        refused: dict[str, int] = dict(
            conn.execute(
                select(m.audience, func.count()).where(m.error.is_not(None)).group_by(m.audience)
            ).all()
        )
    audiences: dict[str, dict[str, Any]] = {}
    for audience, member_status, n in by_status:
        entry = audiences.setdefault(audience, {"audience": audience, "statuses": {}})
        entry["statuses"][member_status or "not added"] = n
    for entry in audiences.values():
        entry["refused"] = refused.get(entry["audience"], 0)
    return StatusView(
        audiences=list(audiences.values()),
        runs=[dict(r) for r in run_rows],
        streams=streams,
        profiles={"live": live, "merges": merges},
        recent_errors=[dict(r) for r in recent],
        writer=current_holder(engine),
        consumers=consumers,
        journal_head=head,
    )


def consumer_view(conn: Connection) -> list[dict[str, Any]]:
    """Each consumer that has read the journal: where it stands and what it still holds
    (identity: records pending; rules: profiles dirty; a destination: profiles queued)."""
    offsets = conn.execute(select(ConsumerOffset.__table__)).mappings().all()
    names = [row["consumer"] for row in offsets]
    lag = journal.lags(conn, names)
    q = DestinationQueue.__table__.c
    queued: dict[str, int] = dict(
        conn.execute(select(q.destination, func.count()).group_by(q.destination)).all()
    )
    claimed = {
        journal.IDENTITY_CONSUMER: conn.execute(
            select(func.count()).where(R.pending.is_(True))
        ).scalar_one(),
        journal.RULES_CONSUMER: conn.execute(
            select(func.count()).where(P.dirty.is_(True), P.deleted.is_(False))
        ).scalar_one(),
    }
    return [
        {
            "consumer": row["consumer"],
            "offset": row["seq"],
            "lag": lag[row["consumer"]]["lag"],
            "claimed": claimed.get(row["consumer"], queued.get(row["consumer"], 0)),
            "updated_at": as_utc(row["updated_at"]),
        }
        for row in sorted(offsets, key=lambda r: _consumer_order(r["consumer"]))
    ]


def _consumer_order(name: str) -> tuple[int, str]:
    return ({journal.IDENTITY_CONSUMER: 0, journal.RULES_CONSUMER: 1}.get(name, 2), name)


def _cursor_summary(value: Any) -> str:
    """A stored cursor in a few words: the engine's mark (`{"mark", "state"}`), or an older
    shape's newest value, and how many files the state has seen."""
    if is_saved_form(value):
        state = value["state"]
        mark = "" if value["mark"] is None else f"mark {value['mark']}"
        return ", ".join(p for p in (mark, _cursor_summary(state) if state else "") if p)
    if isinstance(value, dict):
        parts = []
        if value.get("max"):
            parts.append(f"max {value['max']}")
        if value.get("files"):
            parts.append(f"{len(value['files'])} file(s) seen")
        return ", ".join(parts)
    return "" if value is None else str(value)


@dataclass
class ProfileView:
    profile: dict[str, Any]
    identifiers: list[tuple[str, str]]
    records: list[dict[str, Any]]
    events: list[dict[str, Any]]
    event_count: int
    merged_from: list[int]
    members: list[dict[str, Any]]
    """Per audience: what Mailchimp acknowledged (status, tags) and any refusal."""
    rules: dict[str, Any] | None = None
    """Traits, tags, segments and content from the last rule evaluation, with explanations."""


def find_profile(engine: Engine, email: str, events: int = 20) -> ProfileView | None:
    """The live profile holding this email (as a join key, or as its invalid primary email)."""
    normalized, _ = normalize_email(email)
    with engine.connect() as conn:
        pid = conn.execute(
            select(I.profile_id).where(I.kind == "email", I.value == normalized)
        ).scalar_one_or_none()
        if pid is None:
            pid = (
                conn.execute(
                    select(P.id).where(P.email == normalized, P.deleted.is_(False)).order_by(P.id)
                )
                .scalars()
                .first()
            )
    return None if pid is None else profile_view(engine, pid, events)


def profile_view(engine: Engine, pid: int, events: int = 20) -> ProfileView:
    """Everything the cache knows about one profile (`lookup.find_profiles` finds its id)."""
    with engine.connect() as conn:
        profile = conn.execute(select(Profile.__table__).where(P.id == pid)).mappings().one()
        identifiers = [
            (k, v)
            for k, v in conn.execute(
                select(I.kind, I.value).where(I.profile_id == pid).order_by(I.kind, I.value)
            )
        ]
        records = (
            conn.execute(
                select(R.source, R.stream, R.external_id, R.source_ts, R.attributes)
                .where(R.profile_id == pid)
                .order_by(R.source, R.stream, R.external_id)
            )
            .mappings()
            .all()
        )
        event_rows = (
            conn.execute(
                select(E.type, E.occurred_at, E.properties)
                .where(E.profile_id == pid)
                .order_by(E.occurred_at.desc())
                .limit(events)
            )
            .mappings()
            .all()
        )
        event_count = conn.execute(select(func.count()).where(E.profile_id == pid)).scalar_one()
        merged = (
            conn.execute(
                select(ProfileMerge.__table__.c.merged_id).where(
                    ProfileMerge.__table__.c.survivor_id == pid
                )
            )
            .scalars()
            .all()
        )
    with engine.connect() as conn:
        members = (
            conn.execute(
                select(MemberState.__table__).where(MemberState.__table__.c.profile_id == pid)
            )
            .mappings()
            .all()
        )
    return ProfileView(
        rules=rule_results(engine, pid),
        members=[dict(m) for m in members],
        profile=dict(profile),
        identifiers=identifiers,
        records=[dict(r) for r in records],
        events=[dict(e) for e in event_rows],
        event_count=event_count,
        merged_from=list(merged),
    )


def most_merged_email(engine: Engine) -> str | None:
    """The email of a profile built from the most sources: a good first profile to look at."""
    with engine.connect() as conn:
        row = conn.execute(
            select(R.profile_id, func.count(func.distinct(R.source)).label("n"))
            .where(R.profile_id.is_not(None), R.deleted.is_(False))
            .group_by(R.profile_id)
            .order_by(func.count(func.distinct(R.source)).desc(), func.count().desc(), R.profile_id)
            .limit(1)
        ).first()
        if row is None:
            return None
        return conn.execute(select(P.email).where(P.id == row.profile_id)).scalar_one_or_none()


def source_spread(engine: Engine) -> dict[int, int]:
    """How many live profiles draw on 1, 2, 3… distinct sources."""
    per_profile = (
        select(R.profile_id, func.count(func.distinct(R.source)).label("sources"))
        .where(R.profile_id.is_not(None), R.deleted.is_(False))
        .group_by(R.profile_id)
        .subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(per_profile.c.sources, func.count()).group_by(per_profile.c.sources)
        ).all()
    return {int(sources): int(n) for sources, n in rows}


def segment_counts(engine: Engine) -> dict[str, int]:
    """Current members per segment: open membership rows of live profiles. A profile that
    merged away or was deleted may still hold open rows until the rules stage closes them;
    it is no member."""
    m = SegmentMembership.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(m.segment, func.count())
            .join(Profile.__table__, P.id == m.profile_id)
            .where(m.exited_at.is_(None), P.deleted.is_(False))
            .group_by(m.segment)
        ).all()
    return {segment: int(n) for segment, n in rows}


def tag_counts(engine: Engine) -> dict[str, int]:
    """Live profiles per behaviour tag (from the last rule evaluation)."""
    counts: dict[str, int] = {}
    r = ProfileRules.__table__.c
    with engine.connect() as conn:
        live = select(r.tags).join(Profile.__table__, P.id == r.profile_id)
        for (tags,) in conn.execute(live.where(P.deleted.is_(False))):
            for tag in tags or []:
                counts[tag] = counts.get(tag, 0) + 1
    return counts


def segment_sample(engine: Engine, segment: str, limit: int = 10) -> list[dict[str, Any]]:
    """A few current members of a segment (live profiles only, as in `segment_counts`), with
    the values rules most often look at."""
    m = SegmentMembership.__table__.c
    r = ProfileRules.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(P.id, P.email, P.attributes, r.traits, m.entered_at)
            .join(SegmentMembership.__table__, m.profile_id == P.id)
            .join(ProfileRules.__table__, r.profile_id == P.id, isouter=True)
            .where(m.segment == segment, m.exited_at.is_(None), P.deleted.is_(False))
            .order_by(m.entered_at.desc(), P.id)
            .limit(limit)
        ).all()
    return [
        {"id": pid, "email": email, "first_name": (attrs or {}).get("first_name"),
         "traits": traits or {}, "entered_at": as_utc(entered)}
        for pid, email, attrs, traits, entered in rows
    ]  # fmt: skip


def rule_results(engine: Engine, profile_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(ProfileRules.__table__).where(
                    ProfileRules.__table__.c.profile_id == profile_id
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None
