"""Reminders: what lists.d/reminders.toml holds, who may change it, and queuing what falls due.

``schedule.py`` says *when* (pure functions over a clock); this module says *what happens*:
cron runs ``clublist remind`` -> :func:`run_due` -> a list post through :mod:`clublist.mail.enqueue`
(decorated like any post) or a personal message -> :mod:`clublist.state.queue`, each occurrence
exactly once (a row in ``reminder_runs`` under ``BEGIN IMMEDIATE``).  The reminder actions
(:func:`remind_add`, :func:`remind_ls`, :func:`remind_rm`) live here rather than in
``actions.py`` so that module does not import the posting path; they follow its contract:
plain values plus the :class:`~clublist.actions.Actor` asking, rights checked here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from clublist.actions import Actor, Done
from clublist.club.model import MailingList, Member, address_key, check_list_name, parse_address
from clublist.club.schedule import (
    Schedule,
    ScheduleError,
    next_occurrence,
    occurrences,
    parse_every,
    parse_when,
    validate_cron,
)
from clublist.club.store import (
    REMINDERS_FILE,
    Club,
    Store,
    comment_start,
    parse_toml,
    table_header,
    table_location,
)
from clublist.errors import ClublistError, PermissionDenied

log = logging.getLogger(__name__)
# A library logs; the program using it decides where that goes (the daemon configures
# "clublist", the CLI prints run_due's result itself).
log.addHandler(logging.NullHandler())

DEFAULT_MAX_LATE = timedelta(hours=6)
SCHEDULE_KEYS = ("at", "every", "cron")
REMINDER_KEYS = (
    "id",
    "to",
    "subject",
    "text",
    *SCHEDULE_KEYS,
    "until",
    "count",
    "start",
    "created_by",
    "membership",
)
# Generated ids: "r" and four characters nobody misreads (no 0/o, 1/l/i), ~800,000 of them,
# so a deleted reminder's id (and its rows in reminder_runs) is practically never reused.
_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_REMINDER_HEADER = table_header("reminder")
_DURATION_RE = re.compile(r"(\d+)\s*(s|sec|m|min|h|hours?|d|days?)?")
_TIME_FORMAT = "%Y-%m-%d %H:%M %Z"

REMINDERS_HEADER = """\
# Reminders: one [[reminder]] table each; `clublist remind add` writes them, cron runs
# `clublist remind` to send what is due.
#   id          short name, for `clublist remind rm ID`
#   to          a list name (a post to that list) or a member's address (to them alone)
#   at | every | cron   one moment, a phrase such as "monday 18:00", or a cron expression,
#               in the site's time zone (club.toml)
#   until, count        when a recurring reminder ends (optional)
#   start       when it was created; a count is counted from here
#   membership  true for the membership reminder: each member gets their lists and how to leave
"""


# --- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reminder:
    """One ``[[reminder]]``: what to send, to whom, when.

    ``to`` is a list name or an address; it is empty for the membership reminder, which goes
    to every member personally.
    """

    id: str
    schedule: Schedule
    to: str = ""
    subject: str = ""
    text: str = ""
    created_by: str = ""
    membership: bool = False

    @property
    def to_list(self) -> bool:
        return not self.membership and "@" not in self.to

    def target(self, domain: str) -> str:
        """Where it goes, for people: ``youth@myclub.org``, an address, or every member."""
        if self.membership:
            return "every member (membership reminder)"
        return f"{self.to}@{domain}" if self.to_list else self.to

    def to_toml(self) -> dict[str, Any]:
        """The keys worth writing, in the order a person reads them."""
        out: dict[str, Any] = {"id": self.id}
        if self.membership:
            out["membership"] = True
        if self.to:
            out["to"] = self.to
        if self.subject:
            out["subject"] = self.subject
        if self.text:
            out["text"] = self.text
        kind, expr = self.schedule.kind, self.schedule.expr
        out[kind] = datetime.fromisoformat(expr) if kind == "at" else expr
        if self.schedule.until is not None:
            out["until"] = self.schedule.until
        if self.schedule.count is not None:
            out["count"] = self.schedule.count
        if self.schedule.start is not None:
            out["start"] = self.schedule.start
        if self.created_by:
            out["created_by"] = self.created_by
        return out


def describe_schedule(schedule: Schedule, tz: ZoneInfo) -> str:
    """``every monday 18:00 until 2026-12-31 18:00 CET``, as ``remind ls`` shows it."""
    if schedule.kind == "at":
        when = datetime.fromisoformat(schedule.expr)
        if when.utcoffset() is None:
            when = when.replace(tzinfo=tz)
        text = f"at {when.astimezone(tz):{_TIME_FORMAT}}"
    else:
        text = f"{schedule.kind} {schedule.expr}"
    if schedule.until is not None:
        text += f" until {schedule.until.astimezone(tz):{_TIME_FORMAT}}"
    if schedule.count is not None:
        text += f", {schedule.count} times"
    return text


def reminder_from_toml(data: dict[str, Any]) -> Reminder:
    """Build a :class:`Reminder` from one ``[[reminder]]`` table, refusing unknown keys and wrong types."""
    unknown = set(data) - set(REMINDER_KEYS)
    if unknown:
        raise ClublistError(f"unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(REMINDER_KEYS)}")
    reminder_id = data.get("id")
    if not isinstance(reminder_id, str) or not _ID_RE.fullmatch(reminder_id):
        raise ClublistError(
            f"id {reminder_id!r} is not a reminder id: use lower-case letters, digits, '-' and '_', "
            'e.g. id = "training"'
        )
    membership = data.get("membership", False)
    if not isinstance(membership, bool):
        raise ClublistError(f"{reminder_id}: membership must be true or false")
    to = _text(data, "to", reminder_id)
    subject = _text(data, "subject", reminder_id)
    text = _text(data, "text", reminder_id)
    if membership:
        if to:
            raise ClublistError(f"{reminder_id}: a membership reminder goes to every member; remove 'to'")
    else:
        if not to:
            raise ClublistError(f"{reminder_id}: 'to' is missing: a list name or a member's address")
        to = parse_address(to, "to") if "@" in to else check_list_name(to)
        if not subject.strip() or not text.strip():
            raise ClublistError(f"{reminder_id}: a reminder needs a subject and a text")
    _check_subject(subject)
    created_by = _text(data, "created_by", reminder_id)
    if created_by:
        parse_address(created_by, "created_by")
    try:
        schedule = _schedule_from_toml(data, reminder_id)
    except ScheduleError as exc:
        raise ClublistError(f"{reminder_id}: {exc}") from None
    return Reminder(reminder_id, schedule, to, subject, text, created_by, membership)


def _text(data: dict[str, Any], key: str, reminder_id: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ClublistError(f"{reminder_id}: {key} must be text, not {value!r}")
    return value


def _check_subject(subject: str) -> str:
    if any(ord(c) < 32 or c == "\x7f" for c in subject):
        raise ClublistError("a subject is one line of text, without control characters")
    if len(subject) > 200:
        raise ClublistError("a subject is at most 200 characters")
    return subject.strip()


def _schedule_from_toml(data: dict[str, Any], reminder_id: str) -> Schedule:
    kinds = [k for k in SCHEDULE_KEYS if k in data]
    if len(kinds) != 1:
        raise ClublistError(
            f"{reminder_id}: give exactly one of at, every and cron "
            f'(e.g. every = "monday 18:00"), not {len(kinds)}'
        )
    kind = kinds[0]
    value = data[kind]
    if kind == "at":
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ScheduleError(
                    f"at {value!r} is not a date and time, e.g. 2026-12-01T18:00+01:00"
                ) from None
        if not isinstance(value, datetime):
            raise ScheduleError("at must be a date and time, e.g. at = 2026-12-01T18:00:00+01:00")
        expr = value.isoformat()
    elif not isinstance(value, str):
        example = '"monday 18:00"' if kind == "every" else '"0 18 * * 1"'
        raise ScheduleError(f"{kind} must be text, e.g. {kind} = {example}")
    else:
        expr = parse_every(value) if kind == "every" else validate_cron(value)
    count = data.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise ScheduleError("count must be a whole number")
    return Schedule(
        kind=kind,  # type: ignore[arg-type]
        expr=expr,
        until=_moment(data, "until"),
        count=count,
        start=_moment(data, "start"),
    )


def _moment(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ScheduleError(
                f"{key} {value!r} is not a date and time, e.g. 2026-12-01T18:00:00+01:00"
            ) from None
    if not isinstance(value, datetime):
        raise ScheduleError(f"{key} must be a date and time with its offset, e.g. 2026-12-01T18:00:00+01:00")
    return value


def parse_reminders(path: Path, text: str) -> list[Reminder]:
    """Parse reminders.toml, reporting a bad or duplicated entry with its file and line."""
    data = parse_toml(path, text)
    unknown = set(data) - {"reminder"}
    if unknown:
        raise ClublistError(
            f"{path}: unknown key {sorted(unknown)[0]!r}; each reminder is a [[reminder]] table"
        )
    tables = data.get("reminder", [])
    if not isinstance(tables, list):
        raise ClublistError(f"{path}: 'reminder' must be written as [[reminder]] tables")
    reminders: list[Reminder] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        try:
            if not isinstance(table, dict):
                raise ClublistError("each reminder must be a table")
            reminder = reminder_from_toml(table)
            if reminder.id in seen:
                raise ClublistError(f"the id {reminder.id!r} is used twice; each reminder needs its own")
            seen.add(reminder.id)
        except ClublistError as exc:
            raise ClublistError(
                f"{table_location(path, text, _REMINDER_HEADER, index, len(tables), 'reminder')}: {exc}"
            ) from None
        reminders.append(reminder)
    return reminders


def load_reminders(store: Store) -> list[Reminder]:
    """Every reminder in lists.d (none when the file does not exist yet)."""
    path = store.path(REMINDERS_FILE)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ClublistError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_reminders(path, text)


def parse_duration(text: str) -> timedelta:
    """``90m``, ``6h``, ``2d``, ``45s`` or plain seconds, for ``--max-late``."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise ClublistError(f"{text!r} is not a duration; write e.g. 30m, 6h or 2d")
    unit = (match.group(2) or "s")[0]
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return timedelta(seconds=seconds)


