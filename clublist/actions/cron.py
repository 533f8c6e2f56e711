"""What cron's ``clublist remind`` does: queue the reminders that have fallen due.

Each occurrence exactly once (a row in ``reminder_runs`` under ``BEGIN IMMEDIATE``), late
within ``max_late`` and skipped (and reported) beyond it.  A reminder to a list goes out as a
post through :func:`clublist.mail.enqueue.enqueue_post`, decorated like any post; one to a
member goes to that member alone.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from clublist.actions import Actor
from clublist.club.model import MailingList, Member, address_key
from clublist.club.reminders import TIME_FORMAT, Reminder, site_zone
from clublist.club.schedule import (
    Schedule,
    occurrences,
)
from clublist.club.store import (
    Club,
    Store,
)
from clublist.errors import ClublistError, PermissionDenied
from clublist.mail.digest import DigestRun, readers, send_due

log = logging.getLogger(__name__)
# A library logs; the program using it decides where that goes (the daemon configures
# "clublist", the CLI prints run_due's result itself).
log.addHandler(logging.NullHandler())

DEFAULT_MAX_LATE = timedelta(hours=6)


_DURATION_RE = re.compile(r"(\d+)\s*(s|sec|m|min|h|hours?|d|days?)?")


def parse_duration(text: str) -> timedelta:
    """``90m``, ``6h``, ``2d``, ``45s`` or plain seconds, for ``--max-late``."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise ClublistError(f"{text!r} is not a duration; write e.g. 30m, 6h or 2d")
    unit = (match.group(2) or "s")[0]
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Firing:
    """One occurrence of a reminder that a run queued (or skipped, or would have)."""

    reminder_id: str
    occurrence: datetime  # in the site's time zone
    to: str
    subject: str
    queue_ids: tuple[str, ...] = ()
    recipients: int = 0
    reason: str = ""  # why nothing was queued


@dataclass
class RunResult:
    """What one ``clublist remind`` did."""

    now: datetime
    dry_run: bool = False
    queued: list[Firing] = field(default_factory=list)
    skipped: list[Firing] = field(default_factory=list)
    digests: list[DigestRun] = field(default_factory=list)  # the lists' daily digests queued
    expired_held: int = 0  # held posts past moderation.expire_days, dropped (authors told)
    owner_summaries: int = 0  # daily membership summaries mailed to list owners


def run_due(
    store: Store,
    conn: sqlite3.Connection,
    actor: Actor,
    *,
    now: datetime | None = None,
    max_late: timedelta = DEFAULT_MAX_LATE,
    dry_run: bool = False,
) -> RunResult:
    """Queue every occurrence that fell due since the last run, each exactly once, and the
    lists' daily digests that are due (:func:`clublist.mail.digest.send_due`).

    The whole run is one ``BEGIN IMMEDIATE`` transaction: a second run waits for the first
    and then finds its rows in ``reminder_runs`` (whose primary key is the occurrence), so
    overlapping cron jobs never send twice.  Occurrences between the previous run (the
    cursor) and ``now - max_late`` were missed by a stopped cron: they are recorded as
    skipped and logged, not sent late.  The first run ever looks back ``max_late`` only.
    With ``dry_run`` nothing is written.
    """
    if not actor.is_admin:
        raise PermissionDenied("only the club's administrator may run the reminders")
    club = store.load()
    reminders = store.reminders()
    tz = site_zone(club.site)
    now_utc = (now or datetime.now(UTC)).astimezone(UTC)
    late_limit = now_utc - max_late
    result = RunResult(now_utc.astimezone(tz), dry_run)
    with contextlib.nullcontext(conn) if dry_run else _write_transaction(conn):
        row = conn.execute("SELECT last_run FROM reminder_cursor WHERE id = 1").fetchone()
        lower = datetime.fromtimestamp(row[0], UTC) if row else late_limit
        for reminder in reminders:
            if lower < late_limit:
                for when in occurrences(reminder.schedule, tz, lower, late_limit):
                    _skip(conn, club, reminder, when, now_utc, result)
            for when in _all_occurrences(reminder.schedule, tz, max(lower, late_limit), now_utc):
                _fire(conn, club, reminder, when, now_utc, result)
        result.digests = [d for d in send_due(conn, club, now_utc, dry_run=dry_run) if not d.reason]
        if not dry_run:
            result.expired_held, result.owner_summaries = periodic_work(conn, club, now_utc.timestamp())
            conn.execute(
                "INSERT INTO reminder_cursor (id, last_run) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET last_run = MAX(last_run, excluded.last_run)",
                (now_utc.timestamp(),),
            )
    if not dry_run and result.queued:
        from clublist.mail import archive

        archive.file_entries(conn)
    return result


