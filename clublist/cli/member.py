"""``clublist member``: the member registry in members.toml."""

from __future__ import annotations

from typing import Any

import click

from clublist.actions.members import (
    MemberChanges,
    member_add,
    member_export,
    member_import,
    member_join,
    member_leave,
    member_ls,
    member_remove,
    member_set,
    member_show,
)
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.club import model
from clublist.errors import ClublistError


@click.group()
def member() -> None:
    """Add, change, list, import and export members.

    Example: clublist member add anna@example.org --name Anna --list youth
    """


def _row(m: model.Member) -> dict[str, Any]:
    return {
        "email": m.email,
        "name": m.name,
        "lists": list(m.lists),
        "aliases": list(m.aliases),
        "role": m.role,
        "delivery": m.delivery,
        "disabled_reason": m.disabled_reason,
        "daily_limit": m.daily_limit,
    }


@by_mail("owner")
@member.command("add")
@click.argument("email")
@click.option("--name", default="", help="The member's name.")
@click.option("--list", "lists", multiple=True, help="A list to put the member on (repeatable).")
@click.option("--alias", "aliases", multiple=True, help="Another address they post from.")
@click.option("--role", type=click.Choice(model.ROLES), default="member", show_default=True)
@json_option
@pass_app
def add(
    app: App,
    email: str,
    name: str,
    lists: tuple[str, ...],
    aliases: tuple[str, ...],
    role: str,
    as_json: bool,
) -> None:
    """Add a member to the club and, optionally, to lists.

    Example: clublist member add anna@example.org --name Anna --list youth
    """
    result = member_add(app.store, app.actor, email, name, lists, aliases, role)
    render.done(app, result, as_json)


@by_mail("admin")
@member.command("remove")
@click.argument("email")
@pass_app
def remove(app: App, email: str) -> None:
    """Remove a member from the club and from every list.

    Example: clublist member remove anna@example.org
    """
    render.done(app, member_remove(app.store, app.actor, email))


@by_mail("member", changes=False)
@member.command("ls")
@click.option("--list", "list_name", help="Only the members of this list.")
@json_option
@pass_app
def ls(app: App, list_name: str | None, as_json: bool) -> None:
    """List members, all or one list's.

    Example: clublist member ls --list youth --json
    """
    rows = [_row(m) for m in member_ls(app.store, app.actor, list_name)]
    if as_json:
        render.json_out(app, rows)
    else:
        render.table(app, rows, ["email", "name", "lists", "delivery"], empty="no members")


@by_mail("member", changes=False)
@member.command("show")
@click.argument("email")
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
@click.argument("email")
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
    as_json: bool,
) -> None:
    """Change a member's name, role, delivery, aliases or posting limit.

    Example: clublist member set anna@example.org --enable
    """
    changes = MemberChanges(
        name=name,
        role=role,
        enable=enable,
        reason=reason,
        add_aliases=add_alias,
        remove_aliases=remove_alias,
        daily_limit=daily_limit,
        clear_daily_limit=no_daily_limit,
    )
    render.done(app, member_set(app.store, app.actor, email, changes), as_json)


@by_mail("member")
@member.command("join")
@click.argument("email")
@click.argument("list_name", metavar="LIST")
@pass_app
def join(app: App, email: str, list_name: str) -> None:
    """Put a member on a list.

    Example: clublist member join anna@example.org trainer
    """
    render.done(app, member_join(app.store, app.actor, email, list_name))


@by_mail("member")
@member.command("leave")
@click.argument("email")
@click.argument("list_name", metavar="LIST")
@pass_app
def leave(app: App, email: str, list_name: str) -> None:
    """Take a member off a list (they stay in the club).

    Example: clublist member leave anna@example.org trainer
    """
    render.done(app, member_leave(app.store, app.actor, email, list_name))


@member.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change.")
@json_option
@pass_app
def import_(app: App, csv_file: Any, dry_run: bool, as_json: bool) -> None:
    """Import members from CSV (email,name,lists), all or nothing.

    LISTS holds list names separated by spaces or ';'.  Every bad line is
    reported and then nothing changes.  Use - to read standard input.

    Example: clublist member import roster.csv --dry-run
    """
    if app.by_mail:
        raise ClublistError("member import reads a file on the server; run it at the shell")
    result = member_import(app.store, app.actor, csv_file.read(), dry_run)
    if as_json:
        render.json_out(
            app,
            {
                "dry_run": dry_run,
                "added": [m.email for m in result.added],
                "updated": [m.email for m in result.updated],
            },
        )
    else:
        app.stream.write(result.message + "\n")


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
    """Export the registry as CSV (email,name,lists), the shape import reads.

    Example: clublist member export -o roster.csv
    """
    text = member_export(app.store, app.actor)
    if app.by_mail:
        app.stream.write(text)
    else:
        output.write(text)