def site_zone(club: Club) -> ZoneInfo:
    return ZoneInfo(club.site.site.timezone)


# --- the actions ---------------------------------------------------------------------------


def remind_add(
    store: Store,
    actor: Actor,
    *,
    to: str | None = None,
    subject: str = "",
    text: str = "",
    at: str | None = None,
    every: str | None = None,
    cron: str | None = None,
    until: str | None = None,
    count: int | None = None,
    membership: bool = False,
    now: datetime | None = None,
) -> Done:
    """Schedule a reminder; the time or schedule is checked now, against the site's clock and zone.

    The administrator may remind anyone; a list's owners and, for the lists they may post to,
    its members may remind a list; anyone may remind themselves.  Only the administrator
    schedules the membership reminder.
    """
    club = store.load()
    tz = site_zone(club)
    now = (now or datetime.now(UTC)).astimezone(tz).replace(microsecond=0)
    target = _check_target(club, actor, to, membership)
    subject = _check_subject(subject)
    if not membership and not subject:
        raise ClublistError("a reminder needs a subject (--subject)")
    if not membership and not text.strip():
        raise ClublistError("a reminder needs a text (--text or --text-file)")
    schedule = _new_schedule(at, every, cron, until, count, now, tz)
    if next_occurrence(schedule, tz, now) is None:
        raise ClublistError(
            f"'{describe_schedule(schedule, tz)}' never fires after now; "
            "give a later --until or a larger --count"
        )
    creator = actor.address or club.site.site.admin
    added: list[Reminder] = []

    def change(document: Any) -> None:
        import tomlkit

        existing = {str(t.get("id")) for t in document.get("reminder", [])}
        reminder = Reminder(_new_id(existing), schedule, target, subject, text, creator, membership)
        table = tomlkit.table()
        for key, value in reminder.to_toml().items():
            table[key] = tomlkit.string(value, multiline=True) if key == "text" and "\n" in value else value
        if "reminder" not in document:
            if not document.body:
                for line in REMINDERS_HEADER.splitlines():
                    document.add(tomlkit.comment(line.removeprefix("# ").removeprefix("#")))
                document.add(tomlkit.nl())
            document["reminder"] = tomlkit.aot()
        elif len(document["reminder"]):
            table.trivia.indent = "\n"  # a blank line between reminders, as a person writes them
        document["reminder"].append(table)
        added.append(reminder)

    store.edit_toml(REMINDERS_FILE, change, create=True)
    reminder = added[0]
    first = next_occurrence(reminder.schedule, tz, now)
    assert first is not None
    return Done(
        f"added reminder {reminder.id}: {describe_schedule(reminder.schedule, tz)} to "
        f"{reminder.target(club.site.domain)}; first {first:{_TIME_FORMAT}}",
        reminder,
    )


