"""A post's way into the queue, shared by the SMTP listener, moderation and reminders.

Decorate the message for its list, pick the recipients (every member of the
list whose delivery is enabled and who does not take the digest, each person
once), and enqueue it with the author's post counted and its archive entry
indexed (:mod:`clublist.mail.archive`), all in the caller's transaction.  Each
post is also remembered for a day (recent_posts: author, Message-ID, a digest
of its new text) for the hourly limit and for spotting an auto-responder's
reply to it.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import Message
from typing import Protocol

from clublist.club.model import MailingList, Member
from clublist.club.store import Club
from clublist.mail import archive, decorate
from clublist.state import queue

log = logging.getLogger(__name__)


class DmarcLookup(Protocol):
    async def dmarc_policy(self, domain: str) -> str | None: ...


def recipients(
    club: Club, mailing_list: MailingList, author_key: str | None, covered: set[str] | None = None
) -> list[str]:
    """Who gets a post: members of the list with delivery enabled, not already *covered*.

    *covered* (updated in place) makes a post to two lists reach a member of
    both once.  The author is left out when the list says so.  A member who
    takes the list's digest gets the post in the digest instead, which is made
    from the archive: on a list that keeps none they get every post.
    """
    covered = set() if covered is None else covered
    found = []
    for member in club.members_of(mailing_list.name):
        if not member.receives or member.key in covered:
            continue
        if mailing_list.archive and member.takes_digest(mailing_list.name):
            continue
        if member.key == author_key and not mailing_list.send_to_author:
            continue
        covered.add(member.key)
        found.append(member.email)
    return found


@dataclass(frozen=True)
class ReadyPost:
    """A post decorated for its list, with the recipients it goes to: what the queue takes."""

    mailing_list: MailingList
    content: bytes  # as it goes on the wire (CRLF line ends), trace headers included
    recipients: list[str]
    author_key: str | None
    subject: str
    author: str = ""  # the author's address for the archive index
    text_digest: str = ""  # conversation.text_digest of its new text; "" when not read

    @property
    def message_id(self) -> str:
        """The Message-ID it goes out with (decoration gives one to a post without)."""
        head = self.content.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(head)
        return match[1].decode("ascii", "replace") if match else ""


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(?:\r\n[ \t]+)?(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
REMEMBERED = 24 * 3600  # how long recent_posts keeps a post
HOUR = 3600


def prepare_post(
    message: Message,
    mailing_list: MailingList,
    club: Club,
    author: Member | None,
    *,
    rewrite_from: bool,
    subject: str,
    from_address: Address | None = None,
    author_key: str | None = None,
    covered: set[str] | None = None,
    trace: bytes = b"",
) -> ReadyPost:
    """Decorate *message* for its list and pick its recipients (see :func:`recipients`).

    *message* is best :func:`decorate.parse`'s reading of the bytes received (any Message
    works, serialised first); *from_address* its one From address if the caller has read it;
    *trace* the Received header(s) to put on top; *author_key* whose post it counts as
    (the author member's by default).
    """
    key = author_key if author_key is not None else (author.key if author else None)
    content = decorate.decorate(
        message,
        mailing_list,
        club.site,
        rewrite_from=rewrite_from,
        author_name=author.name if author else "",
        from_address=from_address,
    )
    targets = recipients(club, mailing_list, key, covered)
    sender = from_address or decorate.sole_address(message, "From")
    shown = key or (sender.addr_spec if sender else "")
    return ReadyPost(mailing_list, trace + content, targets, key, subject, author=shown)


def today(now: float) -> str:
    """The day post counters are kept under (UTC, so the limit resets at one moment for all)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def posts_today(conn: sqlite3.Connection, author_key: str, now: float) -> int:
    row = conn.execute(
        "SELECT count FROM post_counts WHERE address = ? AND day = ?", (author_key, today(now))
    ).fetchone()
    return row[0] if row else 0


def posts_last_hour(conn: sqlite3.Connection, author_key: str, now: float, limit: int) -> int:
    """The author's posts in the last 60 minutes, counted up to *limit* (the hourly limit) at most:
    the rule only asks whether the limit is reached, and a count costs a step per post counted."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM recent_posts WHERE author = ? AND created > ? LIMIT ?)",
        (author_key, now - HOUR, limit),
    ).fetchone()
    return int(row[0])


def recent_post_of(conn: sqlite3.Connection, list_name: str, message_ids: list[str], since: float) -> bool:
    """Whether one of *message_ids* is a post of *list_name* queued after *since*."""
    if not message_ids:
        return False
    marks = ",".join("?" * len(message_ids))
    row = conn.execute(
        f"SELECT 1 FROM recent_posts WHERE message_id IN ({marks}) AND list_name = ? AND created > ? LIMIT 1",
        (*message_ids, list_name, since),
    ).fetchone()
    return row is not None


def posted_text_before(conn: sqlite3.Connection, author_key: str, digest: str, since: float) -> bool:
    """Whether *author_key* posted a text with this digest after *since*."""
    if not digest:
        return False
    row = conn.execute(
        "SELECT 1 FROM recent_posts WHERE author = ? AND text_digest = ? AND created > ? LIMIT 1",
        (author_key, digest, since),
    ).fetchone()
    return row is not None


def enqueue_post(conn: sqlite3.Connection, club: Club, post: ReadyPost, now: float) -> str:
    """Queue a decorated post, archive it and count it against its author's limits, in the
    caller's transaction.  Every producer of posts (SMTP, moderation, reminders) ends here.

    Returns the queue id, "" when nobody receives the post one by one (it is still archived,
    so digest readers get it)."""
    if post.mailing_list.archive:
        archive.record(
            conn, post.mailing_list.name, post.content, author=post.author, subject=post.subject, now=now
        )
    queue_id = ""
    if post.recipients:
        queue_id = queue.enqueue(
            conn,
            kind="post",
            sender=club.site.bounce_address,
            recipients=post.recipients,
            content=post.content,
            now=now,
            list_name=post.mailing_list.name,
            verp=club.site.delivery.verp,
            subject=post.subject,
        )
    if post.author_key:
        conn.execute(
            "INSERT INTO post_counts (address, day, count) VALUES (?, ?, 1)"
            " ON CONFLICT (address, day) DO UPDATE SET count = count + 1",
            (post.author_key, today(now)),
        )
    conn.execute(
        "INSERT INTO recent_posts (author, list_name, message_id, text_digest, created)"
        " VALUES (?, ?, ?, ?, ?)",
        (post.author_key or "", post.mailing_list.name, post.message_id, post.text_digest, now),
    )
    return queue_id


def forget(conn: sqlite3.Connection, now: float) -> None:
    """Drop what the limits and the auto-responder check no longer need."""
    conn.execute("DELETE FROM recent_posts WHERE created < ?", (now - REMEMBERED,))
    conn.execute("DELETE FROM owner_alerts WHERE day < ?", (today(now - 2 * REMEMBERED),))


async def rewrite_from(
    resolver: DmarcLookup, mailing_list: MailingList, message: Message, from_address: Address | None = None
) -> bool:
    """Whether this post's From must be the list's: by the list's setting and the author domain's DMARC.

    *from_address* is the post's one From address if the caller has read it (else read here).
    A post without one, or a lookup that fails, counts as "rewrite": the safe side for delivery.
    """
    if mailing_list.from_rewrite != "dmarc":
        return decorate.needs_from_rewrite(mailing_list, None, lookup_failed=False)
    author = from_address or decorate.sole_address(message, "From")
    if author is None:
        return True
    try:
        policy = await resolver.dmarc_policy(author.domain.lower())
    except Exception as exc:
        log.info("DMARC lookup for %s failed (%s); rewriting From", author.domain, exc)
        return decorate.needs_from_rewrite(mailing_list, None, lookup_failed=True)
    return decorate.needs_from_rewrite(mailing_list, policy, lookup_failed=False)
