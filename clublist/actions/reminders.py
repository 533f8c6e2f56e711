"""Reminder actions: add, list and remove reminders in lists.d/reminders.toml.

Plain values plus the :class:`~clublist.actions.Actor` asking; rights are checked here.
Sending what falls due is :mod:`clublist.actions.cron`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from clublist.actions import Actor, Done
from clublist.club.model import address_key, parse_address
from clublist.club.reminders import (
    REMINDERS_HEADER,
    TIME_FORMAT,
    Reminder,
    check_subject,
    describe_schedule,
    parse_reminders,
    reminder_spans,
    site_zone,
)
from clublist.club.schedule import (
    Schedule,
    next_occurrence,
    parse_every,
    parse_when,
    validate_cron,
)
from clublist.club.store import (
    REMINDERS_FILE,
    Club,
    Store,
)
from clublist.errors import ClublistError, PermissionDenied

# Generated ids: "r" and four characters nobody misreads (no 0/o, 1/l/i), ~800,000 of them,
# so a deleted reminder's id (and its rows in reminder_runs) is practically never reused.
_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


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
    tz = site_zone(club.site)
    now = (now or datetime.now(UTC)).astimezone(tz).replace(microsecond=0)
    target = _check_target(club, actor, to, membership)
    subject = check_subject(subject)
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
        f"{reminder.target(club.site.domain)}; first {first:{TIME_FORMAT}}",
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
    tz = site_zone(club.site)
    now = now or datetime.now(UTC)
    return [
        ReminderInfo(
            r,
            r.target(club.site.domain),
            describe_schedule(r.schedule, tz),
            next_occurrence(r.schedule, tz, now),
        )
        for r in store.reminders()
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
        spans = reminder_spans(text)
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
