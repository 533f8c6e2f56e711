"""``clublist postfix``: print the Postfix lines for this club, or check a running Postfix against them."""

from __future__ import annotations

import textwrap

import click

from clublist.cli import render
from clublist.cli.app import App, json_option, pass_app
from clublist.postfix.setup import DEFAULT_CONFIG_DIRECTORY, DEFAULT_PUBLIC


@click.command()
@click.option(
    "--check", "check_only", is_flag=True, help="Compare with Postfix's postconf and report what differs."
)
@click.option(
    "--public",
    default=DEFAULT_PUBLIC,
    show_default=True,
    metavar="SERVICE",
    help="The master.cf name of the smtpd facing the Internet (smtp is port 25; or HOST:PORT).",
)
@click.option(
    "--relay",
    default=None,
    metavar="HOST:PORT",
    help="The loopback smtpd clublist sends through [default: delivery.smarthost on loopback, "
    "else 127.0.0.1:10025].",
)
@click.option(
    "-c",
    "--config-directory",
    default=DEFAULT_CONFIG_DIRECTORY,
    show_default=True,
    metavar="DIR",
    help="Postfix's configuration directory (postconf -c).",
)
@json_option
@pass_app
@click.pass_context
def postfix(
    ctx: click.Context,
    app: App,
    check_only: bool,
    public: str,
    relay: str | None,
    config_directory: str,
    as_json: bool,
) -> None:
    """Print the lines Postfix needs in front of this club, or check Postfix against them.

    Postfix takes mail on port 25 and hands each SMTP session, live, to
    clublist (smtpd_proxy_filter, before its queue): a stranger's post or a
    made-up address is refused in the sender's own session, so no refusal
    ever becomes a bounce to a forged sender.  clublist sends through a
    second smtpd on loopback.  Printed: main.cf settings (one per line),
    master.cf services, the transport map, the clublist settings still to
    change, and the commands that put them in force (postmap, postfix
    reload).  message_size_limit is delivery.max_message_size, so clublist
    keeps room for its headers and footer below it.  With listen.policy_port
    set, the public smtpd also asks clublist at RCPT (check_policy_service),
    so strangers are refused before they send the message.

    With --check, reads 'postconf -x', 'postconf -M' and 'postmap -q' and
    prints one line per item, with the fix for what differs (exit 1 when
    something does).  --json prints the lines by file (or the findings).

    Example: clublist postfix > postfix-lines.txt && clublist postfix --check
    """
    if check_only:
        from clublist.actions.postfix import postfix_check

        findings = postfix_check(
            app.store, app.actor, public=public, relay=relay, config_directory=config_directory
        )
        if render.findings(app, findings, as_json):
            ctx.exit(1)
        return
    from clublist.actions.postfix import postfix_setup

    setup = postfix_setup(app.store, app.actor, public=public, relay=relay, config_directory=config_directory)
    if as_json:
        render.json_out(app, setup.as_files())
        return
    out = app.stream
    sections = [
        (
            f"{setup.config_directory}/main.cf: one setting per line (postconf -e 'LINE' sets one)",
            setup.main_cf_lines,
        ),
        (
            f"{setup.config_directory}/master.cf: the first replaces the '{setup.public.name} inet' line; "
            "clublist sends through the second",
            setup.master_cf_lines,
        ),
        (
            f"{setup.transport_path}: Postfix's own reports for {setup.domain} go to clublist",
            setup.transport_lines,
        ),
        ("clublist: listen on loopback, send through the second smtpd", setup.clublist_commands),
        ("then", setup.commands),
    ]
    out.write(f"# Postfix in front of clublist for {setup.domain}, before the queue.\n")
    for note in setup.notes:
        out.write("".join(f"# {line}\n" for line in textwrap.wrap(note, 88)))
    for title, lines in sections:
        if lines:
            out.write(f"\n# {title}\n")
            out.write("".join(f"{line}\n" for line in lines))