def _check_target(club: Club, actor: Actor, to: str | None, membership: bool) -> str:
    """The ``to`` to store (a list name or a member's address), if the actor may remind it."""
    from clublist.mail.rules import may_post

    if membership:
        if to:
            raise ClublistError("the membership reminder goes to every member; leave out --to")
        if not actor.is_admin:
            raise PermissionDenied("only the club's administrator may schedule the membership reminder")
        return ""
    if not to or not to.strip():
        raise ClublistError("say whom to remind: --to LIST or --to MEMBER@ADDRESS")
    to = to.strip()
    if "@" not in to:
        mailing_list = club.require_list(to)
        may_remind = actor.is_admin or actor.owns(mailing_list)
        if not may_remind and (actor.address is None or may_post(club, mailing_list, actor.address)):
            raise PermissionDenied(
                f"only those who may post to {mailing_list.address(club.site.domain)} may remind it"
            )
        return mailing_list.name
    address = parse_address(to, "--to")
    member = club.member(address)
    if member is not None:
        address = member.email
    elif address_key(address) != address_key(club.site.site.admin):
        raise ClublistError(f"{address} is not a member; a reminder goes to a list or to a member")
    if not actor.is_admin and not (actor.address and address_key(actor.address) == address_key(address)):
        raise PermissionDenied("you may remind your lists and yourself, not other people")
    return address


