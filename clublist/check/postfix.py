"""The postfix check: whether the Postfix on this machine is in front of clublist as
``clublist postfix`` says (before-queue, so no refusal becomes backscatter).

Each main.cf setting, both master.cf services and the transport map are compared with what
Postfix has in force; every difference is one finding whose fix is the exact line.  Postfix
not installed, or installed without taking mail for the club, is only reported: clublist
may take mail on port 25 itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from clublist.check import Finding, Target
from clublist.club.model import Site
from clublist.errors import ClublistError
from clublist.postfix.postconf import Postfix, ServiceLine
from clublist.postfix.setup import Setting, Setup, build

SHOW = "'clublist postfix' prints every line"


def run(target: Target) -> list[Finding]:
    """The ``clublist check`` area: Postfix's own configuration directory (MAIL_CONFIG or its default)."""
    assert target.site is not None
    postfix = Postfix(os.environ.get("MAIL_CONFIG") or None)
    if not postfix.installed():
        return [Finding("postfix", "info", "Postfix is not installed: clublist takes mail itself")]
    try:
        if not postfix.main_cf.is_file():
            return [Finding("postfix", "info", f"Postfix is installed but has no {postfix.main_cf}")]
        directory = str(postfix.main_cf.parent)
        setup = build(target.site, config_directory=directory)
        if not _in_front(postfix, setup):
            return [
                Finding(
                    "postfix",
                    "info",
                    f"Postfix does not take mail for {target.site.domain}: clublist takes mail itself",
                    f"to put Postfix in front, {SHOW}",
                )
            ]
    except ClublistError as exc:
        return [Finding("postfix", "fail", str(exc), "check that 'postconf -n' runs as this user")]
    return compare(setup, target.site, postfix)


def _in_front(postfix: Postfix, setup: Setup) -> bool:
    relay_domains = _items(postfix.values(["relay_domains"]).get("relay_domains", ""))
    proxied = any(s.options.get("smtpd_proxy_filter") for s in postfix.services().values())
    return setup.domain in relay_domains or proxied


def compare(setup: Setup, site: Site, postfix: Postfix) -> list[Finding]:
    """One finding per setting, service and table entry: ok, or what differs and the line that fixes it."""
    findings: list[Finding] = []
    try:
        values = postfix.values([s.name for s in setup.main_cf] + ["myhostname"])
        services = postfix.services()
    except ClublistError as exc:
        return [Finding("postfix", "fail", str(exc), "check that Postfix's postconf runs here")]
    findings += [_setting(setup, s, values.get(s.name, "")) for s in setup.main_cf]
    findings += _public(setup, services)
    findings.append(_relay(setup, services))
    findings.append(_transport(setup, postfix))
    findings.append(_loop(site, values.get("myhostname", "")))
    if setup.clublist_settings:
        findings.append(
            Finding(
                "postfix.clublist",
                "fail",
                "clublist's own settings do not fit Postfix in front: "
                + ", ".join(key for key, _value in setup.clublist_settings),
                "; ".join(setup.clublist_commands),
            )
        )
    return findings


def _setting(setup: Setup, wanted: Setting, actual: str) -> Finding:
    name = f"postfix.main.cf {wanted.name}"
    option = setup.config_option
    fix = f"postconf{option} -e '{_fixed(wanted, actual)}' && postfix{option} reload"
    if wanted.compare == "contains":
        ok = all(item in _items(actual) for item in _items(wanted.value))
    elif wanted.compare == "at least":
        ok = actual.isdigit() and int(actual) >= int(wanted.value)
    else:
        ok = " ".join(actual.split()) == wanted.value
    if ok:
        return Finding(name, "ok", f"{wanted.name} = {actual}")
    detail = f"{wanted.name} is {actual!r}, clublist needs {wanted.value!r}"
    if wanted.name == "message_size_limit":
        detail += ": a post clublist accepts would then be refused for every member"
    if wanted.name == "relay_domains":
        detail += f": Postfix refuses mail for {setup.domain} before clublist sees it"
    return Finding(name, "fail", detail, fix)


def _fixed(wanted: Setting, actual: str) -> str:
    """The line to set: a list keeps what it has and gains the missing items."""
    if wanted.compare == "contains" and actual.strip():
        missing = [i for i in _items(wanted.value) if i not in _items(actual)]
        return f"{wanted.name} = {', '.join([*_items(actual), *missing])}"
    return wanted.line


