"""Holding a post: kept in the state database until a list owner approves, rejects or
discards it, or it expires after ``moderation.expire_days``.

Holding tells the list's owners (or the administrator, for a list without owners) with a
notice they can answer.  What owners do with held posts is :mod:`clublist.actions.held`.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from clublist.club.model import MailingList, address_key
from clublist.club.store import Club
from clublist.outbound.notices import queue_template


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
    notice_once: str = "",
) -> int:
    """Keep a post for moderation and tell the list's owners, in the caller's transaction.

    The notice (template ``held``) carries a token bound to this post, in its Message-ID
    and Subject, and its Reply-To is LIST-request@: an owner answers "approve", "reject
    REASON" or "discard" and the bot acts on this post (:func:`held_by_token`).  The token
    counts only from the addresses the notice went to, as a confirmation token does.

    With *notice_once* (a topic such as "auto_responder:youth:anna@example.org") the owners
    are told of the first such post of the day only: an auto-responder must not flood them.
    """
    owners = list(mailing_list.owners) or [club.site.site.admin]
    token = secrets.token_hex(8)
    held_id = conn.execute(
        "INSERT INTO held (list_name, sender, author, subject, reason, content, created, token, notified)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mailing_list.name,
            sender,
            author,
            subject,
            reason,
            content,
            now,
            token,
            " ".join(address_key(o) for o in owners),
        ),
    ).lastrowid
    assert held_id is not None
    variables = {
        "author": author or sender or "<>",
        "subject": subject,
        "reason": reason,
        "held_id": str(held_id),
        "token": token,
        "expire_days": str(club.site.moderation.expire_days),
    }
    if notice_once and not first_today(conn, notice_once, now):
        return held_id
    queue_template(
        conn,
        club,
        mailing_list,
        "held",
        owners,
        variables,
        now,
        reply_to=f"{mailing_list.name}-request@{club.site.domain}",
        message_id=hold_message_id(token, club.site.domain),
    )
    return held_id


def first_today(conn: sqlite3.Connection, topic: str, now: float) -> bool:
    """Whether *topic* comes up for the first time today (UTC); it is then marked as seen."""
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    inserted = conn.execute("INSERT OR IGNORE INTO owner_alerts (topic, day) VALUES (?, ?)", (topic, day))
    return inserted.rowcount == 1


def hold_message_id(token: str, domain: str) -> str:
    return f"<held-{token}@{domain}>"


_TOKEN_IN_ID = re.compile(r"<held-([0-9a-f]{16})@")
_TOKEN_IN_SUBJECT = re.compile(r"\[held ([0-9a-f]{16})\]")


def token_in_reply(in_reply_to: str, references: str, subject: str) -> str | None:
    """The hold token a reply to a hold notice carries (its In-Reply-To, References or Subject)."""
    for text, pattern in (
        (in_reply_to, _TOKEN_IN_ID),
        (references, _TOKEN_IN_ID),
        (subject, _TOKEN_IN_SUBJECT),
    ):
        found = pattern.search(text or "")
        if found:
            return found[1]
    return None


@dataclass(frozen=True)
class HeldByToken:
    """The held post a token names, and the addresses its notice went to."""

    post: HeldPost
    notified: frozenset[str]


def held_by_token(conn: sqlite3.Connection, token: str) -> HeldByToken | None:
    row = conn.execute(
        "SELECT id, list_name, sender, author, subject, reason, created, notified FROM held WHERE token = ?",
        (token,),
    ).fetchone()
    if row is None:
        return None
    return HeldByToken(HeldPost(*row[:7]), frozenset(str(row[7]).split()))


def expire_held(conn: sqlite3.Connection, club: Club, now: float) -> int:
    """Drop held posts older than ``moderation.expire_days``; each author who is a member is told.

    Strangers' held posts expire silently: a notice to a forged sender would be backscatter.
    """
    limit = now - club.site.moderation.expire_days * 86400
    rows = conn.execute(
        "SELECT id, list_name, author, subject, created FROM held WHERE created < ? ORDER BY id", (limit,)
    ).fetchall()
    for held_id, list_name, author, subject, created in rows:
        conn.execute("DELETE FROM held WHERE id = ?", (held_id,))
        member = club.member(author) if author else None
        mailing_list = club.lists.get(list_name)
        if member is None or mailing_list is None:
            continue
        days = str(int((now - created) // 86400))
        variables = {"subject": subject, "days": days}
        queue_template(conn, club, mailing_list, "expired", [member.email], variables, now)
    return len(rows)
