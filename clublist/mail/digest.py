"""The daily digest: a list's posts since the last one, as one MIME digest to the members who chose it.

Made from the archive (:mod:`clublist.mail.archive`), once a day at ``digest.time`` in the site's
time zone, by ``clublist remind`` (cron) or ``clublist digest send``.  Which day was sent is a row
of ``digest_runs`` written in the transaction that queues the digest, so any number of runs send
each list's digest once a day; after downtime the next run sends one digest with everything since
the last one.  A list's first digest holds the posts of the day before it.

The message is a multipart/digest (RFC 2046 5.1.5) of message/rfc822 parts, each post as it was
distributed, after a plain-text table of contents laid out as RFC 1153 does.  It is queued like
any mail, so the delivery worker signs it.
"""

from __future__ import annotations

import email
import email.policy
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from zoneinfo import ZoneInfo

from clublist.club.model import MailingList, Member, digest_time
from clublist.club.store import Club
from clublist.mail import archive, decorate
from clublist.mail.archive import Entry
from clublist.state import queue

SEPARATOR = "-" * 70  # RFC 1153: after the table of contents


@dataclass(frozen=True)
class DigestRun:
    """One list's digest: sent (with its queue id), or why not."""

    list_name: str
    day: str
    posts: int = 0
    recipients: int = 0
    queue_id: str = ""
    reason: str = ""


def readers(club: Club, mailing_list: MailingList) -> list[Member]:
    """Who gets the list's digest: its members who chose it and whose delivery is enabled."""
    return [m for m in club.members_of(mailing_list.name) if m.receives and m.takes_digest(mailing_list.name)]


def occurrence(club: Club, now: datetime) -> datetime:
    """The latest moment at ``digest.time`` (site time zone) not after *now*."""
    zone = ZoneInfo(club.site.site.timezone)
    hour, minute = digest_time(club.site)
    local = now.astimezone(zone)
    moment = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment > local:
        moment = (moment - timedelta(days=1)).replace(hour=hour, minute=minute)
    return moment


def send_due(
    conn: sqlite3.Connection,
    club: Club,
    now: datetime,
    *,
    list_name: str | None = None,
    by_hand: bool = False,
    dry_run: bool = False,
) -> list[DigestRun]:
    """Queue each archiving list's digest that is due, in the caller's transaction.

    Due once per day at ``digest.time``; *by_hand* sends now whatever has come since the last
    digest (``clublist digest send``).  With *dry_run* nothing is written.
    """
    due = occurrence(club, now)
    day = f"by hand {now.astimezone(UTC).isoformat()}" if by_hand else due.date().isoformat()
    runs = []
    for mailing_list in club.lists.values():
        if not mailing_list.archive or (list_name and mailing_list.name != list_name):
            continue
        if conn.execute(
            "SELECT 1 FROM digest_runs WHERE list_name = ? AND day = ?", (mailing_list.name, day)
        ).fetchone():
            continue
        runs.append(_send(conn, club, mailing_list, day, due, now, dry_run))
    return runs


def _send(
    conn: sqlite3.Connection,
    club: Club,
    mailing_list: MailingList,
    day: str,
    due: datetime,
    now: datetime,
    dry_run: bool,
) -> DigestRun:
    name = mailing_list.name
    last = conn.execute("SELECT MAX(last_number) FROM digest_runs WHERE list_name = ?", (name,)).fetchone()[0]
    if last is None:  # the first digest: the posts of the day before it
        since = (due - timedelta(days=1)).timestamp()
        posts = [e for e in archive.entries(conn, name, since=since) if e.created <= now.timestamp()]
    else:
        posts = [e for e in archive.entries(conn, name) if e.number > last and e.created <= now.timestamp()]
    people = readers(club, mailing_list)
    run = DigestRun(name, day, len(posts), len(people))
    if not posts:
        run = DigestRun(name, day, reason="no posts since the last digest")
    elif not people:
        run = DigestRun(name, day, len(posts), reason="nobody takes the digest")
    if dry_run:
        return run
    queue_id = ""
    if posts and people:
        issue = (
            1
            + conn.execute(
                "SELECT COUNT(*) FROM digest_runs WHERE list_name = ? AND queue_id != ''", (name,)
            ).fetchone()[0]
        )
        root = archive.database_root(conn)
        contents = [(e, archive.read(root, conn, e)) for e in posts]
        message = build(club, mailing_list, [(e, c) for e, c in contents if c is not None], issue, now)
        queue_id = queue.enqueue(
            conn,
            kind="digest",
            sender=club.site.bounce_address,
            recipients=[m.email for m in people],
            content=bytes(message),
            now=now.timestamp(),
            list_name=name,
            verp=club.site.delivery.verp,
            subject=str(message["Subject"]),
        )
    top = max((e.number for e in posts), default=last or 0)
    conn.execute(
        "INSERT INTO digest_runs (list_name, day, sent, last_number, posts, queue_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (name, day, now.timestamp(), top, len(posts), queue_id),
    )
    return DigestRun(name, day, run.posts, run.recipients, queue_id, run.reason)


def build(
    club: Club, mailing_list: MailingList, posts: list[tuple[Entry, bytes]], issue: int, now: datetime
) -> EmailMessage:
    """The digest message: the table of contents, then each post as a message/rfc822 part."""
    domain = club.site.domain
    title = f"{mailing_list.display_name} Digest"
    when = now.astimezone(ZoneInfo(club.site.site.timezone))
    message = EmailMessage()
    message["From"] = Address(display_name=title, addr_spec=f"{mailing_list.name}-request@{domain}")
    message["To"] = Address(display_name=mailing_list.display_name, addr_spec=mailing_list.address(domain))
    message["Subject"] = f"{title}, {when:%a %d %b %Y}, Issue {issue}"
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = make_msgid(domain=domain)
    message["List-Id"] = formataddr((mailing_list.display_name, decorate.list_id(mailing_list, domain)))
    message["List-Unsubscribe"] = (
        f"<mailto:{club.site.bot_address}?subject=unsubscribe%20{mailing_list.name}>"
    )
    message["Precedence"] = "list"
    message["MIME-Version"] = "1.0"
    message.make_mixed()
    message.replace_header("Content-Type", "multipart/digest")
    contents = EmailMessage()
    contents.set_content(table_of_contents(club, mailing_list, posts, issue, when))
    message.attach(contents)
    for _entry, content in posts:
        part = EmailMessage()
        part.set_content(email.message_from_bytes(content, policy=email.policy.default))
        message.attach(part)
    return message


def table_of_contents(
    club: Club, mailing_list: MailingList, posts: list[tuple[Entry, bytes]], issue: int, when: datetime
) -> str:
    """RFC 1153's heading and "Today's Topics", then its line of 70 dashes."""
    heading = f"{mailing_list.display_name} Digest"
    lines = [
        f"{heading:<30}{when:%a, %d %b %Y}      Issue {issue}",
        "",
        "Today's Topics:",
        "",
    ]
    for number, (entry, _content) in enumerate(posts, 1):
        lines.append(f"  {number:>3}. {entry.subject or '(no subject)'} ({entry.author}) [#{entry.number}]")
    bot = club.site.bot_address
    lines += [
        "",
        f"Each post follows as an attachment.  To get {mailing_list.name}'s posts one by one again,",
        f"send 'nodigest {mailing_list.name}' to {bot}.",
        "",
        SEPARATOR,
        "",
    ]
    return "\n".join(lines)
