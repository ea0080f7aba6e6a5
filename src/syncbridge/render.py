"""Rich renderings of reports for the terminal; the CLI prints what these build."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .pipeline import CycleReport
from .push.plan import Plan
from .store.bulk import as_utc
from .views import ProfileView, StatusView


def _when(value: datetime | None) -> str:
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def cycle_table(report: CycleReport) -> Table:
    table = Table(title=f"Run {report.run_id}: {report.status} in {report.seconds:.2f}s")
    for col in ("stream", "read", "unchanged", "new", "updated", "deleted", "events", "errors"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    idle = 0
    for name, s in report.streams.items():
        counts = (s.read, s.unchanged, s.inserted, s.updated, s.deleted, s.events, s.errors)
        if not any(counts):  # an unchanged file, or a source with nothing past its cursor
            idle += 1
            table.add_row(name, "-", *[""] * (len(counts) - 1))
        else:
            table.add_row(name, *map(str, counts))
    if idle:
        table.caption = "- nothing new since the last read (unchanged files are not read again)"
    return table


def remap_lines(report: CycleReport) -> list[str]:
    """One line per stream whose edited mapping was applied to its stored records."""
    return [
        f"{stream}: mapping changed, {s.remapped:,} stored records re-mapped, {s.changed:,} changed"
        for stream, s in report.remaps.items()
    ]


def identity_table(report: CycleReport) -> Table:
    r = report.resolve
    table = Table(title="Identity resolution")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (
        ("records resolved", r.records),
        ("profiles created", r.profiles_created),
        ("profiles updated", r.profiles_updated),
        ("profiles merged away", r.merges),
        ("profiles split", r.splits),
        ("profiles deleted", r.profiles_deleted),
    ):
        table.add_row(label, str(value))
    return table


def errors_table(rows: list[dict[str, Any]], title: str = "Recent record errors") -> Table:
    table = Table(title=title)
    for col in ("stream", "record", "field", "value", "problem"):
        table.add_column(col, overflow="fold")
    for e in rows:
        table.add_row(
            f"{e['source']}/{e['stream']}",
            e["external_id"] or "",
            e["field"] or "",
            (e["value"] or "")[:40],
            e["message"],
        )
    return table


def consumers_table(view: StatusView) -> Table:
    """Journal consumers: how far each has read, how much lies above, what it still holds."""
    table = Table(title=f"Change journal (newest entry {view.journal_head})")
    for col in ("consumer", "offset", "lag (its entries above)", "claimed, not done", "read"):
        table.add_column(col, justify="left" if col in ("consumer", "read") else "right")
    for c in view.consumers:
        table.add_row(
            c["consumer"], str(c["offset"]), str(c["lag"]), str(c["claimed"]),
            _when(c["updated_at"]),
        )  # fmt: skip
    return table


def status_group(view: StatusView) -> Group:
    runs = Table(title="Last runs")
    for col in ("run", "started", "took", "status", "read", "changed", "errors", "profiles+"):
        runs.add_column(col, justify="right" if col not in ("started", "status") else "left")
    for run in view.runs:
        totals = (run.get("counts") or {}).get("totals", {})
        ident = (run.get("counts") or {}).get("identity", {})
        started, finished = as_utc(run["started_at"]), as_utc(run["finished_at"])
        took = f"{(finished - started).total_seconds():.1f}s" if started and finished else ""
        changed = sum(totals.get(k, 0) for k in ("inserted", "updated", "deleted"))
        runs.add_row(
            str(run["id"]),
            _when(started),
            took,
            run["status"],
            str(totals.get("read", "")),
            str(changed),
            str(totals.get("errors", "")),
            str(ident.get("profiles_created", "")),
        )
    streams = Table(title="Streams")
    for col in ("stream", "records", "deleted", "errors", "cursor", "cursor saved"):
        streams.add_column(col)
    for s in view.streams:
        streams.add_row(
            s["stream"],
            str(s["records"]),
            str(s["deleted"]),
            str(s["errors"]),
            s["cursor"],
            _when(s["cursor_saved"]),
        )
    profiles = Table(title="Profiles")
    profiles.add_column("live")
    profiles.add_column("merges")
    p = view.profiles
    profiles.add_row(str(p["live"]), str(p["merges"]))
    writer = view.writer.describe() if view.writer is not None else "none"
    parts: list[Any] = [Text(f"writer: {writer}"), runs, streams, profiles]
    if view.consumers:
        parts.append(consumers_table(view))
    parts.append(errors_table(view.recent_errors))
    if view.audiences:
        audiences = Table(title="Mailchimp audiences (acknowledged)")
        for col in ("audience", "members by status", "refused by Mailchimp"):
            audiences.add_column(col)
        for a in view.audiences:
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(a["statuses"].items()))
            audiences.add_row(a["audience"], statuses, str(a["refused"]))
        parts.append(audiences)
    return Group(*parts)


def profile_group(
    view: ProfileView, max_records: int = 50, explain: dict[str, str] | None = None
) -> Group:
    p = view.profile
    head = Table(title=f"Profile {p['id']}: {p['email'] or '(no email)'}", show_header=True)
    head.add_column("attribute")
    head.add_column("value", overflow="fold")
    head.add_column("from", overflow="fold")
    sources = p["attribute_sources"] or {}
    for name, value in (p["attributes"] or {}).items():
        head.add_row(name, json.dumps(value, ensure_ascii=False), sources.get(name, ""))
    ids = Table(title="Identifiers")
    ids.add_column("kind")
    ids.add_column("value")
    for kind, value in view.identifiers:
        ids.add_row(kind, value)
    recs = Table(title=f"Source records ({len(view.records)})")
    for col in ("source", "stream", "id", "source time"):
        recs.add_column(col)
    for r in view.records[:max_records]:
        recs.add_row(r["source"], r["stream"], r["external_id"], _when(r["source_ts"]))
    if len(view.records) > max_records:
        recs.add_row("…", "", f"{len(view.records) - max_records} more", "")
    events = Table(title=f"Events (latest {len(view.events)} of {view.event_count})")
    for col in ("time", "type", "properties"):
        events.add_column(col, overflow="fold")
    for e in view.events:
        events.add_row(
            _when(e["occurred_at"]), e["type"], json.dumps(e["properties"], ensure_ascii=False)
        )
    parts: list[Any] = [head, ids, recs, events]
    if view.rules:
        parts.append(rules_table(view.rules, explain or view.rules.get("explain") or {}))
    for member in view.members:
        tags = ", ".join(member["tags"] or []) or "none"
        line = (f"Mailchimp audience {member['audience']}: {member['email'] or '(not added)'} "
                f"status {member['status'] or '-'}, tags {tags}")  # fmt: skip
        if member["error"]:
            line += f"; refused: {member['error']}"
        parts.append(line)
    if view.merged_from:
        parts.append(f"Merged from profiles: {', '.join(map(str, view.merged_from))}")
    return Group(*parts)


def plan_table(plan: Plan, samples: int = 5) -> Group:
    """Counts per operation, then a few sample rows of each."""
    counts = Table(title=f"Plan for audience {plan.audience.name} ({plan.audience.list_id})")
    counts.add_column("operation")
    counts.add_column("count", justify="right")
    for name, value in plan.counts().items():
        counts.add_row(name, str(value))
    sample = Table(title="Sample operations")
    for col in ("operation", "email", "status", "details"):
        sample.add_column(col, overflow="fold")
    for u in plan.upserts[:samples]:
        fields = json.dumps(u.merge_fields, ensure_ascii=False)
        sample.add_row("new member" if u.new else "update", u.member.email, u.status, fields)
    for tag, members in list(plan.tag_adds.items())[:samples]:
        shown = ", ".join(e for _, e in members[:3])
        sample.add_row("add tag", f"{len(members)} member(s)", "", f"{tag}: {shown}")
    for removal in plan.archives[:samples]:
        sample.add_row("archive", removal.email, "", "left the audience's scope")
    return Group(counts, sample)


def rules_table(rules: dict[str, Any], explain: dict[str, str]) -> Table:
    """A profile's traits, tags, segments and content, each with the rule that produced it."""
    table = Table(title="Computed by the rules")
    for col in ("kind", "name", "value", "because"):
        table.add_column(col, overflow="fold")
    for name, value in sorted((rules.get("traits") or {}).items()):
        table.add_row("trait", name, json.dumps(value, ensure_ascii=False), explain.get(name, ""))
    for tag in rules.get("tags") or []:
        table.add_row("tag", tag, "", explain.get(f"tag:{tag}", ""))
    for segment in rules.get("segments") or []:
        table.add_row("segment", segment, "member", explain.get(f"segment:{segment}", ""))
    for name, value in sorted((rules.get("content") or {}).items()):
        table.add_row("content", name, value, explain.get(f"content:{name}", ""))
    expiry = as_utc(rules.get("next_expiry_at"))
    table.caption = f"evaluated {_when(rules.get('evaluated_at'))}" + (
        f"; can next change on its own at {_when(expiry)}" if expiry else ""
    )
    return table