def _new_schedule(
    at: str | None,
    every: str | None,
    cron: str | None,
    until: str | None,
    count: int | None,
    now: datetime,
    tz: ZoneInfo,
) -> Schedule:
    given = [name for name, value in (("--at", at), ("--every", every), ("--cron", cron)) if value]
    if len(given) != 1:
        raise ClublistError(
            "say when with one of --at WHEN, --every PHRASE or --cron EXPR"
            + (f" (not {' and '.join(given)})" if given else "")
        )
    if at:
        if until or count is not None:
            raise ClublistError("--until and --count are for recurring reminders (--every or --cron)")
        return Schedule("at", parse_when(at, now, tz).isoformat(), start=now)
    expr = parse_every(every) if every else validate_cron(cron or "")
    end = parse_when(until, now, tz) if until else None
    return Schedule("every" if every else "cron", expr, until=end, count=count, start=now)


def _new_id(existing: set[str]) -> str:
    while True:
        candidate = "r" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(4))
        if candidate not in existing:
            return candidate


@dataclass(frozen=True)
class ReminderInfo:
    """A reminder as ``remind ls`` shows it: with where it goes and when it next fires."""

    reminder: Reminder
    target: str
    schedule: str
    next: datetime | None


def remind_ls(store: Store, actor: Actor, now: datetime | None = None) -> list[ReminderInfo]:
    """The reminders the asker may see: all for the administrator; for others, those to the
    lists they are on or own, to themselves, or that they created."""
    club = store.load()
    tz = site_zone(club)
    now = now or datetime.now(UTC)
    return [
        ReminderInfo(
            r,
            r.target(club.site.domain),
            describe_schedule(r.schedule, tz),
            next_occurrence(r.schedule, tz, now),
        )
        for r in load_reminders(store)
        if _may_see(club, actor, r)
    ]


def _may_see(club: Club, actor: Actor, reminder: Reminder) -> bool:
    if actor.is_admin or _created(actor, reminder):
        return True
    if reminder.membership or actor.address is None:
        return False
    if not reminder.to_list:
        return address_key(reminder.to) == address_key(actor.address)
    member = club.member(actor.address)
    mailing_list = club.lists.get(reminder.to)
    return bool(member and reminder.to in member.lists) or bool(mailing_list and actor.owns(mailing_list))


def _created(actor: Actor, reminder: Reminder) -> bool:
    return bool(actor.address and reminder.created_by) and address_key(actor.address or "") == address_key(
        reminder.created_by
    )


