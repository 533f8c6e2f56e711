"""``clublist status``: one look at the queue, held posts and the daemon, for an administrator.

It only reads: a state database that does not exist yet is reported, not created.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import click

from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.cli.queue import iso, span
from clublist.errors import ClublistError, PermissionDenied
from clublist.state import db as state
from clublist.state import queue


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
    if not app.actor.is_admin:
        raise PermissionDenied("only the club's administrator may see the club's status")
    counts = {s: 0 for s in queue.STATUSES}
    oldest: float | None = None
    held = 0
    state_exists = app.state_path.exists()
    if state_exists:
        # A database that exists but cannot be read is an error to report, never "not created yet".
        conn = state.connect(app.state_path, create=False)
        try:
            counts = queue.counts(conn)
            oldest = queue.oldest_waiting(conn)
            held = conn.execute("SELECT COUNT(*) FROM held").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ClublistError(f"{app.state_path}: cannot read the state database ({exc})") from None
        finally:
            conn.close()
    pid = state.DaemonLock(app.state_path).holder()
    now = time.time()
    if as_json:
        render.json_out(
            app,
            {
                "directory": str(app.directory.absolute()),
                "state_path": str(app.state_path.absolute()),
                "state_exists": state_exists,
                "daemon_pid": pid,
                "counts": counts,
                "oldest_waiting": iso(oldest),
                "oldest_waiting_seconds": None if oldest is None else int(now - oldest),
                "held": held,
            },
        )
        return
    render.fields(app, _human(app, state_exists, pid, counts, oldest, held, now))


def _human(
    app: App,
    state_exists: bool,
    pid: int | None,
    counts: dict[str, int],
    oldest: float | None,
    held: int,
    now: float,
) -> dict[str, Any]:
    directory = str(app.directory.absolute())
    if not app.directory.is_dir():
        directory += " (missing: run 'clublist init')"
    state_path = str(app.state_path.absolute())
    if not state_exists:
        state_path += " (not created yet: 'clublist run' creates it)"
    daemon = "not running" if pid is None else f"running (pid {pid if pid > 0 else 'unknown'})"
    return {
        "lists.d": directory,
        "state": state_path,
        "daemon": daemon,
        "queue": ", ".join(f"{n} {s}" for s, n in counts.items()),
        "oldest waiting": "none" if oldest is None else f"{span(now - oldest)} ({iso(oldest)})",
        "held posts": held,
    }
