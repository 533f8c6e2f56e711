"""``clublist dkim``: the club's signing keys and the DNS records that publish them."""

from __future__ import annotations

import time

import click

from clublist.cli import render
from clublist.cli.app import App, json_option, pass_app


@click.group()
def dkim() -> None:
    """Make DKIM keys and show the DNS records to publish.

    Every message clublist sends is signed with the key dkim.selector names.

    Example: clublist dkim keygen --selector s202612
    """


@dkim.command("keygen")
@click.option("--selector", default=None, help="The key's name in DNS [default: s + this year and month].")
@click.option(
    "--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True, help="Key type."
)
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA key size.")
@click.option("--standby", is_flag=True, help="Do not sign with it yet (publish its record first).")
@json_option
@pass_app
def keygen(app: App, selector: str | None, algorithm: str, bits: int, standby: bool, as_json: bool) -> None:
    """Make a key pair, keep the private key in var/dkim/, and sign with it.

    Prints the TXT record to publish.  An existing key is never replaced:
    to rotate, make a key under a new selector with --standby, publish its
    record, then switch with 'clublist config set dkim.selector NEW'.

    Example: clublist dkim keygen --selector s202612
    """
    from clublist.actions import dkim as actions

    chosen = selector or time.strftime("s%Y%m")
    record = actions.dkim_keygen(
        app.store,
        app.actor,
        app.state_path,
        chosen,
        algorithm,  # type: ignore[arg-type]
        bits,
        standby=standby,
    )
    _print(app, record, as_json)


@dkim.command("show")
@click.option("--selector", default=None, help="Another key than the one in force.")
@json_option
@pass_app
def show(app: App, selector: str | None, as_json: bool) -> None:
    """Show the signing key in force and the DNS record that publishes it.

    --json prints selector, domain, name, record and key_path.

    Example: clublist dkim show --json
    """
    from clublist.actions import dkim as actions

    _print(app, actions.dkim_show(app.store, app.actor, app.state_path, selector), as_json)


def _print(app: App, record: object, as_json: bool) -> None:
    from clublist.actions.dkim import DkimRecord

    assert isinstance(record, DkimRecord)
    if as_json:
        render.json_out(app, record)
        return
    quoted = " ".join(f'"{s}"' for s in record.strings)
    app.stream.write(
        f"selector: {record.selector}\n"
        f"key:      {record.key_path}\n"
        f"publish this TXT record:\n"
        f"  name:   {record.name}\n"
        f"  value:  {record.record}\n"
        f"zone file line:\n"
        f"{record.selector}._domainkey IN TXT ( {quoted} )\n"
    )
