"""``clublist init`` and ``clublist config``: the site settings in club.toml."""

from __future__ import annotations

import click

from clublist.actions.config import config_get, config_set, config_show, init_club
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app


@click.command()
@click.option("--domain", required=True, help="The club's mail domain, e.g. myclub.org.")
@click.option("--admin", required=True, help="The administrator's address (gets reports).")
@click.option("--name", default="", help="The club's name, shown in notices.")
@click.option("--timezone", default="", help="Time zone for reminders [default: the machine's].")
@pass_app
def init(app: App, domain: str, admin: str, name: str, timezone: str) -> None:
    """Create lists.d with a commented club.toml and an empty member registry.

    Example: clublist init --domain myclub.org --admin admin@myclub.org
    """
    render.done(app, init_club(app.directory, domain, admin, name, timezone))


@click.group()
def config() -> None:
    """Show and change the site settings in club.toml.

    Example: clublist config set delivery.mode smarthost
    """


@by_mail("admin", changes=False)
@config.command("show")
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Show every setting in force, defaults included.

    Example: clublist config show --json
    """
    settings = config_show(app.store, app.actor)
    if as_json:
        render.json_out(app, settings)
    else:
        render.table(app, [{"key": k, "value": v} for k, v in settings.items()], ["key", "value"])


@by_mail("admin", changes=False)
@config.command("get")
@click.argument("key")
@json_option
@pass_app
def get(app: App, key: str, as_json: bool) -> None:
    """Print one setting's value.

    Example: clublist config get site.domain
    """
    value = config_get(app.store, app.actor, key)
    if as_json:
        render.json_out(app, value)
    else:
        app.stream.write(f"{render.to_plain(value)}\n")


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@pass_app
def set_(app: App, key: str, value: str) -> None:
    """Change one setting; the value is checked against the setting's type.

    Lists are written comma-separated.  Comments in club.toml are kept.

    Example: clublist config set retry.schedule 300,900,3600
    """
    render.done(app, config_set(app.store, app.actor, key, value))