def counts_table(title: str, counts: dict[str, int], label: str) -> Table:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("profiles", justify="right")
    for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, str(n))
    return table


def fields_table(title: str, fields: list[dict[str, Any]]) -> Table:
    """A connector's description of an object: the columns are whatever keys it gives
    (Salesforce: name, type, label, custom, nillable; files: name, type, empty, sample)."""
    table = Table(title=f"{title} ({len(fields)} fields)")
    columns = list(dict.fromkeys(key for f in fields for key in f))
    widest = max((len(str(f.get("name", ""))) for f in fields), default=4)
    for col in columns:  # names are what a mapping copies: never cut or wrapped
        is_name = col == "name"
        table.add_column(col, no_wrap=is_name, min_width=widest if is_name else None)
    for f in fields:
        table.add_row(*(_cell(f.get(col)) for col in columns))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else str(value)


def profiles_table(title: str, rows: list[dict[str, Any]], matched: bool = False) -> Table:
    """Profile summaries (`lookup.summaries`), with how each matched when `matched`."""
    table = Table(title=title)
    columns = ["id", "email", "name", "sources", "records", "errors"]
    for col in columns + (["matched by"] if matched else []):
        table.add_column(col, justify="right" if col in ("id", "records", "errors") else "left")
    for r in rows:
        cells = [str(r["id"]), r["email"] or "(no email)", r["name"], ", ".join(r["sources"]),
                 str(r["records"]), str(r["errors"])]  # fmt: skip
        table.add_row(*cells, *([", ".join(r.get("matched", []))] if matched else []))
    return table


