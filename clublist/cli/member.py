"""``clublist member``: the member registry in members.toml."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from clublist.actions.members import (
    MemberChanges,
    Notify,
    member_add,
    member_join,
    member_leave,
    member_ls,
    member_remove,
    member_set,
    member_show,
)
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.cli.complete import list_names, member_addresses
from clublist.club import model
from clublist.errors import ClublistError

if TYPE_CHECKING:  # CSV import, export and sync are imported by those commands alone
    from clublist.actions.roster import RosterPlan

quiet_option = click.option(
    "--quiet", is_flag=True, help="Send no welcome, goodbye or owner notice for this change."
)
list_option = click.option("--list", "list_name", shell_complete=list_names, help="Only this list's members.")


def _notify(app: App, quiet: bool) -> Notify:
    return Notify(app.state_path, quiet=quiet)


@click.group()
def member() -> None:
    """Add, change, list, import and export members.

    Example: clublist member add anna@example.org --name Anna --list youth
    """


def _row(m: model.Member) -> dict[str, Any]:
    row: dict[str, Any] = render.to_plain(m)
    return row


@by_mail("owner")
@member.command("add")
@click.argument("email")
@click.option("--name", default="", help="The member's name.")
@click.option(
    "--list",
    "lists",
    multiple=True,
    shell_complete=list_names,
    help="A list to put the member on (repeatable).",
)
@click.option("--alias", "aliases", multiple=True, help="Another address they post from.")
@click.option("--role", type=click.Choice(model.ROLES), default="member", show_default=True)
@quiet_option
@json_option
@pass_app
def add(
    app: App,
    email: str,
    name: str,
    lists: tuple[str, ...],
    aliases: tuple[str, ...],
    role: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Add a member to the club and, optionally, to lists (each list sends its welcome).

    Example: clublist member add anna@example.org --name Anna --list youth
    """
    result = member_add(app.store, app.actor, email, name, lists, aliases, role, _notify(app, quiet))
    render.done(app, result, as_json)


