"""The digest by hand: ``clublist digest send`` (cron's ``clublist remind`` sends the daily ones)."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime

from clublist.actions import Actor, require_admin
from clublist.club.store import Club
from clublist.errors import ClublistError
from clublist.mail.digest import DigestRun, send_due
from clublist.state.db import transaction


def digest_send(
    conn: sqlite3.Connection,
    club: Club,
    actor: Actor,
    now: datetime,
    *,
    list_name: str | None = None,
    dry_run: bool = False,
) -> list[DigestRun]:
    """Send each list's (or one list's) digest now, with the posts since its last digest; the
    daily digest later holds only what comes after.  With *dry_run* nothing is written."""
    require_admin(actor, "send digests")
    if list_name is not None:
        mailing_list = club.require_list(list_name)
        if not mailing_list.archive:
            raise ClublistError(f"{list_name} keeps no archive (archive = false), so it has no digest")
    with contextlib.nullcontext(conn) if dry_run else transaction(conn):
        return send_due(conn, club, now, list_name=list_name, by_hand=True, dry_run=dry_run)
