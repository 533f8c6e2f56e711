"""``clublist digest``: send the lists' digests by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from clublist.cli import render
from clublist.cli.app import App, json_option, pass_app
from clublist.state import db as state


@click.group("digest")
def digest() -> None:
    """Send the lists' digests by hand (cron's 'clublist remind' sends them daily at digest.time).

    Example: clublist digest send --list youth --dry-run
    """


@digest.command("send")
@click.option("--list", "list_name", metavar="LIST", help="Only this list's digest.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; queue and record nothing.")
@json_option
@pass_app
def send(app: App, list_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Send the digests now, with the posts since each list's last digest.

    Example: clublist digest send --list youth
    """
    from clublist.actions.digest import digest_send

    conn = state.connect(app.state_path)
    try:
        runs = digest_send(
            conn,
            app.store.load(),
            app.actor,
            datetime.fromtimestamp(app.clock(), UTC),
            list_name=list_name,
            dry_run=dry_run,
        )
    finally:
        conn.close()
    if as_json:
        render.json_out(app, runs)
        return
    verb = "would send" if dry_run else "sent"
    for run in runs:
        if run.reason:
            app.stream.write(f"{run.list_name}: no digest ({run.reason})\n")
        else:
            queued = f" as {run.queue_id}" if run.queue_id else ""
            app.stream.write(
                f"{run.list_name}: {verb} {run.posts} posts to {run.recipients} members{queued}\n"
            )
    if not dry_run and any(run.queue_id for run in runs):
        state.DaemonLock(app.state_path).wake()
