"""``clublist held``: posts waiting for a list owner's approval."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click

from clublist.actions import held as actions
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.state import db as state


@click.group()
def held() -> None:
    """List, read, approve, reject and discard posts held for moderation.

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


ids_argument = click.argument("held_ids", nargs=-1, type=int, metavar="ID...")
all_option = click.option("--all", "every", is_flag=True, help="Every held post you may moderate.")


@by_mail("owner")
@held.command("approve")
@ids_argument
@all_option
@pass_app
def approve(app: App, held_ids: tuple[int, ...], every: bool) -> None:
    """Send held posts on to their lists.

    Example: clublist held approve 12 13
    """
    from clublist.dns import resolver_for

    _decide(app, held_ids, every, "approve", resolver=resolver_for(app.store.load_site()))


@by_mail("owner")
@held.command("reject")
@ids_argument
@all_option
@click.option("--reason", default="", help="Told to the authors.")
@pass_app
def reject(app: App, held_ids: tuple[int, ...], every: bool, reason: str) -> None:
    """Drop held posts and tell their authors why.

    Example: clublist held reject 12 --reason "off topic"
    """
    _decide(app, held_ids, every, "reject", reason=reason)


@by_mail("owner")
@held.command("discard")
@ids_argument
@all_option
@pass_app
def discard(app: App, held_ids: tuple[int, ...], every: bool) -> None:
    """Drop held posts without telling anyone (spam, duplicates).

    Example: clublist held discard --all
    """
    _decide(app, held_ids, every, "discard")


def _decide(
    app: App, held_ids: tuple[int, ...], every: bool, decision: actions.Decision, **kwargs: Any
) -> None:
    club = app.store.load()
    conn = state.connect(app.state_path)
    try:
        results = actions.held_decide(
            conn, club, app.actor, held_ids, decision, every=every, now=time.time(), **kwargs
        )
    finally:
        conn.close()
    app.stream.write("".join(f"{r.message}\n" for r in results) or "no held posts\n")
    if decision != "discard":
        _wake_daemon(app)


def _wake_daemon(app: App) -> None:
    """Tell a running daemon there is new mail in the queue (it would find it later anyway)."""
    state.DaemonLock(app.state_path).wake()


def _iso(stamp: float) -> datetime:
    return datetime.fromtimestamp(int(stamp), UTC)
