"""``clublist list``: create, show, change and delete the club's lists."""

from __future__ import annotations

from typing import Any

import click

from clublist.actions.lists import ListInfo, list_create, list_delete, list_ls, list_set, list_show
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.club import model


@click.group("list")
def list_group() -> None:
    """Create, show, change and delete lists (one TOML file each).

    Example: clublist list create youth --description "Youth section"
    """


def _list_row(info: ListInfo) -> dict[str, Any]:
    ml = info.mailing_list
    return {
        "name": ml.name,
        "address": info.address,
        "description": ml.description,
        "posting": ml.posting,
        "members": info.members,
        "receiving": info.receiving,
        "owners": list(ml.owners),
    }


@by_mail("member", changes=False)
@list_group.command("ls")
@json_option
@pass_app
def ls(app: App, as_json: bool) -> None:
    """List the club's lists with their member counts.

    Example: clublist list ls --json
    """
    rows = [_list_row(i) for i in list_ls(app.store, app.actor)]
    if as_json:
        render.json_out(app, rows)
    else:
        render.table(
            app,
            rows,
            ["name", "address", "members", "posting", "description"],
            empty="no lists yet; create one with 'clublist list create NAME'",
        )


@by_mail("member", changes=False)
@list_group.command("show")
@click.argument("name")
@json_option
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Show a list's settings.

    Example: clublist list show youth
    """
    info = list_show(app.store, app.actor, name)
    record = render.to_plain(info.mailing_list) | {
        "address": info.address,
        "members": info.members,
        "receiving": info.receiving,
    }
    if as_json:
        render.json_out(app, record)
    else:
        render.fields(app, record)


@by_mail("admin")
@list_group.command("create")
@click.argument("name")
@click.option("--title", help="Display name, e.g. 'Youth' (default: the name, capitalised).")
@click.option("--description", default="", help="One line about the list.")
@click.option(
    "--posting",
    type=click.Choice(model.POSTING_POLICIES),
    help="Who may post: the list's members, all club members, owners, or moderated.",
)
@click.option("--prefix", help="Subject prefix, e.g. '[Youth]'.")
@click.option("--owner", "owners", multiple=True, help="An owner's address (repeatable).")
@pass_app
def create(app: App, name: str, owners: tuple[str, ...], **settings: Any) -> None:
    """Create a list NAME, reachable as NAME@domain.

    Example: clublist list create youth --description "Youth section" --prefix "[Youth]"
    """
    if owners:
        settings["owners"] = list(owners)
    render.done(app, list_create(app.store, app.actor, name, **settings))


@by_mail("owner")
@list_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("key", type=click.Choice(model.LIST_KEYS))
@click.argument("value")
@pass_app
def set_(app: App, name: str, key: str, value: str) -> None:
    """Change one setting of a list.

    Example: clublist list set youth posting moderated
    """
    render.done(app, list_set(app.store, app.actor, name, key, value))


@by_mail("admin")
@list_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def delete(app: App, name: str, yes: bool) -> None:
    """Delete a list; its members stay in the club.

    Example: clublist list delete oldgroup --yes
    """
    if not yes and not app.by_mail:
        click.confirm(f"Delete the list {name} and take it off every member?", abort=True)
    render.done(app, list_delete(app.store, app.actor, name))
