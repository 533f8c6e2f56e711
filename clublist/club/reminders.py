"""lists.d/reminders.toml: the reminder records, read with file:line errors.

``schedule.py`` says *when*; this module says *what* a reminder is.  The actions that
change the file are in :mod:`clublist.actions.reminders`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from clublist.club.files import REMINDERS_FILE as REMINDERS_FILE
from clublist.club.model import Site, check_list_name, parse_address
from clublist.club.schedule import (
    Schedule,
    ScheduleError,
    parse_every,
    validate_cron,
)
from clublist.club.tomltext import comment_start, parse_toml, table_header, table_location
from clublist.errors import ClublistError

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


ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


REMINDER_HEADER = table_header("reminder")


TIME_FORMAT = "%Y-%m-%d %H:%M %Z"


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
        text = f"at {when.astimezone(tz):{TIME_FORMAT}}"
    else:
        text = f"{schedule.kind} {schedule.expr}"
    if schedule.until is not None:
        text += f" until {schedule.until.astimezone(tz):{TIME_FORMAT}}"
    if schedule.count is not None:
        text += f", {schedule.count} times"
    return text


def reminder_from_toml(data: dict[str, Any]) -> Reminder:
    """Build a :class:`Reminder` from one ``[[reminder]]`` table, refusing unknown keys and wrong types."""
    unknown = set(data) - set(REMINDER_KEYS)
    if unknown:
        raise ClublistError(f"unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(REMINDER_KEYS)}")
    reminder_id = data.get("id")
    if not isinstance(reminder_id, str) or not ID_RE.fullmatch(reminder_id):
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
    check_subject(subject)
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


def check_subject(subject: str) -> str:
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
                f"{table_location(path, text, REMINDER_HEADER, index, len(tables), 'reminder')}: {exc}"
            ) from None
        reminders.append(reminder)
    return reminders


def load_reminders(path: Path) -> list[Reminder]:
    """Every reminder in reminders.toml at *path* (none when the file does not exist yet)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ClublistError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_reminders(path, text)


def reminder_spans(text: str) -> list[tuple[int, int]]:
    """The text each ``[[reminder]]`` block owns: the comment lines directly above its header,
    the header, and its lines up to the last one with content before the next block; comments
    and blank lines after that belong to nobody.  (Not "up to the first blank line", as in
    members.toml: a reminder's multi-line text may hold blank lines.)"""
    headers = list(REMINDER_HEADER.finditer(text))
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


def site_zone(site: Site) -> ZoneInfo:
    """The zone reminders are scheduled in (``site.timezone``)."""
    return ZoneInfo(site.site.timezone)
