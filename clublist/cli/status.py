"""``clublist status``: one look at the queue, held posts and the daemon, for an administrator.

It only reads: a state database that does not exist yet is reported, not created.
"""

from __future__ import annotations

import time
from typing import Any

import click

from clublist.actions.status import ClubStatus, club_status
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app


@by_mail("admin", changes=False)
@click.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the queue, held posts and whether the daemon runs.

    Deliveries by state, the oldest waiting message, the number of held
    posts, the daemon's pid, and where lists.d and the state database are.

    Example: clublist status --json
    """
    found = club_status(app.directory, app.state_path, app.actor)
    now = time.time()
    oldest = found.oldest_waiting
    if as_json:
        render.json_out(
            app,
            {
                "directory": str(found.directory),
                "state_path": str(found.state_path),
                "state_exists": found.state_exists,
                "daemon_pid": found.daemon_pid,
                "counts": found.counts,
                "oldest_waiting": render.iso(oldest),
                "oldest_waiting_seconds": None if oldest is None else int(now - oldest),
                "held": found.held,
            },
        )
        return
    render.fields(app, _human(app, found, now))


def _human(app: App, found: ClubStatus, now: float) -> dict[str, Any]:
    directory = str(found.directory)
    if not found.directory_exists:
        directory += " (missing: run 'clublist init')"
    state_path = str(found.state_path)
    if not found.state_exists:
        state_path += " (not created yet: 'clublist run' creates it)"
    pid, oldest = found.daemon_pid, found.oldest_waiting
    daemon = "not running" if pid is None else f"running (pid {pid if pid > 0 else 'unknown'})"
    return {
        "lists.d": directory,
        "state": state_path,
        "daemon": daemon,
        "queue": ", ".join(f"{n} {s}" for s, n in found.counts.items()),
        "oldest waiting": "none"
        if oldest is None
        else f"{render.span(now - oldest)} ({_local(app, oldest)})",
        "held posts": found.held,
    }


def _local(app: App, stamp: float) -> str:
    moment = render.iso(stamp)
    assert moment is not None
    return render.local_time(app, moment)