def runs_table(runs: list[dict[str, Any]]) -> Group:
    """Recent runs (`runlog.recent_runs`): counts per stage in brief, then why each run that
    did not finish well ended as it did (a reason is too long for a column)."""
    table = Table(title=f"Recent runs ({len(runs)})", box=box.SIMPLE, collapse_padding=True,
                  pad_edge=False)  # fmt: skip
    for col in ("run", "started", "took", "status", "read", "changed", "errors", "profiles",
                "pushed", "refused"):  # fmt: skip
        left = col in ("started", "status")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "started")
    reasons: list[Any] = []
    for run in runs:
        stages = run["stages"]
        totals = stages["ingest"]["totals"]
        ident = stages.get("identity", {})
        push = stages.get("push")
        changed = sum(totals.get(k, 0) for k in ("inserted", "updated", "deleted"))
        profiles = sum(ident.get(k, 0) for k in ("profiles_created", "profiles_updated"))
        pushed = refused = ""
        if push is not None:
            pushed = str(sum(sum(a.get("applied", {}).values()) for a in push.values()))
            refused = str(sum(a.get("errors", 0) for a in push.values()))
        started = datetime.fromisoformat(run["started_at"]) if run["started_at"] else None
        table.add_row(
            str(run["run_id"]), started.strftime("%m-%d %H:%M") if started else "",
            f"{run['seconds']:.1f}s" if run["seconds"] is not None else "", run["status"],
            str(totals.get("read", "")), str(changed) if totals else "",
            str(totals.get("errors", "")), str(profiles) if ident else "", pushed, refused,
        )  # fmt: skip
        if run["reason"]:
            reasons.append(Text(f"run {run['run_id']} {run['status']}: {run['reason']}"))
    return Group(table, *reasons)


def record_errors_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Per-record errors (`runlog.record_errors`), newest first."""
    table = Table(title=title)
    for col in ("when", "run", "stream", "record", "field", "value", "problem"):
        table.add_column(col, overflow="fold", justify="right" if col == "run" else "left")
    for e in rows:
        created = datetime.fromisoformat(e["created_at"]) if e["created_at"] else None
        table.add_row(
            _when(created), str(e["run_id"] or ""), f"{e['source']}/{e['stream']}",
            e["record"] or "", e["field"] or "", (e["value"] or "")[:40], e["message"],
        )  # fmt: skip
    return table