def periodic_work(conn: sqlite3.Connection, club: Club, now: float) -> tuple[int, int]:
    """What falls due with time besides reminders, in the caller's transaction: held posts
    expire, daily owner summaries go out.  The daemon runs it too, so neither waits for cron.
    Returns (held posts expired, summaries queued)."""
    from clublist.mail.moderation import expire_held
    from clublist.outbound.membership import send_owner_summaries

    return expire_held(conn, club, now), send_owner_summaries(conn, club, now)


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    from clublist.state import db as state

    with state.transaction(conn):
        yield conn


def _all_occurrences(schedule: Schedule, tz: ZoneInfo, after: datetime, upto: datetime) -> Iterator[datetime]:
    """occurrences() paged: a due window is never cut short."""
    while after < upto:
        page = occurrences(schedule, tz, after, upto)
        yield from page
        if not page:
            return
        after = page[-1]


def _occurrence_key(when: datetime) -> str:
    """The occurrence as reminder_runs stores it: one instant, one spelling (UTC)."""
    return when.astimezone(UTC).isoformat()


def _skip(
    conn: sqlite3.Connection, club: Club, reminder: Reminder, when: datetime, now: datetime, result: RunResult
) -> None:
    late = now - when
    firing = Firing(
        reminder.id,
        when,
        reminder.target(club.site.domain),
        reminder.subject,
        reason=f"missed by {_span(late)}, more than the lateness allowed",
    )
    if result.dry_run:
        if not _already_run(conn, reminder.id, when):
            result.skipped.append(firing)
        return
    inserted = conn.execute(
        "INSERT OR IGNORE INTO reminder_runs (reminder_id, occurrence, queued, queue_id, skipped)"
        " VALUES (?, ?, ?, '', 1)",
        (reminder.id, _occurrence_key(when), now.timestamp()),
    ).rowcount
    if inserted:
        log.warning(
            "reminder %s of %s to %s skipped: %s",
            reminder.id,
            f"{when:{TIME_FORMAT}}",
            firing.to,
            firing.reason,
        )
        result.skipped.append(firing)


def _already_run(conn: sqlite3.Connection, reminder_id: str, when: datetime) -> bool:
    row = conn.execute(
        "SELECT 1 FROM reminder_runs WHERE reminder_id = ? AND occurrence = ?",
        (reminder_id, _occurrence_key(when)),
    ).fetchone()
    return row is not None


def _fire(
    conn: sqlite3.Connection, club: Club, reminder: Reminder, when: datetime, now: datetime, result: RunResult
) -> None:
    if result.dry_run:
        if not _already_run(conn, reminder.id, when):
            firing = _preview(club, reminder, when)
            (result.skipped if firing.reason else result.queued).append(firing)
        return
    key = _occurrence_key(when)
    # The row first: if another run recorded this occurrence, it is theirs and we send nothing.
    inserted = conn.execute(
        "INSERT OR IGNORE INTO reminder_runs (reminder_id, occurrence, queued, queue_id, skipped)"
        " VALUES (?, ?, ?, '', 0)",
        (reminder.id, key, now.timestamp()),
    ).rowcount
    if not inserted:
        return
    firing = _send(conn, club, reminder, when, now)
    if firing.reason:
        conn.execute(
            "UPDATE reminder_runs SET skipped = 1 WHERE reminder_id = ? AND occurrence = ?",
            (reminder.id, key),
        )
        log.warning("reminder %s of %s not sent: %s", reminder.id, f"{when:{TIME_FORMAT}}", firing.reason)
        result.skipped.append(firing)
        return
    # One id per run row; a membership reminder's other messages carry the same X-Clublist-Reminder.
    conn.execute(
        "UPDATE reminder_runs SET queue_id = ? WHERE reminder_id = ? AND occurrence = ?",
        (firing.queue_ids[0] if firing.queue_ids else "", reminder.id, key),
    )
    log.info(
        "reminder %s of %s queued as %s for %d recipients",
        reminder.id,
        f"{when:{TIME_FORMAT}}",
        " ".join(firing.queue_ids[:3]) + (" ..." if len(firing.queue_ids) > 3 else ""),
        firing.recipients,
    )
    result.queued.append(firing)


