"""``clublist check``: whether the club's mail will work, one line per check, for people and for cron."""

from __future__ import annotations

import ipaddress

import click

from clublist.cli import render
from clublist.cli.app import App, json_option, pass_app

AREAS = ("config", "dns", "tls", "listener", "queue", "postfix")


def _areas(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if value is None:
        return AREAS
    chosen = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in chosen if a not in AREAS]
    if unknown or not chosen:
        raise click.BadParameter(f"{', '.join(unknown) or value!r}: choose from {','.join(AREAS)}")
    return chosen


def _ip(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 or IPv6 address") from None


@click.command()
@click.option(
    "--only",
    callback=_areas,
    metavar="AREAS",
    help="Comma-separated areas to check: config, dns, tls, listener, queue, postfix [default: all].",
)
@json_option
@click.option(
    "--public-ip",
    callback=_ip,
    metavar="IP",
    help="The address the club's mail leaves from [default: the address of listen.hostname].",
)
@pass_app
@click.pass_context
def check(ctx: click.Context, app: App, only: tuple[str, ...], as_json: bool, public_ip: str | None) -> None:
    """Check whether the club's mail will work, and say how to fix what will not.

    One line per check: its status (ok, info, warn or fail), what was found,
    and for warn and fail the fix (the exact record to publish or command to
    run).  config: every file loads (file:line), list references, settings
    that quietly disable something.  dns (through delivery.dns_servers): MX,
    PTR of the sending IP and its forward confirmation and HELO name, SPF
    for the sending IP, the DKIM record against the private key, DMARC;
    MTA-STS and TLS-RPT as info.  tls: certificate and key load and match,
    the chain verifies, the name covers listen.hostname, days to expiry
    (warn under 21, fail under 7).  listener: when clublist run runs, its
    banner, EHLO, STARTTLS, and a relay self-test over loopback (only RCPT,
    never DATA).  queue: deferred and failed deliveries, members disabled by
    bounces, posts held for days.  postfix: when Postfix takes mail for the
    club, whether it is in front as 'clublist postfix' prints (before the
    queue, sizes, the transport map; MAIL_CONFIG names another Postfix
    configuration directory).

    Exit status: 0 when nothing fails (warnings alone: 0), 1 when a check
    fails, 2 for a usage error, so cron and monitoring can run it.

    With --json the output is a JSON array with one object per check, each
    with exactly the keys "check" (area and item, e.g. "dns.spf"),
    "status" ("ok", "info", "warn" or "fail"), "detail" (what was found)
    and "fix" (how to fix it; "" when there is nothing to fix).

    Example: clublist check --only dns,tls --public-ip 203.0.113.5
    """
    from clublist.actions.check import check as run_checks

    findings = run_checks(app.store, app.state_path, app.actor, only, public_ip)
    if render.findings(app, findings, as_json):
        ctx.exit(1)
