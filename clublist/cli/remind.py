"""``clublist remind``: queue the reminders that are due (for cron), and add, list, remove them.

Bare ``clublist remind`` calls :func:`clublist.actions.cron.run_due`; with ``--send`` it then
delivers in the foreground the way ``queue flush`` does (its code, imported), so a club
without a running daemon still gets its reminders.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.errors import ClublistError

if TYPE_CHECKING:
    from clublist.actions.cron import Firing, RunResult
    from clublist.actions.reminders import ReminderInfo

_TIME_FORMAT = "%Y-%m-%d %H:%M %z"  # the site's time zone, with its offset
LS_COLUMNS = ["id", "to", "schedule", "next", "subject", "created by"]


@click.group("remind", invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Show what is due; queue and record nothing.")
@click.option(
    "--send",
    is_flag=True,
    help="Then deliver now, in the foreground, as 'queue flush' does (no daemon needed).",
)
@click.option(
    "--max-late",
    default="6h",
    show_default=True,
    metavar="DURATION",
    help="Skip occurrences missed by more than this (30m, 6h, 2d); they are reported, not sent.",
)
@json_option
@click.pass_context
def remind(ctx: click.Context, dry_run: bool, send: bool, max_late: str, as_json: bool) -> None:
    """Queue the reminders that have fallen due; add, list and remove reminders.

    Run bare from cron every few minutes: each occurrence is queued exactly
    once, even when two runs overlap; what a stopped cron missed is sent late
    within --max-late and skipped (and reported) beyond it.  Prints nothing
    when nothing was due.  The crontab line (add --send when no daemon runs):

    */5 * * * * clublist --dir /srv/club/lists.d remind

    Example: clublist remind --dry-run
    """
    if ctx.invoked_subcommand is not None:
        if dry_run or send or as_json:
            raise click.UsageError("--dry-run, --send and --json go with the bare 'clublist remind'")
        return
    app = ctx.find_object(App)
    assert app is not None
    _run(app, dry_run=dry_run, send=send, max_late=max_late, as_json=as_json)


def _run(app: App, *, dry_run: bool, send: bool, max_late: str, as_json: bool) -> None:
    from clublist.actions import cron
    from clublist.state import db as state

    if send and app.by_mail:
        raise ClublistError("--send delivers from this process; by mail, leave it to the daemon")
    lateness = cron.parse_duration(max_late)
    conn = state.connect(app.state_path)
    try:
        now = datetime.fromtimestamp(app.clock(), UTC)
        result = cron.run_due(app.store, conn, app.actor, now=now, max_late=lateness, dry_run=dry_run)
    finally:
        conn.close()
    if as_json:
        render.json_out(app, result)
    else:
        _print_run(app, result)
    if dry_run:
        return
    lock = state.DaemonLock(app.state_path)
    if lock.holder() is not None:
        if result.queued or result.digests:
            lock.wake()  # the daemon would find them within minutes; now is better
        return
    if send:
        from clublist.actions.queue import deliver_now

        deliver_now(app.store, app.state_path, lock, retry_deferred=False)
        if not as_json:
            _print_outcomes(app, result)


def _print_run(app: App, result: RunResult) -> None:
    verb, skip = ("would queue", "would skip") if result.dry_run else ("queued", "skipped")
    for firing in result.queued:
        ids = f" as {' '.join(firing.queue_ids[:3])}{' ...' if len(firing.queue_ids) > 3 else ''}"
        app.stream.write(
            f"{verb} {_describe(firing)}{ids if firing.queue_ids else ''} "
            f"({firing.recipients} {'recipient' if firing.recipients == 1 else 'recipients'})\n"
        )
    for firing in result.skipped:
        app.stream.write(f"{skip} {_describe(firing)}: {firing.reason}\n")
    for run in result.digests:
        app.stream.write(
            f"{verb} the digest of {run.list_name} ({run.posts} posts) for {run.recipients} members"
            + (f" as {run.queue_id}" if run.queue_id else "")
            + "\n"
        )
    if result.expired_held:
        app.stream.write(f"expired {result.expired_held} held posts (moderation.expire_days)\n")
    if result.owner_summaries:
        app.stream.write(f"queued {result.owner_summaries} daily summaries to list owners\n")
    if result.dry_run and not (result.queued or result.skipped or result.digests):
        app.stream.write(f"nothing is due (it is {result.now:{_TIME_FORMAT}})\n")


def _describe(firing: Firing) -> str:
    subject = f" '{firing.subject}'" if firing.subject else ""
    return f"{firing.reminder_id} of {firing.occurrence:{_TIME_FORMAT}} to {firing.to}{subject}"


def _print_outcomes(app: App, result: RunResult) -> None:
    """After a foreground delivery: what became of the reminders just queued."""
    from clublist.state import db as state
    from clublist.state import queue

    ids = [queue_id for firing in result.queued for queue_id in firing.queue_ids]
    if not ids:
        return
    conn = state.connect(app.state_path)
    try:
        rows = [row for queue_id in ids for row in queue.rows(conn, "all", queue_id)]
    finally:
        conn.close()
    tally = {s: sum(r.status == s for r in rows) for s in ("sent", "deferred", "failed")}
    waiting = sum(r.status in ("pending", "inflight") for r in rows)
    summary = ", ".join(f"{n} {s}" for s, n in tally.items())
    app.stream.write(f"reminders: {summary}" + (f", {waiting} not tried yet" if waiting else "") + "\n")


@by_mail("member")
@remind.command("add")
@click.option("--to", "to", metavar="LIST|EMAIL", help="A list (a post to it) or a member (to them alone).")
@click.option("--at", metavar="WHEN", help="Once: '2026-12-01 18:00', 'tomorrow 18:00', 'in 2 hours'.")
@click.option(
    "--every", metavar="PHRASE", help="Recurring: 'monday 18:00', 'first monday of the month 10:00'."
)
@click.option("--cron", metavar="EXPR", help="Recurring, as cron: '0 18 * * 1' (Mondays at 18:00).")
@click.option("--subject", default="", help="The subject of the reminder.")
@click.option("--text", default=None, help="The text of the reminder.")
@click.option("--text-file", metavar="FILE", help="Read the text from a file ('-' for standard input).")
@click.option("--until", metavar="WHEN", help="A recurring reminder stops after this time.")
@click.option("--count", type=click.IntRange(min=1), help="A recurring reminder stops after N times.")
@click.option(
    "--membership",
    is_flag=True,
    help="The membership reminder: each member gets their lists, their address and how to leave.",
)
@json_option
@pass_app
def add(
    app: App,
    to: str | None,
    at: str | None,
    every: str | None,
    cron: str | None,
    subject: str,
    text: str | None,
    text_file: str | None,
    until: str | None,
    count: int | None,
    membership: bool,
    as_json: bool,
) -> None:
    """Schedule a reminder to a list or a member, once or recurring.

    Times are in the site's time zone (site.timezone) and follow its
    daylight-saving changes; a time that is past, or that the change skips
    or repeats, is refused with the reason.

    Example: clublist remind add --to youth --every "monday 18:00" --subject Training --text "Hall 2"
    """
    from clublist.actions import reminders

    if text is not None and text_file is not None:
        raise click.UsageError("give --text or --text-file, not both")
    if text_file is not None:
        text = _read_text_file(app, text_file)
    result = reminders.remind_add(
        app.store,
        app.actor,
        to=to,
        subject=subject,
        text=text or "",
        at=at,
        every=every,
        cron=cron,
        until=until,
        count=count,
        membership=membership,
    )
    render.done(app, result, as_json)


def _read_text_file(app: App, name: str) -> str:
    if app.by_mail:
        raise ClublistError("--text-file reads a file on the server; by mail, write the text with --text")
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClublistError(f"cannot read {name}: {exc}") from None


def _ls_row(info: ReminderInfo) -> dict[str, Any]:
    return {
        "id": info.reminder.id,
        "to": info.target,
        "schedule": info.schedule,
        "next": f"{info.next:{_TIME_FORMAT}}" if info.next else "(over)",
        "subject": info.reminder.subject or "(membership reminder)",
        "created by": info.reminder.created_by,
    }


def _json_row(info: ReminderInfo) -> dict[str, Any]:
    reminder, schedule = info.reminder, info.reminder.schedule
    return {
        "id": reminder.id,
        "to": reminder.to or None,
        "address": info.target if not reminder.membership else None,
        "membership": reminder.membership,
        "subject": reminder.subject,
        "text": reminder.text,
        "kind": schedule.kind,
        "expr": schedule.expr,
        "until": _iso(schedule.until),
        "count": schedule.count,
        "start": _iso(schedule.start),
        "schedule": info.schedule,
        "next": _iso(info.next),
        "created_by": reminder.created_by,
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


@by_mail("member", changes=False)
@remind.command("ls")
@json_option
@pass_app
def ls(app: App, as_json: bool) -> None:
    """List reminders with when each fires next (in the site's time zone).

    The administrator sees all; a member sees those to their lists, to
    themselves, and those they created.

    Example: clublist remind ls --json
    """
    from clublist.actions import reminders

    found = reminders.remind_ls(app.store, app.actor)
    if as_json:
        render.json_out(app, [_json_row(info) for info in found])
    else:
        render.table(app, [_ls_row(info) for info in found], LS_COLUMNS, empty="no reminders")


@by_mail("member")
@remind.command("rm")
@click.argument("reminder_id", metavar="ID")
@pass_app
def rm(app: App, reminder_id: str) -> None:
    """Remove a reminder (the administrator, its creator, or its list's owners).

    Example: clublist remind rm rk7qm
    """
    from clublist.actions import reminders

    render.done(app, reminders.remind_rm(app.store, app.actor, reminder_id))