def remind_rm(store: Store, actor: Actor, reminder_id: str) -> Done:
    """Remove a reminder: the administrator, whoever created it, or the owners of its list.

    The file is edited as text, as members.toml is: the ``[[reminder]]`` block goes with the
    comment lines directly above it; a comment after a blank line belongs to nobody and stays.
    """
    club = store.load()
    path = store.path(REMINDERS_FILE)
    with store.locked():
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ClublistError(f"there is no reminder {reminder_id!r}: no reminders yet") from None
        found = parse_reminders(path, text)
        index = next((i for i, r in enumerate(found) if r.id == reminder_id), None)
        if index is None:
            raise ClublistError(f"there is no reminder {reminder_id!r}; see 'clublist remind ls'")
        reminder = found[index]
        mailing_list = club.lists.get(reminder.to) if reminder.to_list else None
        if not (actor.is_admin or _created(actor, reminder) or (mailing_list and actor.owns(mailing_list))):
            raise PermissionDenied(
                f"only the administrator, {reminder.created_by or 'its creator'} or the list's owners "
                f"may remove reminder {reminder_id}"
            )
        spans = _reminder_spans(text)
        if len(spans) != len(found):
            raise ClublistError(
                f"{path}: cannot find the [[reminder]] tables in the text; nothing was removed"
            )
        start, end = spans[index]
        if text.startswith("\n", end):  # the blank line that separated it from what follows
            end += 1
        new_text = text[:start] + text[end:]
        if parse_reminders(path, new_text) != found[:index] + found[index + 1 :]:
            raise ClublistError(
                f"{path}: could not remove {reminder_id} safely (unusual layout); nothing was changed"
            )
        store.write_text(REMINDERS_FILE, new_text)
    return Done(f"removed reminder {reminder.id} ({reminder.subject or 'membership reminder'})", reminder)


def _reminder_spans(text: str) -> list[tuple[int, int]]:
    """The text each ``[[reminder]]`` block owns: the comment lines directly above its header,
    the header, and its lines up to the last one with content before the next block; comments
    and blank lines after that belong to nobody.  (Not "up to the first blank line", as in
    members.toml: a reminder's multi-line text may hold blank lines.)"""
    headers = list(_REMINDER_HEADER.finditer(text))
    starts = [comment_start(text, match.start()) for match in headers]
    spans = []
    for index, match in enumerate(headers):
        limit = starts[index + 1] if index + 1 < len(headers) else len(text)
        end = match.end()
        position = match.end()
        for line in text[match.end() : limit].splitlines(keepends=True):
            position += len(line)
            if line.strip() and not line.lstrip().startswith("#"):
                end = position
        if end < limit and text[end - 1] != "\n":  # the header's own line break
            end = text.find("\n", end, limit) + 1 or limit
        spans.append((starts[index], end))
    return spans


# --- running what is due -------------------------------------------------------------------


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


def run_due(
    store: Store,
    conn: sqlite3.Connection,
    actor: Actor,
    *,
    now: datetime | None = None,
    max_late: timedelta = DEFAULT_MAX_LATE,
    dry_run: bool = False,
) -> RunResult:
    """Queue every occurrence that fell due since the last run, each exactly once.

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
    reminders = load_reminders(store)
    tz = site_zone(club)
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
        if not dry_run:
            conn.execute(
                "INSERT INTO reminder_cursor (id, last_run) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET last_run = MAX(last_run, excluded.last_run)",
                (now_utc.timestamp(),),
            )
    return result


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
            f"{when:{_TIME_FORMAT}}",
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
        log.warning("reminder %s of %s not sent: %s", reminder.id, f"{when:{_TIME_FORMAT}}", firing.reason)
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
        f"{when:{_TIME_FORMAT}}",
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
    targets = posting.recipients(club, mailing_list, None)
    if not targets:
        return _with(firing, reason=f"nobody on {mailing_list.name} receives mail")
    message = list_message(club, mailing_list, reminder, when, now)
    wire = posting.prepare(message, mailing_list, club, None, rewrite_from=False)
    queue_id = posting.enqueue_post(
        conn,
        club,
        mailing_list,
        recipients=targets,
        content=wire,
        author_key=None,
        subject=reminder.subject,
        now=now.timestamp(),
    )
    return _with(firing, queue_ids=(queue_id,), recipients=len(targets))


def list_message(
    club: Club, mailing_list: MailingList, reminder: Reminder, when: datetime, now: datetime
) -> EmailMessage:
    """The reminder as its author would post it to the list; decoration is posting.prepare's."""
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
