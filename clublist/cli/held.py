"""``clublist held``: posts waiting for a list owner's approval."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from clublist.actions import held as actions
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.state import db as state


@click.group()
def held() -> None:
    """List, read, approve and reject posts held for moderation.

    Example: clublist held approve 12
    """


@by_mail("owner", changes=False)
@held.command("ls")
@json_option
@pass_app
def ls(app: App, as_json: bool) -> None:
    """List held posts (a list's owners see their lists').

    Example: clublist held ls --json
    """
    conn = state.connect(app.state_path)
    posts = actions.held_ls(conn, app.store.load(), app.actor)
    rows = [render.to_plain(p) | {"created": _iso(p.created)} for p in posts]
    if as_json:
        render.json_out(app, rows)
    else:
        render.table(
            app, rows, ["id", "list_name", "author", "subject", "reason", "created"], empty="no held posts"
        )


@by_mail("owner", changes=False)
@held.command("show")
@click.argument("held_id", type=int, metavar="ID")
@json_option
@pass_app
def show(app: App, held_id: int, as_json: bool) -> None:
    """Show a held post with its text, why it was held and what SPF, DKIM and DMARC said.

    Example: clublist held show 12
    """
    conn = state.connect(app.state_path)
    post, text, authentication = actions.held_show(conn, app.store.load(), app.actor, held_id)
    record = render.to_plain(post) | {
        "created": _iso(post.created),
        "authentication": authentication,
        "text": text,
    }
    if as_json:
        render.json_out(app, record)
    else:
        text = record.pop("text")
        render.fields(app, record)
        app.stream.write("\n" + text + ("" if text.endswith("\n") else "\n"))


@by_mail("owner")
@held.command("approve")
@click.argument("held_id", type=int, metavar="ID")
@pass_app
def approve(app: App, held_id: int) -> None:
    """Send a held post on to its list.

    Example: clublist held approve 12
    """
    from clublist.dns import resolver_for

    club = app.store.load()
    conn = state.connect(app.state_path)
    resolver = resolver_for(club.site)
    result = actions.held_approve(conn, club, app.actor, held_id, resolver=resolver, now=time.time())
    render.done(app, result)
    _wake_daemon(app)


@by_mail("owner")
@held.command("reject")
@click.argument("held_id", type=int, metavar="ID")
@click.option("--reason", default="", help="Told to the author.")
@pass_app
def reject(app: App, held_id: int, reason: str) -> None:
    """Drop a held post and tell its author why.

    Example: clublist held reject 12 --reason "off topic"
    """
    conn = state.connect(app.state_path)
    result = actions.held_reject(conn, app.store.load(), app.actor, held_id, reason=reason, now=time.time())
    render.done(app, result)
    _wake_daemon(app)


def _wake_daemon(app: App) -> None:
    """Tell a running daemon there is new mail in the queue (it would find it later anyway)."""
    state.DaemonLock(app.state_path).wake()


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
