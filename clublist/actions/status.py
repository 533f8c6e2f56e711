"""The status action: one look at the queue, held posts and the daemon, for the administrator.

It only reads: a state database that does not exist yet is reported, not created.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from clublist.actions import Actor, require_admin
from clublist.errors import ClublistError
from clublist.state import db as state
from clublist.state import queue


@dataclass(frozen=True)
class ClubStatus:
    """Where the club's two homes are, whether the daemon runs, and what waits."""

    directory: Path
    directory_exists: bool
    state_path: Path
    state_exists: bool
    daemon_pid: int | None  # -1: running, pid unknown
    counts: dict[str, int]
    oldest_waiting: float | None
    held: int


def club_status(directory: Path, state_path: Path, actor: Actor) -> ClubStatus:
    """Deliveries by state, the oldest waiting message, held posts, the daemon's pid."""
    require_admin(actor, "see the club's status")
    counts = {s: 0 for s in queue.STATUSES}
    oldest: float | None = None
    held = 0
    state_exists = state_path.exists()
    if state_exists:
        # A database that exists but cannot be read is an error to report, never "not created yet".
        conn = state.connect(state_path, create=False)
        try:
            counts = queue.counts(conn)
            oldest = queue.oldest_waiting(conn)
            held = conn.execute("SELECT COUNT(*) FROM held").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ClublistError(f"{state_path}: cannot read the state database ({exc})") from None
        finally:
            conn.close()
    return ClubStatus(
        directory=directory.absolute(),
        directory_exists=directory.is_dir(),
        state_path=state_path.absolute(),
        state_exists=state_exists,
        daemon_pid=state.DaemonLock(state_path).holder(),
        counts=counts,
        oldest_waiting=oldest,
        held=held,
    )