@by_mail("owner")
@member.command("remove")
@click.argument("addresses", nargs=-1, metavar="EMAIL...", shell_complete=member_addresses)
@click.option(
    "--from-file",
    type=click.File("r", encoding="utf-8-sig"),
    help="Also remove the addresses in this file: one a line, or a CSV's first column.",
)
@click.option(
    "--list",
    "list_name",
    shell_complete=list_names,
    help="Take them off this list only (they stay in the club).",
)
@click.option("--dry-run", is_flag=True, help="Say who would be removed, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@quiet_option
@json_option
@pass_app
def remove(
    app: App,
    addresses: tuple[str, ...],
    from_file: Any,
    list_name: str | None,
    dry_run: bool,
    yes: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Remove members from the club (and every list), or from one list, all or nothing.

    Asks first unless --yes; each one gets the list's goodbye unless --quiet.

    Example: clublist member remove anna@example.org ben@example.org --list youth --yes
    """
    if from_file is not None and app.by_mail:
        raise ClublistError("--from-file reads a file on the server; run it at the shell")
    wanted = [*addresses, *(_addresses_in(from_file.read()) if from_file is not None else [])]
    if not dry_run and not yes and not app.by_mail:
        plan = member_remove(app.store, app.actor, wanted, list_name=list_name, dry_run=True)
        app.stream.write("".join(f"- {m.email}\n" for m in plan.removed))
        click.confirm(plan.message.replace("would remove", "Remove", 1) + "?", abort=True)
    result = member_remove(
        app.store, app.actor, wanted, list_name=list_name, dry_run=dry_run, notify=_notify(app, quiet)
    )
    if as_json:
        render.json_out(
            app, {"dry_run": dry_run, "list": list_name, "removed": [m.email for m in result.removed]}
        )
    else:
        app.stream.write(result.message + "\n")


def _addresses_in(text: str) -> list[str]:
    """The first column of each line that is not empty, a comment or a CSV header."""
    import csv
    import io

    out = []
    for row in csv.reader(io.StringIO(text)):
        cell = row[0].strip() if row else ""
        if cell and not cell.startswith("#") and cell.lower() != "email":
            out.append(cell)
    return out


@by_mail("member", changes=False)
@member.command("ls")
@list_option
@click.option("--search", default="", help="Only members whose address, alias or name contains this text.")
@json_option
@pass_app
def ls(app: App, list_name: str | None, search: str, as_json: bool) -> None:
    """List members, all or one list's, or search them (any case).

    Example: clublist member ls --list youth --search berg --json
    """
    members = member_ls(app.store, app.actor, list_name, search)
    if as_json:
        render.json_columns(app, model.MEMBER_KEYS, [members.column(name) for name in model.MEMBER_KEYS])
    else:
        shown = ["email", "name", "lists", "delivery"]
        rows = [dict(zip(shown, row, strict=True)) for row in zip(*map(members.column, shown), strict=True)]
        render.table(app, rows, shown, empty="no members")


@by_mail("member", changes=False)
@member.command("show")
@click.argument("email", shell_complete=member_addresses)
@json_option
@pass_app
def show(app: App, email: str, as_json: bool) -> None:
    """Show one member (an alias finds its member too).

    Example: clublist member show anna@example.org --json
    """
    row = _row(member_show(app.store, app.actor, email))
    if as_json:
        render.json_out(app, row)
    else:
        render.fields(app, row)


@by_mail("member")
@member.command("set")
@click.argument("email", shell_complete=member_addresses)
@click.option("--name", help="A new name.")
@click.option("--role", type=click.Choice(model.ROLES), help="member or admin.")
@click.option(
    "--enable/--disable",
    "enable",
    default=None,
    help="Resume or stop delivery (bounces disable it).",
)
@click.option("--reason", default="", help="Why delivery is disabled.")
@click.option("--add-alias", multiple=True, help="Add an address they also post from.")
@click.option("--remove-alias", multiple=True, help="Remove an alias.")
@click.option("--daily-limit", type=click.IntRange(min=0), help="Posts a day (overrides the site).")
@click.option("--no-daily-limit", is_flag=True, help="Use the site's daily limit again.")
@click.option(
    "--moderated/--unmoderated",
    "moderated",
    default=None,
    help="Hold this member's posts for an owner's approval, or not.",
)
@click.option("--list", "list_name", metavar="LIST", help="The list --digest/--no-digest is about.")
@click.option(
    "--digest/--no-digest",
    "digest",
    default=None,
    help="Read --list as one mail a day (the digest) or post by post.",
)
@json_option
@pass_app
def set_(
    app: App,
    email: str,
    name: str | None,
    role: str | None,
    enable: bool | None,
    reason: str,
    add_alias: tuple[str, ...],
    remove_alias: tuple[str, ...],
    daily_limit: int | None,
    no_daily_limit: bool,
    moderated: bool | None,
    list_name: str | None,
    digest: bool | None,
    as_json: bool,
) -> None:
    """Change a member's name, role, delivery, aliases, posting limit or digest.

    Example: clublist member set anna@example.org --list youth --digest
    """
    if (digest is None) != (list_name is None):
        raise click.UsageError("--digest and --no-digest go with --list LIST (and --list with them)")
    changes = MemberChanges(
        name=name,
        role=role,
        enable=enable,
        reason=reason,
        add_aliases=add_alias,
        remove_aliases=remove_alias,
        daily_limit=daily_limit,
        clear_daily_limit=no_daily_limit,
        moderated=moderated,
        digest_list=list_name,
        digest=digest,
    )
    render.done(app, member_set(app.store, app.actor, email, changes), as_json)


@by_mail("member")
@member.command("join")
@click.argument("email", shell_complete=member_addresses)
@click.argument("list_name", metavar="LIST", shell_complete=list_names)
@quiet_option
@pass_app
def join(app: App, email: str, list_name: str, quiet: bool) -> None:
    """Put a member on a list; they get its welcome, its owners a notice.

    Example: clublist member join anna@example.org trainer
    """
    render.done(app, member_join(app.store, app.actor, email, list_name, _notify(app, quiet)))


@by_mail("member")
@member.command("leave")
@click.argument("email", shell_complete=member_addresses)
@click.argument("list_name", metavar="LIST", shell_complete=list_names)
@quiet_option
@pass_app
def leave(app: App, email: str, list_name: str, quiet: bool) -> None:
    """Take a member off a list (they stay in the club); they get its goodbye.

    Example: clublist member leave anna@example.org trainer
    """
    render.done(app, member_leave(app.store, app.actor, email, list_name, _notify(app, quiet)))


encoding_option = click.option(
    "--encoding", metavar="NAME", help="The file's encoding when it is not UTF-8 (e.g. latin-1, cp1252)."
)


@member.command("import")
@click.argument("csv_file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change.")
@click.option(
    "--update", is_flag=True, help="A row replaces an existing member's name, lists and other columns."
)
@encoding_option
@quiet_option
@json_option
@pass_app
def import_(
    app: App, csv_file: Any, dry_run: bool, update: bool, encoding: str | None, quiet: bool, as_json: bool
) -> None:
    """Import members from CSV, all or nothing.

    The columns are named in a header row (those 'member export' writes) or are
    email,name,lists.  Several lists or aliases in a cell are separated by spaces or
    ';'.  An existing member gets the lists named added, or with --update the row's
    values.  Columns may be separated by ',', ';' or tabs; the file is read as UTF-8
    (with or without BOM), else in the --encoding given.  Every bad line is reported
    and then nothing changes.  Use - to read standard input.

    Example: clublist member import roster.csv --update --dry-run
    """
    from clublist.actions.roster import member_import, roster_text

    if app.by_mail:
        raise ClublistError("member import reads a file on the server; run it at the shell")
    text = roster_text(csv_file.read(), getattr(csv_file, "name", "-"), encoding)
    plan = member_import(app.store, app.actor, text, dry_run, update=update, notify=_notify(app, quiet))
    _print_plan(app, plan, as_json)


@member.command("sync")
@click.argument("csv_file", type=click.File("rb"))
@list_option
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@encoding_option
@quiet_option
@json_option
@pass_app
def sync(
    app: App,
    csv_file: Any,
    list_name: str | None,
    dry_run: bool,
    yes: bool,
    encoding: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Make the registry (or one list) match a roster file: add, update, remove.

    The file is CSV as for import (with a header row naming its columns, or
    email,name,lists).  Prints the plan with its counts, asks unless --yes, then
    applies it in one write.  With --list, the file holds that list's members: the
    others are taken off the list and stay in the club.

    Example: clublist member sync roster.csv --dry-run
    """
    from clublist.actions.roster import member_sync, roster_text

    if app.by_mail:
        raise ClublistError("member sync reads a file on the server; run it at the shell")
    text = roster_text(csv_file.read(), getattr(csv_file, "name", "-"), encoding)
    plan = member_sync(app.store, app.actor, text, list_name=list_name, dry_run=True)
    if dry_run or plan.empty:
        _print_plan(app, plan, as_json)
        return
    if not yes:
        _print_plan(app, plan, False)
        click.confirm("Apply this plan?", abort=True)
    done = member_sync(
        app.store, app.actor, text, list_name=list_name, expected=plan, notify=_notify(app, quiet)
    )
    if yes:
        _print_plan(app, done, as_json)
    else:
        app.stream.write(done.message + "\n")


def _print_plan(app: App, plan: RosterPlan, as_json: bool) -> None:
    if as_json:
        render.json_out(
            app,
            {
                "dry_run": plan.dry_run,
                "added": [m.email for m in plan.added],
                "removed": [m.email for m in plan.removed],
                "updated": [after.email for _before, after in plan.updated],
            },
        )
        return
    app.stream.write("".join(line + "\n" for line in plan.lines()) + plan.message + "\n")


@by_mail("admin", changes=False)
@member.command("export")
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to this file [default: standard output].",
)
@pass_app
def export(app: App, output: Any) -> None:
    """Export the registry as CSV with every field, the shape import and sync read.

    Example: clublist member export -o roster.csv
    """
    from clublist.actions.roster import member_export

    text = member_export(app.store, app.actor)
    if app.by_mail:
        app.stream.write(text)
    else:
        output.write(text)
