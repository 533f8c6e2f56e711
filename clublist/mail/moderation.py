"""Holding a post: kept in the state database until a list owner approves or rejects it.

Holding tells the list's owners (or the administrator, for a list without owners).
What owners do with held posts is :mod:`clublist.actions.held`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from clublist.club.model import MailingList
from clublist.club.store import Club
from clublist.outbound import reports
from clublist.state import queue


@dataclass(frozen=True)
class HeldPost:
    id: int
    list_name: str
    sender: str
    author: str
    subject: str
    reason: str
    created: float


def hold(
    conn: sqlite3.Connection,
    club: Club,
    mailing_list: MailingList,
    *,
    sender: str,
    author: str,
    subject: str,
    reason: str,
    content: bytes,
    now: float,
) -> int:
    """Keep a post for moderation and tell the list's owners, in the caller's transaction."""
    held_id = conn.execute(
        "INSERT INTO held (list_name, sender, author, subject, reason, content, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (mailing_list.name, sender, author, subject, reason, content, now),
    ).lastrowid
    assert held_id is not None
    owners = list(mailing_list.owners) or [club.site.site.admin]
    text = (
        f"A post to {mailing_list.address(club.site.domain)} is waiting for approval.\n\n"
        f"  From:    {author or sender}\n  Subject: {subject}\n  Reason:  {reason}\n\n"
        f"Approve it with:  clublist held approve {held_id}\n"
        f'Reject it with:   clublist held reject {held_id} --reason "..."\n'
    )
    notify(conn, club, owners, f"Held for approval: {subject}", text, now)
    return held_id


def notify(conn: sqlite3.Connection, club: Club, to: list[str], subject: str, text: str, now: float) -> None:
    notice = reports.notice(
        sender=club.site.bot_address, to=to, subject=subject, text=text, message_id_domain=club.site.domain
    )
    queue.enqueue(
        conn,
        kind="notice",
        sender=club.site.bounce_address,
        recipients=to,
        content=bytes(notice),
        now=now,
        subject=subject,
    )














