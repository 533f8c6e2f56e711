"""Mail about membership changes: the member's welcome or goodbye, and the owners' notice.

The actions that change lists.d (join, leave, add, remove, import, sync) hand the changes
here as :class:`Change` records; the notices go into the state database's queue like
every other mail, and the running daemon delivers them.  A list with
``owner_notices = "daily"`` collects its changes in ``owner_changes``;
:func:`send_owner_summaries` (the daemon's periodic work and ``clublist remind``) mails
them as one summary once the oldest is a day old.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from clublist.club.model import Member
from clublist.club.store import Club
from clublist.outbound.notices import queue_template

SUMMARY_AFTER = 24 * 3600


@dataclass(frozen=True)
class Change:
    """One member joining or leaving one list."""

    member: Member
    list_name: str
    joined: bool


def changes_between(before: Member | None, after: Member | None) -> list[Change]:
    """The joins and leaves that turn *before* into *after* (None: not in the registry)."""
    old = set(before.lists) if before else set()
    new = set(after.lists) if after else set()
    out = [Change(after, n, True) for n in after.lists if n not in old] if after else []
    if before is not None:
        out += [Change(before, n, False) for n in before.lists if n not in new]
    return out


def queue_membership_notices(
    conn: sqlite3.Connection, club: Club, changes: Iterable[Change], now: float
) -> int:
    """Queue the welcome/goodbye for each change and tell (or note for) the owners; how many mails."""
    sent = 0
    for change in changes:
        mailing_list = club.lists.get(change.list_name)
        if mailing_list is None:
            continue
        member = change.member
        variables = {"name": member.name or member.email, "email": member.email}
        template = "welcome" if change.joined else "goodbye"
        # LIST-request@: a reply saying just "unsubscribe" (or "subscribe") means this list.
        request = f"{mailing_list.name}-request@{club.site.domain}"
        queue_template(conn, club, mailing_list, template, [member.email], variables, now, reply_to=request)
        sent += 1
        owners = list(mailing_list.owners)
        if not owners or mailing_list.owner_notices == "none":
            continue
        if mailing_list.owner_notices == "daily":
            conn.execute(
                "INSERT INTO owner_changes (list_name, address, name, joined, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (mailing_list.name, member.email, member.name, int(change.joined), now),
            )
            continue
        count = str(len(club.members_of(mailing_list.name)))
        owner_template = "owner_joined" if change.joined else "owner_left"
        queue_template(conn, club, mailing_list, owner_template, owners, variables | {"count": count}, now)
        sent += 1
    return sent


def send_owner_summaries(conn: sqlite3.Connection, club: Club, now: float) -> int:
    """Mail each list's collected changes to its owners once the oldest is a day old; how many mails."""
    due = conn.execute(
        "SELECT list_name FROM owner_changes GROUP BY list_name HAVING MIN(created) <= ?",
        (now - SUMMARY_AFTER,),
    ).fetchall()
    sent = 0
    for (list_name,) in due:
        rows = conn.execute(
            "SELECT id, address, name, joined FROM owner_changes WHERE list_name = ? ORDER BY id",
            (list_name,),
        ).fetchall()
        conn.execute("DELETE FROM owner_changes WHERE id <= ? AND list_name = ?", (rows[-1][0], list_name))
        mailing_list = club.lists.get(list_name)
        if mailing_list is None or not mailing_list.owners:
            continue
        lines = "\n".join(
            f"  {'+' if joined else '-'} {address}" + (f" ({name})" if name else "")
            for _id, address, name, joined in rows
        )
        variables = {"changes": lines, "count": str(len(rows))}
        queue_template(conn, club, mailing_list, "owner_summary", list(mailing_list.owners), variables, now)
        sent += 1
    return sent
