"""Held-post actions: list, read, approve, reject and discard posts held for moderation.

Rights: a list's owners moderate its posts, the administrator every list's.  Approving
sends the post on through decoration and the queue as if it had just arrived
(:func:`clublist.mail.enqueue.enqueue_post`); rejecting tells the author why; discarding
tells nobody.  An owner's reply to a hold notice runs these through the bot.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import sqlite3
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Literal

from clublist.actions import Actor, Done
from clublist.club.store import Club
from clublist.errors import ClublistError, PermissionDenied
from clublist.mail import archive, decorate
from clublist.mail import enqueue as posting
from clublist.mail.enqueue import DmarcLookup
from clublist.mail.moderation import HeldPost
from clublist.outbound.notices import queue_template
from clublist.state.db import transaction


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


def held_show(conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int) -> tuple[HeldPost, str, str]:
    """A held post, its text for reading (the first text part, at most 20,000 characters) and
    what SPF, DKIM and DMARC said of it (the first Authentication-Results, ours: the listener
    puts it on top and removes any that claim its name)."""
    post, content = _require(conn, club, actor, held_id)
    message = email.message_from_bytes(content, policy=email.policy.default)
    body = message.get_body(("plain", "html")) if isinstance(message, EmailMessage) else None
    text = body.get_content() if body is not None else "(no text part)"
    results = message.get("Authentication-Results")
    authentication = " ".join(str(results).split()) if results is not None else "(not recorded)"
    return post, text[:20_000], authentication


def held_approve(
    conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int, *, resolver: DmarcLookup, now: float
) -> Done:
    """Send a held post on to its list, decorated as any post; the held copy is removed.

    The From rewrite is decided as for a post arriving now (the author domain's DMARC
    policy, through *resolver*), before the write transaction.
    """
    post, content = _require(conn, club, actor, held_id)
    mailing_list = club.require_list(post.list_name)
    author = club.member(post.author) if post.author else None
    message = decorate.parse(content)
    rewrite = asyncio.run(posting.rewrite_from(resolver, mailing_list, message))
    ready = posting.prepare_post(
        message, mailing_list, club, author, rewrite_from=rewrite, subject=post.subject
    )
    with transaction(conn):
        if not conn.execute("DELETE FROM held WHERE id = ?", (held_id,)).rowcount:
            raise ClublistError(f"held post {held_id} was approved or rejected meanwhile")
        queue_id = posting.enqueue_post(conn, club, ready, now)
    archive.file_entries(conn)
    return Done(
        f"approved held post {held_id}: queued as {queue_id} for {len(ready.recipients)} members", queue_id
    )


def held_reject(
    conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int, *, reason: str, now: float
) -> Done:
    """Drop a held post and tell its author why (template ``rejected``)."""
    post, _content = _require(conn, club, actor, held_id)
    author = post.author or post.sender
    with transaction(conn):
        if not conn.execute("DELETE FROM held WHERE id = ?", (held_id,)).rowcount:
            raise ClublistError(f"held post {held_id} was approved or rejected meanwhile")
        if author:
            variables = {"subject": post.subject, "reason": reason or "-"}
            mailing_list = club.lists.get(post.list_name)
            queue_template(conn, club, mailing_list, "rejected", [author], variables, now)
    return Done(f"rejected held post {held_id}" + (f"; told {author}" if author else ""))


def held_discard(conn: sqlite3.Connection, club: Club, actor: Actor, held_id: int) -> Done:
    """Drop a held post without telling anyone (spam, a duplicate)."""
    _require(conn, club, actor, held_id)
    with transaction(conn):
        if not conn.execute("DELETE FROM held WHERE id = ?", (held_id,)).rowcount:
            raise ClublistError(f"held post {held_id} was approved or rejected meanwhile")
    return Done(f"discarded held post {held_id}")


Decision = Literal["approve", "reject", "discard"]


def held_decide(
    conn: sqlite3.Connection,
    club: Club,
    actor: Actor,
    held_ids: Sequence[int],
    decision: Decision,
    *,
    every: bool = False,
    reason: str = "",
    resolver: DmarcLookup | None = None,
    now: float,
) -> list[Done]:
    """Approve, reject or discard several held posts (*every*: all the asker may moderate).

    Each post is decided on its own, so one that another owner decided meanwhile does not
    stop the others; every ID is checked (it exists, the asker may moderate it) before any
    is decided.
    """
    if every == bool(held_ids):
        raise ClublistError("name the held posts' IDs, or --all (see 'clublist held ls')")
    ids = [p.id for p in held_ls(conn, club, actor)] if every else list(dict.fromkeys(held_ids))
    for held_id in ids:
        _require(conn, club, actor, held_id)
    out = []
    for held_id in ids:
        if decision == "approve":
            assert resolver is not None
            out.append(held_approve(conn, club, actor, held_id, resolver=resolver, now=now))
        elif decision == "reject":
            out.append(held_reject(conn, club, actor, held_id, reason=reason, now=now))
        else:
            out.append(held_discard(conn, club, actor, held_id))
    return out
