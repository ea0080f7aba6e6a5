"""Finding profiles for `profiles show` and `profiles list` (read-only; the CLI renders).

A person is looked up by whatever the operator has at hand, each form through an index:

- `#123` or `id:123`: a profile id (a merged-away id leads to the profile it merged into);
- an email, trimmed and lower-cased as ingestion does: the email identity, the profiles whose
  primary email it is, and, for an *invalid* address (never a join key, so several profiles
  may hold it), the records that carry it;
- a phone number, cleaned to E.164 with the default region as ingestion does;
- an external id `namespace:value` as the mapping names it (`shopify:customer:7101116718867`,
  `salesforce:contact:0035g00000ln08GAAQ`; stored as identity kind `ext:<namespace>`);
- a record key `source/stream/key`, as `profiles show` prints where an attribute came from.

Several matches are all returned (with how each matched), never one picked silently. Scans of
record attributes (invalid emails, phones when phones are no join key) and the "did you mean"
candidates are bounded by LIMIT.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, cast, exists, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB

from .cleaning import clean_phone, normalize_email
from .store.tables import (
    Identity,
    Profile,
    ProfileRules,
    RecordErrorRow,
    SegmentMembership,
    SourceRecord,
)

R = SourceRecord.__table__.c
P = Profile.__table__.c
I = Identity.__table__.c  # noqa: E741
ERR = RecordErrorRow.__table__.c
RULES = ProfileRules.__table__.c
SEG = SegmentMembership.__table__.c

SCAN_LIMIT = 50
"""At most this many records are taken from a scan of record attributes."""
SUGGESTION_CANDIDATES = 500
_PROFILE_ID = re.compile(r"(?:#|id:)\s*(\d+)", re.IGNORECASE)
_PHONE_CHARS = re.compile(r"\+?[\d\s().\-/]{7,}")
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][\w.-]*")
_MAX_MERGE_HOPS = 20


@dataclass
class Matches:
    """The live profiles a query found, each with how it matched (e.g. "email")."""

    query: str
    kinds: list[str]
    """What the query was read as (for a "nothing found" message)."""
    found: dict[int, list[str]] = field(default_factory=dict)

    def add(self, profile_id: int | None, how: str) -> None:
        if profile_id is not None and how not in self.found.setdefault(profile_id, []):
            self.found[profile_id].append(how)

    @property
    def ids(self) -> list[int]:
        return sorted(self.found)


def find_profiles(engine: Engine, query: str, region: str | None = "US") -> Matches:
    """Every live profile `query` names (see the module docstring for the forms)."""
    text = query.strip()
    with engine.connect() as conn:
        if m := _PROFILE_ID.fullmatch(text):
            matches = Matches(text, ["profile id"])
            pid, how = _follow_merges(conn, int(m.group(1)))
            matches.add(pid, how)
            return matches
        if "@" in text:
            matches = Matches(text, ["email"])
            _by_email(conn, text, matches, scan_records=True)
            return matches
        matches = Matches(text, [])
        if _PHONE_CHARS.fullmatch(text):
            try:
                phone = clean_phone(text, region)
            except ValueError:
                phone = None
            if phone is not None:
                matches.kinds.append(f"phone {phone}")
                _by_phone(conn, phone, matches)
        if ":" in text:
            matches.kinds.append("external id")
            _by_external_id(conn, text, matches)
        if text.count("/") >= 2:
            matches.kinds.append("record key")
            _by_record_key(conn, text, matches)
        # A bare value may be an invalid email ("n/a"): looked up last, records scanned only
        # when nothing else matched.
        matches.kinds.append("email")
        _by_email(conn, text, matches, scan_records=not matches.found)
    return matches


def _follow_merges(conn: Connection, pid: int) -> tuple[int | None, str]:
    how = "profile id"
    for _ in range(_MAX_MERGE_HOPS):
        row = conn.execute(select(P.deleted, P.merged_into).where(P.id == pid)).first()
        if row is None:
            return None, how
        if row.merged_into is None:
            return (None, how) if row.deleted else (pid, how)
        how = f"profile id (merged into {row.merged_into})"
        pid = row.merged_into
    return None, how


def _live(conn: Connection, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = conn.execute(select(P.id).where(P.id.in_(ids), P.deleted.is_(False)))
    return set(rows.scalars())


def _by_email(conn: Connection, text: str, matches: Matches, scan_records: bool) -> None:
    email, valid = normalize_email(text)
    if valid:
        pid = conn.execute(
            select(I.profile_id).where(I.kind == "email", I.value == email)
        ).scalar_one_or_none()
        matches.add(pid, "email")
    primary = conn.execute(
        select(P.id).where(P.email == email, P.deleted.is_(False)).limit(SCAN_LIMIT)
    ).scalars()
    for pid in primary:
        matches.add(pid, "email" if valid else "invalid email")
    if not valid and scan_records:
        held = conn.execute(
            select(R.profile_id)
            .where(R.attributes["email"].as_string() == email, R.deleted.is_(False))
            .limit(SCAN_LIMIT)
        ).scalars()
        for pid in _live(conn, {p for p in held if p is not None}):
            matches.add(pid, "invalid email on a record")


def _by_phone(conn: Connection, phone: str, matches: Matches) -> None:
    pid = conn.execute(
        select(I.profile_id).where(I.kind == "phone", I.value == phone)
    ).scalar_one_or_none()
    matches.add(pid, "phone")
    if pid is None:  # phones are no join key unless identity.match_on_phone: scan records
        held = conn.execute(
            select(R.profile_id)
            .where(R.attributes["phone"].as_string() == phone, R.deleted.is_(False))
            .limit(SCAN_LIMIT)
        ).scalars()
        for found in _live(conn, {p for p in held if p is not None}):
            matches.add(found, "phone on a record")


def _by_external_id(conn: Connection, text: str, matches: Matches) -> None:
    """`shopify:customer:7101` may be namespace `shopify:customer`, value `7101` or namespace
    `shopify`, value `customer:7101`: every split is one primary-key lookup."""
    body = text.removeprefix("ext:")
    for at in [i for i, ch in enumerate(body) if ch == ":"]:
        namespace, value = body[:at], body[at + 1 :]
        pid = conn.execute(
            select(I.profile_id).where(I.kind == f"ext:{namespace}", I.value == value)
        ).scalar_one_or_none()
        matches.add(pid, f"{namespace} id")


def _by_record_key(conn: Connection, text: str, matches: Matches) -> None:
    source, stream, key = text.split("/", 2)
    row = conn.execute(
        select(R.profile_id, R.deleted).where(
            R.source == source, R.stream == stream, R.external_id == key
        )
    ).first()
    if row is not None and not row.deleted:
        for pid in _live(conn, {row.profile_id} if row.profile_id is not None else set()):
            matches.add(pid, f"record {source}/{stream}")


def suggest_email(engine: Engine, query: str) -> str | None:
    """A close email of a live profile, for "did you mean": candidates share the address's
    first three characters or its local part (index range scans, at most a few hundred)."""
    email, _ = normalize_email(query)
    if len(email) < 3:
        return None
    local = email.split("@", 1)[0]
    candidates: set[str] = set()
    with engine.connect() as conn:
        for prefix in {email[:3], local + "@"}:
            rows = conn.execute(
                select(P.email)
                .where(P.email >= prefix, P.email < prefix + "\uffff", P.deleted.is_(False))
                .limit(SUGGESTION_CANDIDATES)
            ).scalars()
            candidates.update(e for e in rows if e)
    candidates.discard(email)
    close = difflib.get_close_matches(email, sorted(candidates), n=1, cutoff=0.75)
    return close[0] if close else None


def summaries(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    """For each profile: id, email, name, sources, record count, record errors (bulk queries)."""
    if not ids:
        return []
    with engine.connect() as conn:
        heads = conn.execute(
            select(P.id, P.email, P.attributes).where(P.id.in_(ids)).order_by(P.id)
        ).all()
        per_source = conn.execute(
            select(R.profile_id, R.source, func.count())
            .where(R.profile_id.in_(ids), R.deleted.is_(False))
            .group_by(R.profile_id, R.source)
        ).all()
        errors = conn.execute(
            select(R.profile_id, func.count())
            .join(
                RecordErrorRow.__table__,
                and_(
                    ERR.source == R.source, ERR.stream == R.stream, ERR.external_id == R.external_id
                ),
            )
            .where(R.profile_id.in_(ids))
            .group_by(R.profile_id)
        ).all()
    sources: dict[int, dict[str, int]] = {}
    for pid, source, n in per_source:
        sources.setdefault(pid, {})[source] = int(n)
    error_counts = {pid: int(n) for pid, n in errors}
    out = []
    for pid, email, attributes in heads:
        attrs = attributes or {}
        name = " ".join(str(attrs[k]) for k in ("first_name", "last_name") if attrs.get(k))
        out.append({
            "id": pid, "email": email, "name": name,
            "sources": sorted(sources.get(pid, {})),
            "records": sum(sources.get(pid, {}).values()),
            "errors": error_counts.get(pid, 0),
        })  # fmt: skip
    return out


@dataclass(frozen=True)
class ProfileFilter:
    """`profiles list`'s filters; all given ones must hold."""

    source: str | None = None
    segment: str | None = None
    tag: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    has_errors: bool = False
    invalid_email: bool = False
    limit: int = 20


