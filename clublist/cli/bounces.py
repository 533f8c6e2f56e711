"""``clublist bounces``: who bounces, the evidence, and forgetting it."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import click

from clublist.actions import bounces as actions
from clublist.bounces.score import BounceEvent
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.state import db as state


@click.group()
def bounces() -> None:
    """See and reset bounce scores.

    Each day a member's address fails adds to their score (1 for a permanent
    failure, 0.5 for a temporary one; failures older than
    bounces.stale_after_days no longer count).  At bounces.threshold their
    delivery is disabled in members.toml, with the reason, and the
    administrator gets a summary.  Refusals of the message itself (spam
    filters, DMARC, blocklists) never count.  To bring a member back, run
    `clublist member set EMAIL --enable`: only failures after the disabling
    count from then on.

    Example: clublist bounces ls
    """


@contextlib.contextmanager
def _state(app: App) -> Iterator[sqlite3.Connection]:
    conn = state.connect(app.state_path)
    try:
        yield conn
    finally:
        conn.close()


@by_mail("admin", changes=False)
@bounces.command("ls")
@json_option
@pass_app
def ls(app: App, as_json: bool) -> None:
    """List addresses with a bounce score, or disabled by bounces, highest first.

    Example: clublist bounces ls --json
    """
    with _state(app) as conn:
        standings = actions.bounce_ls(conn, app.store.load(), app.actor, time.time())
    rows = [render.to_plain(s) | {"last_event": render.iso(s.last_event)} for s in standings]
    if as_json:
        render.json_out(app, rows)
    else:
        render.table(
            app,
            rows,
            ["address", "score", "events", "last_event", "last_status", "delivery"],
            empty="no bounces",
        )


@by_mail("admin", changes=False)
@bounces.command("show")
@click.argument("email")
@json_option
@pass_app
def show(app: App, email: str, as_json: bool) -> None:
    """Show an address's bounce score and every piece of evidence, oldest first.

    Example: clublist bounces show anna@example.org
    """
    with _state(app) as conn:
        record = actions.bounce_show(conn, app.store.load(), app.actor, email, time.time())
    events = [_event(e) for e in record.events]
    if as_json:
        render.json_out(app, render.to_plain(record) | {"events": events})
        return
    summary: dict[str, Any] = {
        "address": record.address,
        "score": f"{record.score:.1f} (threshold {record.threshold:g})",
        "delivery": record.delivery,
    }
    if record.disabled_reason:
        summary["reason"] = record.disabled_reason
    render.fields(app, summary)
    app.stream.write("\n")
    render.table(
        app,
        events,
        ["created", "kind", "status", "list_name", "source", "diagnostic"],
        empty="no bounce events",
    )


def _event(event: BounceEvent) -> dict[str, Any]:
    return render.to_plain(event) | {"created": render.iso(event.created)}


@by_mail("admin")
@bounces.command("reset")
@click.argument("email")
@pass_app
def reset(app: App, email: str) -> None:
    """Forget an address's bounce evidence; its score becomes 0.

    Delivery stays as it is: `clublist member set EMAIL --enable` resumes it.

    Example: clublist bounces reset anna@example.org
    """
    with _state(app) as conn, state.transaction(conn):
        result = actions.bounce_reset(conn, app.store.load(), app.actor, email)
    render.done(app, result)