def _preview(club: Club, reminder: Reminder, when: datetime) -> Firing:
    """What :func:`_send` would do, without building or queuing anything."""
    firing = Firing(reminder.id, when, reminder.target(club.site.domain), reminder.subject)
    if reminder.membership:
        count = sum(1 for m in club.members if m.receives and _lists_of(club, m))
        return _with(firing, recipients=count)
    if reminder.to_list:
        from clublist.mail import enqueue as posting

        mailing_list = club.lists.get(reminder.to)
        if mailing_list is None:
            return _with(firing, reason=f"there is no list {reminder.to!r} any more")
        return _with(firing, recipients=len(posting.recipients(club, mailing_list, None)))
    _address, reason = _personal_address(club, reminder.to)
    return _with(firing, recipients=0 if reason else 1, reason=reason)


def _with(firing: Firing, **changes: Any) -> Firing:
    from dataclasses import replace

    return replace(firing, **changes)


def _send(conn: sqlite3.Connection, club: Club, reminder: Reminder, when: datetime, now: datetime) -> Firing:
    firing = Firing(reminder.id, when, reminder.target(club.site.domain), reminder.subject)
    if reminder.membership:
        queue_ids = _send_membership(conn, club, reminder, when, now)
        return _with(firing, queue_ids=tuple(queue_ids), recipients=len(queue_ids))
    if reminder.to_list:
        return _send_to_list(conn, club, reminder, when, now, firing)
    address, reason = _personal_address(club, reminder.to)
    if reason:
        return _with(firing, reason=reason)
    from clublist.outbound import reports

    member = club.member(address)
    message = reports.notice(
        sender=str(_bot(club)),
        to=str(Address(display_name=member.name if member else "", addr_spec=address)),
        subject=reminder.subject,
        text=_with_newline(reminder.text),
        message_id_domain=club.site.domain,
    )
    message["X-Clublist-Reminder"] = f"{reminder.id} {when.isoformat()}"
    queue_id = _enqueue_personal(conn, club, address, message, reminder.subject, now)
    return _with(firing, queue_ids=(queue_id,), recipients=1)


def _personal_address(club: Club, to: str) -> tuple[str, str]:
    """The address a personal reminder goes to, or why it cannot go."""
    member = club.member(to)
    if member is not None:
        if not member.receives:
            return member.email, f"{member.email}'s delivery is disabled"
        return member.email, ""
    if address_key(to) == address_key(club.site.site.admin):
        return club.site.site.admin, ""
    return to, f"{to} is no longer a member"


def _still_may_remind(club: Club, mailing_list: MailingList, creator: str) -> bool:
    """A member's reminder to a list fires only while they may post there (they may have left)."""
    from clublist.mail import rules

    actor = Actor.for_sender(club, creator)
    return actor.is_admin or rules.may_post(club, mailing_list, creator) is None


def _bot(club: Club) -> Address:
    """From of every reminder: the bot, named after the club, so replies reach the bot."""
    return Address(display_name=f"{club.site.site.name} reminders", addr_spec=club.site.bot_address)


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _send_to_list(
    conn: sqlite3.Connection, club: Club, reminder: Reminder, when: datetime, now: datetime, firing: Firing
) -> Firing:
    """A post to the list from bot@, decorated and queued exactly as an accepted post is."""
    from clublist.mail import enqueue as posting

    mailing_list = club.lists.get(reminder.to)
    if mailing_list is None:
        return _with(firing, reason=f"there is no list {reminder.to!r} any more")
    if reminder.created_by and not _still_may_remind(club, mailing_list, reminder.created_by):
        return _with(firing, reason=f"{reminder.created_by} may no longer post to {mailing_list.name}")
    message = list_message(club, mailing_list, reminder, when, now)
    post = posting.prepare_post(
        message, mailing_list, club, None, rewrite_from=False, subject=reminder.subject
    )
    digest_readers = readers(club, mailing_list) if mailing_list.archive else []
    if not post.recipients and not digest_readers:
        return _with(firing, reason=f"nobody on {mailing_list.name} receives mail")
    queue_id = posting.enqueue_post(conn, club, post, now.timestamp())
    return _with(firing, queue_ids=(queue_id,), recipients=len(post.recipients))