def parse_attribute_filter(text: str) -> tuple[str, str]:
    """`key=value` → (key, value); ValueError saying what is wrong."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _ATTRIBUTE_KEY.fullmatch(key):
        raise ValueError(f"--attribute {text!r}: expected KEY=VALUE, e.g. city=Boston")
    return key, value.strip()


def list_profiles(engine: Engine, filters: ProfileFilter) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` live profiles (by id) that pass every filter, summarised; and whether
    more pass. One query with a LIMIT, then the summaries of that page."""
    with engine.connect() as conn:
        query = select(P.id).where(P.deleted.is_(False))
        for condition in _conditions(conn, filters):
            query = query.where(condition)
        ids = list(conn.execute(query.order_by(P.id).limit(filters.limit + 1)).scalars())
    more = len(ids) > filters.limit
    return summaries(engine, ids[: filters.limit]), more


def _conditions(conn: Connection, f: ProfileFilter) -> list[ColumnElement[bool]]:
    dialect = conn.dialect.name
    out: list[ColumnElement[bool]] = []
    if f.source is not None:
        out.append(exists().where(R.profile_id == P.id, R.source == f.source, R.deleted.is_(False)))
    if f.segment is not None:
        out.append(
            exists().where(
                SEG.profile_id == P.id, SEG.segment == f.segment, SEG.exited_at.is_(None)
            )
        )
    if f.tag is not None:
        out.append(exists().where(RULES.profile_id == P.id, _list_has(RULES.tags, f.tag, dialect)))
    for key, value in f.attributes:
        out.append(_attribute_is(P.attributes, key, value, dialect))
    if f.has_errors:
        out.append(
            exists().where(
                R.profile_id == P.id,
                ERR.source == R.source,
                ERR.stream == R.stream,
                ERR.external_id == R.external_id,
            )
        )
    if f.invalid_email:  # a valid email is always an identity of its live profile
        out.append(P.email.is_not(None))
        out.append(~exists().where(I.kind == "email", I.value == P.email))
    return out


def _list_has(column: Any, item: str, dialect: str) -> ColumnElement[bool]:
    """A JSON list column holds `item`."""
    if dialect == "postgresql":
        return cast(column, JSONB).op("@>")(cast([item], JSONB))  # type: ignore[no-any-return]
    items = func.json_each(column).table_valued("value")
    return exists(select(items.c.value).where(items.c.value == item))


def _attribute_is(column: Any, key: str, value: str, dialect: str) -> ColumnElement[bool]:
    """The attribute `key` equals `value` as typed: the text, or `true`/`false`, or a number.

    PostgreSQL's `->>` gives every scalar as its JSON text (`true`, `4`, `Boston`); SQLite's
    `json_extract` gives SQL values (1 for true), so its JSON type is checked as well."""
    element = column[key]
    if dialect == "postgresql":
        return element.as_string() == value  # type: ignore[no-any-return]
    path = '$."' + key + '"'
    kind = func.json_type(column, path)
    options: list[ColumnElement[bool]] = [and_(kind == "text", element.as_string() == value)]
    if value in ("true", "false"):
        options.append(kind == value)
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        options.append(and_(kind.in_(("integer", "real")), element.as_float() == number))
    return or_(*options)
