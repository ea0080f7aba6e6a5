"""The daemon's read-only status page at `/`: what an operator or a marketer checks first.

Plain server-rendered HTML with a little CSS and no script; it reloads itself every 15 s.
It shows the sources' streams (records, deletes, errors, position, last read), the journal's
consumers and their lag, the daemon's jobs (holder, next run, last result), segments with
their members and the day's entries and exits, behaviour tags with their members and the
day's gains and losses, and the recent per-record and per-member errors with the reason. With
`[daemon] admin_token` set it asks for the same token as the admin endpoints (`Authorization:
Bearer`, or `?token=` from a browser's address bar); without one it is open, like /metrics.

Every number is also a `data-*` attribute of its cell, so a test (or a scraper) reads the page
without parsing the layout; the numbers come from the same queries as `syncbridge status`.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, func, select
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..store.tables import MemberState, Profile, SegmentMembership, TagMembership
from . import status as daemon_status

REFRESH_S = 15
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2433;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:24px 0 8px}
.muted{color:#6b7280}table{border-collapse:collapse;background:#fff;min-width:480px}
th,td{padding:4px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b91c1c}.ok{color:#047857}.grid{display:flex;flex-wrap:wrap;gap:24px}
"""


def page_routes(engine: Engine, token: str | None) -> list[BaseRoute]:
    expected = token.encode() if token else None

    def allowed(request: Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
        given = given or request.query_params.get("token", "").encode()
        return hmac.compare_digest(given, expected)

    def page(request: Request) -> Response:
        if not allowed(request):
            return HTMLResponse(
                "<p>This page needs the admin token: <code>/?token=…</code> or "
                "<code>Authorization: Bearer …</code> (<code>[daemon] admin_token</code>).</p>",
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="syncbridge"'},
            )  # fmt: skip
        return HTMLResponse(render(page_data(engine)))

    return [Route("/", page, methods=["GET"])]


def page_data(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """What the page shows, read from the cache (as `syncbridge status` reads it)."""
    now = now or datetime.now(UTC)
    view = views.status(engine, runs=5, errors=10)
    return {
        "now": now,
        "status": view,
        "jobs": daemon_status.jobs(engine),
        "segments": views.segment_counts(engine),
        "segment_day": segment_changes(engine, now - timedelta(days=1)),
        "tags": views.tag_counts(engine),
        "tag_day": tag_changes(engine, now - timedelta(days=1)),
        "member_errors": member_errors(engine),
    }


def segment_changes(engine: Engine, since: datetime) -> dict[str, tuple[int, int]]:
    """Per segment: (profiles that entered, profiles that left) since `since`."""
    table = SegmentMembership.__table__
    return _changes(engine, table, table.c.segment, since)


def tag_changes(engine: Engine, since: datetime) -> dict[str, tuple[int, int]]:
    """Per behaviour tag: (profiles that got it, profiles that lost it) since `since`."""
    table = TagMembership.__table__
    return _changes(engine, table, table.c.tag, since)


def _changes(
    engine: Engine, table: Table, name: ColumnElement[str], since: datetime
) -> dict[str, tuple[int, int]]:
    c = table.c
    out: dict[str, tuple[int, int]] = {}
    with engine.connect() as conn:
        entered = _counted_since(conn, name, c.entered_at, since)
        left = _counted_since(conn, name, c.exited_at, since)
    for value, n in entered:
        out[value] = (int(n), 0)
    for value, n in left:
        out[value] = (out.get(value, (0, 0))[0], int(n))
    return out


def _counted_since(
    conn: Connection, name: ColumnElement[str], moment: ColumnElement[Any], since: datetime
) -> list[Any]:
    """(name, rows) of the rows whose `moment` is at or after `since`, read through the index on
    `moment`: the window is a day, the history every day since the cache began. SQLite would
    rather walk the (name, exited_at) index to group without sorting, reading the whole
    history; a subquery it may not flatten (LIMIT -1, "no limit" there) keeps it on the time
    index. PostgreSQL picks the time index by itself."""
    inner = select(name.label("name")).where(moment >= since)
    if conn.dialect.name == "sqlite":
        inner = inner.limit(-1)
    window = inner.subquery()
    return list(conn.execute(select(window.c.name, func.count()).group_by(window.c.name)).all())


def member_errors(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """Members Mailchimp refused, newest first: audience, address, reason."""
    s, p = MemberState.__table__.c, Profile.__table__.c
    query = (
        select(s.audience, s.email, p.email.label("profile_email"), s.error, s.acknowledged_at)
        .join(Profile.__table__, p.id == s.profile_id)
        .where(s.error.is_not(None))
        .order_by(s.acknowledged_at.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def render(data: dict[str, Any]) -> str:
    view = data["status"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        "<title>syncbridge status</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>syncbridge</h1>",
        f"<p class=muted>As of {_when(data['now'])} UTC · refreshes every {REFRESH_S} s · "
        f'<span data-profiles="{view.profiles.get("live", 0)}">'
        f"{view.profiles.get('live', 0):,} live profiles</span>, "
        f"{view.profiles.get('merges', 0):,} merges · journal head {view.journal_head:,}</p>",
    ]
    parts.append("<h2>Sources</h2>")
    parts.append(_table(
        ["stream", "records", "deleted", "errors", "position", "last read"],
        [[_text(s["stream"]), _num(s["records"], "records"), _num(s["deleted"], "deleted"),
          _num(s["errors"], "errors", bad=True), _text(s.get("cursor") or ""),
          _text(_when(s.get("cursor_saved")))] for s in view.streams],
        keys=[s["stream"] for s in view.streams], key_name="stream",
    ))  # fmt: skip
    parts.append("<div class=grid><div><h2>Journal consumers</h2>")
    parts.append(_table(
        ["consumer", "offset", "lag", "claimed"],
        [[_text(c["consumer"]), _num(c["offset"], "offset"), _num(c["lag"], "lag", bad=True),
          _num(c.get("claimed") or 0, "claimed")] for c in view.consumers],
        keys=[c["consumer"] for c in view.consumers], key_name="consumer",
    ))  # fmt: skip
    parts.append("</div><div><h2>Jobs</h2>")
    parts.append(_table(
        ["job", "held by", "next run", "last result", "failures"],
        [[_text(j["job"]), _text(j["holder"] or "none"), _text(_when(j["next_run_at"])),
          _result(j), _num(j["failures"] or 0, "failures", bad=True)] for j in data["jobs"]],
        keys=[j["job"] for j in data["jobs"]], key_name="job",
    ))  # fmt: skip
    parts.append("</div></div><div class=grid><div><h2>Segments</h2>")
    day = data["segment_day"]
    segments = sorted(set(data["segments"]) | set(day))
    parts.append(_table(
        ["segment", "members", "entered (24 h)", "left (24 h)"],
        [[_text(name), _num(data["segments"].get(name, 0), "members"),
          _num(day.get(name, (0, 0))[0], "entered"), _num(day.get(name, (0, 0))[1], "left")]
         for name in segments],
        keys=segments, key_name="segment",
    ))  # fmt: skip
    parts.append("</div><div><h2>Behaviour tags</h2>")
    tag_day = data["tag_day"]
    counts = {t: data["tags"].get(t, 0) for t in set(data["tags"]) | set(tag_day)}
    tags = sorted(counts, key=lambda t: (-counts[t], t))
    parts.append(_table(
        ["tag", "members", "got it (24 h)", "lost it (24 h)"],
        [[_text(t), _num(counts[t], "members"), _num(tag_day.get(t, (0, 0))[0], "entered"),
          _num(tag_day.get(t, (0, 0))[1], "left")] for t in tags],
        keys=tags, key_name="tag",
    ))  # fmt: skip
    parts.append("</div></div><h2>Recent record errors</h2>")
    parts.append(_table(
        ["when", "stream", "record", "field", "value", "why"],
        [[_text(_when(e.get("created_at"))), _text(f"{e['source']}/{e['stream']}"),
          _text(e.get("external_id") or ""), _text(e.get("field") or ""),
          _text(str(e.get("value") or "")[:60]), _text(e.get("message") or "")]
         for e in view.recent_errors],
    ))  # fmt: skip
    parts.append("<h2>Members Mailchimp refused</h2>")
    parts.append(_table(
        ["when", "audience", "address", "why"],
        [[_text(_when(e["acknowledged_at"])), _text(e["audience"]),
          _text(e["email"] or e["profile_email"] or ""), _text(e["error"] or "")]
         for e in data["member_errors"]],
    ))  # fmt: skip
    parts.append("</body></html>")
    return "".join(parts)


def _table(
    header: list[str], rows: list[list[str]], keys: list[str] | None = None, key_name: str = ""
) -> str:
    if not rows:
        return "<p class=muted>none</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        key = f' data-{key_name}="{escape(keys[index])}"' if keys else ""
        body.append(f"<tr{key}>{''.join(row)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _text(value: Any) -> str:
    return f"<td>{escape(str(value))}</td>"


def _num(value: Any, name: str, bad: bool = False) -> str:
    number = int(value or 0)
    style = " bad" if bad and number else ""
    return f'<td class="n{style}" data-{name}="{number}">{number:,}</td>'


def _result(job: dict[str, Any]) -> str:
    status = job.get("last_status") or ""
    if status == "failed":
        why = (job.get("last_error") or "")[:120]
        return f"<td class=bad>failed: {escape(why)}</td>"
    return f"<td class={'ok' if status == 'ok' else 'muted'}>{escape(status)}</td>"


def _when(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value[:19]
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return str(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))