def list_message(
    club: Club, mailing_list: MailingList, reminder: Reminder, when: datetime, now: datetime
) -> EmailMessage:
    """The reminder as its author would post it to the list; decoration is prepare_post's."""
    list_address = mailing_list.address(club.site.domain)
    message = EmailMessage()
    message["From"] = _bot(club)
    message["To"] = Address(display_name=mailing_list.display_name, addr_spec=list_address)
    message["Subject"] = reminder.subject
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = make_msgid(domain=club.site.domain)
    # Replies discuss the reminder with the list, not with the bot (a list's own reply_to
    # setting still decides, in decoration).
    message["Reply-To"] = list_address
    message["Auto-Submitted"] = "auto-generated"
    message["X-Clublist-Reminder"] = f"{reminder.id} {when.isoformat()}"
    message.set_content(_with_newline(reminder.text))
    return message


def _enqueue_personal(
    conn: sqlite3.Connection, club: Club, address: str, message: EmailMessage, subject: str, now: datetime
) -> str:
    """A message to one person, bounces to the site's bounce address (VERP as the site says)."""
    from clublist.state import queue

    return queue.enqueue(
        conn,
        kind="reminder",
        sender=club.site.bounce_address,
        recipients=[address],
        content=bytes(message),
        now=now.timestamp(),
        list_name=None,
        verp=club.site.delivery.verp,
        subject=subject,
    )


def _lists_of(club: Club, member: Member) -> list[MailingList]:
    return [club.lists[name] for name in member.lists if name in club.lists]


def _send_membership(
    conn: sqlite3.Connection, club: Club, reminder: Reminder, when: datetime, now: datetime
) -> list[str]:
    """One personal message per member who receives mail and is on a list (Mailman's monthly
    reminder, Sympa's REMIND).  A bounce of it counts like any bounce: it is also a probe."""
    from clublist.outbound import reports

    subject = reminder.subject or f"Your mailing lists at {club.site.site.name}"
    queue_ids = []
    for member in club.members:
        lists = _lists_of(club, member)
        if not member.receives or not lists:
            continue
        message = reports.notice(
            sender=str(_bot(club)),
            to=str(Address(display_name=member.name, addr_spec=member.email)),
            subject=subject,
            text=membership_text(club, member, lists, intro=reminder.text),
            message_id_domain=club.site.domain,
        )
        message["X-Clublist-Reminder"] = f"{reminder.id} {when.isoformat()}"
        queue_ids.append(_enqueue_personal(conn, club, member.email, message, subject, now))
    return queue_ids


def membership_text(club: Club, member: Member, lists: list[MailingList], intro: str = "") -> str:
    """The membership reminder's text: each list, the address it sends to, and how to leave it."""
    bot = club.site.bot_address
    greeting = f"Hello {member.name}," if member.name else "Hello,"
    count = "the mailing list" if len(lists) == 1 else f"the {len(lists)} mailing lists"
    lines = [greeting, ""]
    if intro.strip():
        lines += [intro.strip(), ""]
    lines += [
        f"This is a reminder from {club.site.site.name}: you are on {count} below,",
        f"subscribed as {member.email}.",
        "",
    ]
    for mailing_list in lists:
        title = mailing_list.display_name
        if mailing_list.description:
            title += f": {mailing_list.description}"
        lines += [
            f"{mailing_list.address(club.site.domain)}  ({title})",
            f"  you receive it at: {member.email}",
            f"  to leave it, send 'unsubscribe {mailing_list.name}' to {bot}",
            f"  or use: mailto:{bot}?subject=unsubscribe%20{mailing_list.name}",
            "",
        ]
    if member.aliases:
        lines += [f"You may also post from: {', '.join(member.aliases)}.", ""]
    lines += [f"Send 'help' to {bot} for everything else the club's bot can do."]
    return "\n".join(lines) + "\n"


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def read_reminder_runs(conn: sqlite3.Connection, reminder_id: str) -> list[tuple[str, bool, str]]:
    """The recorded occurrences of a reminder, oldest first: (occurrence, skipped, queue id)."""
    rows = conn.execute(
        "SELECT occurrence, skipped, queue_id FROM reminder_runs WHERE reminder_id = ? ORDER BY occurrence",
        (reminder_id,),
    ).fetchall()
    return [(r[0], bool(r[1]), r[2]) for r in rows]
