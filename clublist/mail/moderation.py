"""Held posts: kept in the state database until a list owner approves or rejects them.

Holding tells the list's owners (or the administrator, for a list without
owners); approving sends the post on through decoration and the queue as if
it had just arrived; rejecting tells the author why.  These are actions
like those in :mod:`clublist.actions`, with the same rights: a list's
owners and the administrator.
"""

from __future__ import annotations

import email
import email.policy
import sqlite3
from dataclasses import dataclass
from email.message import EmailMessage, Message

from clublist.actions import Actor, Done
from clublist.club.model import MailingList
from clublist.club.store import Club
from clublist.errors import ClublistError, PermissionDenied
from clublist.mail import decorate
from clublist.mail import enqueue as posting
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
    _notify(conn, club, owners, f"Held for approval: {subject}", text, now)
    return held_id


def _notify(conn: sqlite3.Connection, club: Club, to: list[str], subject: str, text: str, now: float) -> None:
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


def _visible(club: Club, actor: Actor, list_name: str) -> bool:
    mailing_list = club.lists.get(list_name)
    return actor.is_admin or (mailing_list is not None and actor.owns(mailing_list))


def held_ls(conn: sqlite3.Connection, club: Club, actor: Actor) -> list[HeldPost]:
    """Held posts the asker may moderate: all for the administrator, their lists' for owners."""
    rows = conn.execute(
        "SELECT id, list_name, sender, author, subject, reason, created FROM held ORDER BY id"
    ).fetchall()
    return [HeldPost(*row) for row in rows if _visible(club, actor, row[1])]


def _require(conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int) -> tuple[HeldPost, bytes]:
    row = conn.execute(
        "SELECT id, list_name, sender, author, subject, reason, created, content FROM held WHERE id = ?",
        (held_id,),
    ).fetchone()
    if row is None:
        raise ClublistError(f"no held post {held_id}; see 'clublist held ls'")
    post = HeldPost(*row[:7])
    if not _visible(club, actor, post.list_name):
        raise PermissionDenied(f"only the owners of {post.list_name} may moderate its posts")
    return post, bytes(row[7])


def held_show(conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int) -> tuple[HeldPost, str]:
    """A held post and its text for reading (the first text part, at most 20,000 characters)."""
    post, content = _require(conn, club, actor, held_id)
    message = email.message_from_bytes(content, policy=email.policy.default)
    body = message.get_body(("plain", "html")) if isinstance(message, EmailMessage) else None
    text = body.get_content() if body is not None else "(no text part)"
    return post, text[:20_000]


def held_message(
    conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int
) -> tuple[HeldPost, Message]:
    """A held post, parsed as decoration reads it (to decide its From rewrite before approving)."""
    post, content = _require(conn, club, actor, held_id)
    return post, decorate.parse(content)


def held_approve(
    conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int, *, rewrite_from: bool, now: float
) -> Done:
    """Send a held post on to its list, decorated as any post; the held copy is removed."""
    post, content = _require(conn, club, actor, held_id)
    mailing_list = club.require_list(post.list_name)
    author = club.member(post.author) if post.author else None
    wire = posting.prepare(decorate.parse(content), mailing_list, club, author, rewrite_from=rewrite_from)
    targets = posting.recipients(club, mailing_list, author.key if author else None)
    queue_id = posting.enqueue_post(
        conn,
        club,
        mailing_list,
        recipients=targets,
        content=wire,
        author_key=author.key if author else None,
        subject=post.subject,
        now=now,
    )
    conn.execute("DELETE FROM held WHERE id = ?", (held_id,))
    return Done(f"approved held post {held_id}: queued as {queue_id} for {len(targets)} members", queue_id)


def held_reject(
    conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int, *, reason: str, now: float
) -> Done:
    """Drop a held post and tell its author why."""
    post, _content = _require(conn, club, actor, held_id)
    conn.execute("DELETE FROM held WHERE id = ?", (held_id,))
    author = post.author or post.sender
    if author:
        text = (
            f'Your post to {post.list_name}@{club.site.domain}, "{post.subject}", was not accepted '
            f"by the list's owners.\n\nReason: {reason or 'none given'}\n"
        )
        _notify(conn, club, [author], f"Not posted: {post.subject}", text, now)
    return Done(f"rejected held post {held_id}" + (f"; told {author}" if author else ""))
