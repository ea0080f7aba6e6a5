"""`syncbridge plan` and `syncbridge push`: the Mailchimp plan, shown or applied."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import demo as demo_module
from .. import render
from ..config.loader import Settings
from ..destinations import queue
from ..errors import ConfigError, Problem, SyncbridgeError
from ..pipeline import declared_tags, push_upstream
from ..push.client import MailchimpClient
from ..push.guard import mass_removal
from ..push.plan import plan_as_dict
from ..push.state import live_member_count
from ..push.sync import (
    build_plan,
    case_clash_note,
    check_provisioning,
    destination_name,
    everyone_for,
    push,
)
from ..redaction import redact
from ..store import journal
from ..store.engine import open_engine
from ..store.writer_lock import writer_lock
from . import (
    PLAN_CHECK_TIMEOUT_S,
    AllowMassRemoval,
    ConfigOption,
    DemoOption,
    WaitOption,
    _guard,
    _json_text,
    _print_push,
    _progress,
    _settings,
    app,
    err,
    out,
    state,
)


def _print_plans(settings: Settings, engine: Any, json_out: Path | None) -> None:
    plans = []
    kinds = [push_upstream(settings), journal.MEMBER]
    for audience in settings.config.mailchimp.audiences:
        with engine.connect() as conn:
            name, everyone = destination_name(audience), everyone_for(audience)
            ids = queue.waiting(conn, name, kinds, everyone)
        plans.append(build_plan(engine, audience, ids, declared_tags(settings)))
    unchecked = None
    if settings.config.mailchimp.api_key is not None and plans:
        unchecked = _check_provisioning(settings, plans)
    _show_plans(engine, plans, json_out)
    for plan in plans:
        for found, sent in sorted(plan.respelled.items()):
            note = case_clash_note(plan.audience, found, sent)
            err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    if unchecked is not None:
        err.print(f"[yellow]note:[/yellow] {redact(unchecked)}", highlight=False, soft_wrap=True)


def _check_provisioning(settings: Settings, plans: list[Any]) -> str | None:
    """Ask Mailchimp which merge fields and tags the push would create (read-only calls).

    One try per call with a short timeout: a dry run without network must not sit through
    the push's retries. Returns what could not be checked and why (None: all checked)."""
    config = settings.config.mailchimp
    quick = config.model_copy(
        update={"retries": 0, "timeout_s": min(config.timeout_s, PLAN_CHECK_TIMEOUT_S)}
    )
    client = MailchimpClient(quick)
    for plan in plans:
        try:
            check_provisioning(client, plan)
        except SyncbridgeError as exc:
            return (
                "could not check with Mailchimp which merge fields and tags the push would "
                f"create ({exc}); the plan above comes from the cache alone"
            )
    return None


def _show_plans(engine: Any, plans: list[Any], json_out: Path | None) -> None:
    if json_out is not None:
        text = json.dumps([plan_as_dict(p) for p in plans], ensure_ascii=False, indent=2)
        if str(json_out) == "-":
            _json_text(text)
        else:
            json_out.write_text(text + "\n", encoding="utf-8")
            out.print(f"Wrote the plan to {json_out}")
        return
    if not plans:
        out.print("No [[mailchimp.audiences]] configured: nothing to plan.")
    for plan in plans:
        out.print(render.plan_table(plan))
        with engine.connect() as conn:
            members = live_member_count(conn, plan.audience.list_id)
        if (why := mass_removal(plan, members)) is not None:
            out.print(f"[yellow]warning:[/yellow] {why}", highlight=False)


def _demo_settings(audience: str | None = None) -> Settings:
    """The demo's setup over the demo's cache (which `syncbridge demo` must have made)."""
    db = Path(demo_module.DEMO_DB).resolve()
    if not db.exists():
        raise ConfigError([Problem(str(db), "", "no demo cache here yet: run `syncbridge demo`")])
    env = {k: v for k, v in os.environ.items() if k == "MAILCHIMP_API_KEY"
           or k.startswith("SYNCBRIDGE_MAILCHIMP__")}  # fmt: skip
    settings = demo_module.demo_settings(db, env, audience)
    state.store_url = settings.config.store.url
    return settings


@app.command()
def plan(
    config: ConfigOption = Path("config.toml"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the whole plan as JSON ('-': stdout).")
    ] = None,
    demo: DemoOption = False,
) -> None:
    """Dry run: what the next push would send to Mailchimp, from the cache alone."""
    with _guard():
        settings = _demo_settings() if demo else _settings(config)
        _print_plans(settings, open_engine(settings.config.store.url), json_out)


@app.command("push")
def push_command(
    config: ConfigOption = Path("config.toml"),
    allow_mass_removal: AllowMassRemoval = False,
    wait: WaitOption = None,
    demo: DemoOption = False,
    audience: Annotated[
        str | None,
        typer.Option(
            help="With --demo: the id of a test audience of yours to push into "
            "(key: $MAILCHIMP_API_KEY)."
        ),
    ] = None,
) -> None:
    """Apply the plan: provision, read back Mailchimp's changes, send batches, acknowledge."""
    with _guard():
        if demo and not audience:
            raise ConfigError(
                [
                    Problem(
                        "push --demo",
                        "--audience",
                        "give the id of a test audience to push the demo into",
                    )
                ]
            )
        settings = _demo_settings(audience) if demo else _settings(config)
        with writer_lock(settings.config.store.url, "push", wait or 0.0):
            engine = open_engine(settings.config.store.url)
            client = MailchimpClient(settings.config.mailchimp)
            with _progress() as hook:
                result = push(
                    engine, settings.config.mailchimp, client, progress=hook,
                    allow_mass_removal=allow_mass_removal, upstream=push_upstream(settings),
                    declared_tags=declared_tags(settings),
                )  # fmt: skip
    _print_push(result)