def _public(setup: Setup, services: dict[str, ServiceLine]) -> list[Finding]:
    """The smtpd that hands sessions to clublist, found by its proxy filter."""
    wanted = setup.public
    found = [
        s
        for s in services.values()
        if s.command == "smtpd" and _same_address(s.options.get("smtpd_proxy_filter", ""), setup)
    ]
    if not found:
        return [
            Finding(
                "postfix.master.cf public",
                "fail",
                f"no smtpd hands its sessions to clublist ({setup.clublist_address}) before the queue: "
                "every refusal becomes a bounce to the (often forged) sender",
                f"put these lines in master.cf: {' '.join(wanted.lines)}",
            )
        ]
    findings = []
    for service in found:
        missing = [
            f"-o {name}={value}"
            for name, value in wanted.options
            if name != "smtpd_proxy_filter"
            and not all(item in _items(service.options.get(name, "")) for item in _items(value))
        ]
        name = f"postfix.master.cf {service.name}"
        if missing:
            findings.append(
                Finding(
                    name,
                    "fail",
                    f"{service.key} lacks {' '.join(missing)}",
                    f"add to it: {' '.join(missing)}",
                )
            )
        else:
            findings.append(
                Finding(name, "ok", f"{service.key} hands its sessions to clublist before the queue")
            )
    return findings


def _relay(setup: Setup, services: dict[str, ServiceLine]) -> Finding:
    wanted = setup.relay
    name = f"postfix.master.cf {wanted.name}"
    service = services.get(wanted.key)
    if service is None:
        return Finding(
            name,
            "fail",
            f"no smtpd on {wanted.name} for clublist's outgoing mail",
            f"put these lines in master.cf: {' '.join(wanted.lines)}",
        )
    wrong = [f"-o {n}={v}" for n, v in wanted.options if " ".join(service.options.get(n, "\0").split()) != v]
    if service.options.get("smtpd_proxy_filter"):
        wrong.append("-o smtpd_proxy_filter= (clublist's own mail must not go back to clublist)")
    if wrong:
        return Finding(
            name, "fail", f"{wanted.key} differs: it needs {' '.join(wrong)}", "set those -o lines"
        )
    return Finding(name, "ok", f"{wanted.key} takes clublist's outgoing mail from loopback only")


def _transport(setup: Setup, postfix: Postfix) -> Finding:
    table = f"hash:{setup.transport_path}"
    ((key, nexthop),) = setup.transport
    name = f"postfix.transport {key}"
    postmap = setup.commands[0]
    try:
        found = postfix.lookup(table, key)
    except ClublistError as exc:
        return Finding(
            name, "fail", f"{table} cannot be read: {exc}", f"write {setup.transport_path}, then {postmap}"
        )
    if found != nexthop:
        return Finding(
            name,
            "fail",
            f"{table} maps {key} to {found!r}, not {nexthop!r}: Postfix's reports would not reach clublist",
            f"put '{key} {nexthop}' in {setup.transport_path}, then {postmap}",
        )
    source, database = Path(setup.transport_path), Path(setup.transport_path + ".db")
    if source.is_file() and database.is_file() and source.stat().st_mtime > database.stat().st_mtime:
        return Finding(name, "warn", f"{source} changed after {database} was built", postmap)
    return Finding(name, "ok", f"{key} {nexthop}")


def _loop(site: Site, myhostname: str) -> Finding:
    """Postfix refuses to relay to a server that greets with its own name ("loops back to myself")."""
    ours = site.listen.hostname or site.domain
    if myhostname.lower() == ours.lower():
        return Finding(
            "postfix.myhostname",
            "fail",
            f"Postfix's myhostname and clublist's greeting are both {ours}: Postfix takes the hop to "
            "clublist for a mail loop",
            "clublist config set listen.hostname clublist.localhost",
        )
    return Finding("postfix.myhostname", "ok", f"Postfix is {myhostname}, clublist greets as {ours}")


def _same_address(value: str, setup: Setup) -> bool:
    return value.removeprefix("inet:") == setup.clublist_address


def _items(value: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", value) if item]
