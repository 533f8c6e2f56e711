"""``clublist archive``: read, fetch, export and prune the lists' archives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.state import db as state

LS_COLUMNS = ["number", "date", "author", "subject"]


@click.group("archive")
def archive() -> None:
    """Read, fetch, export and prune the lists' archives (var/archive/LIST, Maildir).

    Example: clublist archive ls youth --since 2026-12-01
    """


def _row(entry: Any) -> dict[str, Any]:
    return {
        "number": entry.number,
        "date": datetime.fromtimestamp(entry.created, UTC).isoformat(timespec="seconds"),
        "author": entry.author,
        "subject": entry.subject,
    }


@by_mail("member", changes=False)
@archive.command("ls")
@click.argument("list_name", metavar="LIST")
@click.option("--since", metavar="DATE", help="Only posts since this day (2026-12-01, site time zone).")
@click.option("--author", metavar="A", default="", help="Only posts whose author's address contains A.")
@click.option("--search", metavar="TEXT", default="", help="Only posts whose subject or text has every word.")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N of them.")
@json_option
@pass_app
def ls(
    app: App, list_name: str, since: str | None, author: str, search: str, last: int | None, as_json: bool
) -> None:
    """List a list's archived posts with their numbers (members of the list may).

    Example: clublist archive ls youth --search "training hall" --json
    """
    from clublist.actions.archive import archive_ls, parse_since

    club = app.store.load()
    conn = state.connect(app.state_path)
    try:
        found = archive_ls(
            conn,
            club,
            app.actor,
            list_name,
            since=parse_since(club, since),
            author=author,
            search=search,
            last=last,
        )
    finally:
        conn.close()
    rows = [_row(e) for e in found]
    if as_json:
        render.json_out(app, rows)
    else:
        render.table(app, rows, LS_COLUMNS, empty=f"no archived posts of {list_name} match")


@by_mail("member", changes=False)
@archive.command("show")
@click.argument("list_name", metavar="LIST")
@click.argument("number", type=int, metavar="N")
@pass_app
def show(app: App, list_name: str, number: int) -> None:
    """Print archived post N of a list, as it was distributed.

    Example: clublist archive show youth 12
    """
    from clublist.actions.archive import archive_show

    conn = state.connect(app.state_path)
    try:
        _entry, content = archive_show(conn, app.store.load(), app.actor, list_name, number)
    finally:
        conn.close()
    app.stream.write(content.decode("utf-8", "replace"))


@by_mail("member", changes=False)
@archive.command("get")
@click.argument("list_name", metavar="LIST")
@click.argument("numbers", metavar="N|FROM-TO")
@pass_app
def get(app: App, list_name: str, numbers: str) -> None:
    """Fetch archived posts: by mail as attachments, at the shell as mbox on standard output.

    By mail, a request and a day are capped (archive.get_per_request, archive.get_per_day).

    Example: clublist archive get youth 10-15 > youth.mbox
    """
    from clublist.actions.archive import archive_get, parse_numbers

    conn = state.connect(app.state_path)
    try:
        found = archive_get(conn, app.store.load(), app.actor, list_name, parse_numbers(numbers), app.clock())
    finally:
        conn.close()
    for entry, content in found:
        if app.by_mail:
            app.attachments.append(content)
            app.stream.write(f"attached {list_name} #{entry.number}: {entry.subject}\n")
        else:
            stamp = datetime.fromtimestamp(entry.created, UTC).strftime("%a %b %d %H:%M:%S %Y")
            text = content.decode("utf-8", "replace")
            body = "".join(
                ">" + line if line.startswith("From ") else line for line in text.splitlines(keepends=True)
            )
            app.stream.write(f"From {entry.author or 'MAILER-DAEMON'} {stamp}\n{body}\n")


@archive.command("export")
@click.argument("list_name", metavar="LIST")
@click.argument("path", metavar="FILE.mbox", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", metavar="DATE", help="Only posts since this day (2026-12-01, site time zone).")
@pass_app
def export(app: App, list_name: str, path: Path, since: str | None) -> None:
    """Write a list's archive to an mbox file for other mail tools.

    Example: clublist archive export youth youth-2026.mbox --since 2026-01-01
    """
    from clublist.actions.archive import archive_export, parse_since

    club = app.store.load()
    conn = state.connect(app.state_path)
    try:
        result = archive_export(conn, club, app.actor, list_name, path, parse_since(club, since))
    finally:
        conn.close()
    render.done(app, result)


@archive.command("prune")
@json_option
@pass_app
def prune(app: App, as_json: bool) -> None:
    """Remove archived posts older than each list's archive_days (clublist run does it hourly).

    Example: clublist list set youth archive_days 365 && clublist archive prune
    """
    from clublist.actions.archive import archive_prune

    conn = state.connect(app.state_path)
    try:
        result = archive_prune(conn, app.store.load(), app.actor, app.clock())
    finally:
        conn.close()
    render.done(app, result, as_json)
