"""The Postfix lines a club needs, built from its settings: what ``clublist postfix`` prints.

Three pieces, each a plain record so that the CLI prints them, ``--check`` compares them with
``postconf`` and the tests apply them to a private Postfix:

- main.cf: the club domain as a relay domain routed by the transport map, the message size
  limit of the next hop (``delivery.max_message_size``, so clublist keeps room for decoration
  below it), SMTPUTF8, and STARTTLS with clublist's certificate when it has one.
- master.cf: the public smtpd with ``smtpd_proxy_filter`` pointing at clublist and
  ``smtpd_proxy_options = speed_adjust`` (the whole message is received before clublist is
  asked, so a slow client never holds a clublist session), and the loopback smtpd clublist
  sends through (mynetworks only, no filter).  Postfix sends XFORWARD to the filter by itself
  once clublist announces it (to ``listen.trusted_proxies``), so clublist sees the real
  client, not 127.0.0.1.  With ``listen.policy_port`` the public smtpd also asks clublist's
  policy service at RCPT, so strangers are refused before they send the message.
- the transport map: mail that Postfix itself has for the club domain (its delivery reports
  to the bounce address) goes to clublist over SMTP (``smtp:``, not ``lmtp:``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from clublist.club.model import Site, parse_hostport

DEFAULT_CONFIG_DIRECTORY = "/etc/postfix"
DEFAULT_PUBLIC = "smtp"  # Postfix's name for port 25 on every address
DEFAULT_RELAY = "127.0.0.1:10025"

Compare = Literal["equal", "contains", "at least"]


@dataclass(frozen=True)
class Setting:
    """One main.cf setting; *compare* says how ``--check`` judges the value Postfix has."""

    name: str
    value: str
    compare: Compare = "equal"

    @property
    def line(self) -> str:
        return f"{self.name} = {self.value}"


@dataclass(frozen=True)
class Service:
    """One master.cf service (unprivileged, not chrooted) with its ``-o`` overrides."""

    name: str
    options: tuple[tuple[str, str], ...]
    type: str = "inet"
    command: str = "smtpd"

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"

    @property
    def lines(self) -> list[str]:
        head = f"{self.name:<15} {self.type:<5} n       -       n       -       -       {self.command}"
        return [head, *(f"  -o {name}={value}" for name, value in self.options)]


@dataclass(frozen=True)
class Setup:
    """Everything Postfix in front of one club needs, and the commands that put it in force."""

    domain: str
    config_directory: str
    clublist_address: str  # where the proxy filter and the transport reach clublist
    main_cf: tuple[Setting, ...]
    public: Service
    relay: Service
    transport_path: str
    transport: tuple[tuple[str, str], ...]
    clublist_settings: tuple[tuple[str, str], ...]  # clublist settings still to change
    notes: tuple[str, ...]

    @property
    def main_cf_lines(self) -> list[str]:
        return [s.line for s in self.main_cf]

    @property
    def master_cf_lines(self) -> list[str]:
        return [*self.public.lines, *self.relay.lines]

    @property
    def transport_lines(self) -> list[str]:
        return [f"{key:<23} {value}" for key, value in self.transport]

    @property
    def clublist_commands(self) -> list[str]:
        return [f"clublist config set {key} {value}" for key, value in self.clublist_settings]

    @property
    def config_option(self) -> str:
        """`` -c DIR`` for Postfix's commands, unless the directory is Postfix's default."""
        return "" if self.config_directory == DEFAULT_CONFIG_DIRECTORY else f" -c {self.config_directory}"

    @property
    def commands(self) -> list[str]:
        return [
            f"postmap{self.config_option} hash:{self.transport_path}",
            f"postfix{self.config_option} reload",
        ]

    def as_files(self) -> dict[str, object]:
        """The lines by where they go, for ``--json`` and the tests that apply them."""
        return {
            "main.cf": self.main_cf_lines,
            "master.cf": self.master_cf_lines,
            "transport": {"path": self.transport_path, "lines": self.transport_lines},
            "clublist": self.clublist_commands,
            "commands": self.commands,
            "notes": list(self.notes),
        }


def build(
    site: Site,
    *,
    public: str = DEFAULT_PUBLIC,
    relay: str | None = None,
    config_directory: str = DEFAULT_CONFIG_DIRECTORY,
) -> Setup:
    """The Postfix setup for *site*: *public* names the smtpd that faces the Internet (a
    master.cf service name such as ``smtp`` or ``192.0.2.1:25``), *relay* the loopback
    smtpd clublist sends through (default: ``delivery.smarthost`` when it is on loopback)."""
    config_directory = config_directory.rstrip("/") or "/"
    listen_host = site.listen.host if is_loopback(site.listen.host) else "127.0.0.1"
    clublist_address = hostport(listen_host, site.listen.port)
    relay_host, relay_port = parse_hostport(relay or default_relay(site), 25, what="relay")
    relay_address = hostport(relay_host, relay_port)
    transport_path = f"{config_directory}/transport"
    main_cf = [
        Setting("relay_domains", site.domain, "contains"),
        Setting("transport_maps", f"hash:{transport_path}", "contains"),
        Setting("message_size_limit", str(site.delivery.max_message_size), "at least"),
        Setting("smtputf8_enable", "yes"),
    ]
    notes = [
        f"Every session on the public smtpd ({public}) goes to clublist, which takes mail for "
        f"{site.domain} alone: this Postfix serves the club.",
    ]
    if site.tls.cert:
        main_cf += [
            Setting("smtpd_tls_security_level", "may"),
            Setting("smtpd_tls_chain_files", ", ".join(f for f in (site.tls.key, site.tls.cert) if f)),
        ]
    else:
        notes.append(
            "STARTTLS on port 25: set clublist's tls.cert and tls.key and run 'clublist postfix' again "
            "(or set Postfix's smtpd_tls_chain_files yourself)."
        )
    public_options = [("smtpd_proxy_filter", clublist_address), ("smtpd_proxy_options", "speed_adjust")]
    if site.listen.policy_port:
        # Strangers and unknown addresses refused at RCPT already (commas: master.cf takes no spaces).
        policy = f"inet:{hostport(listen_host, site.listen.policy_port)}"
        public_options.append(("smtpd_recipient_restrictions", f"check_policy_service,{policy}"))
    public_service = Service(public, tuple(public_options))
    # As Postfix's FILTER_README re-injection service: only this machine, no other checks.
    relay_service = Service(
        relay_address,
        (
            ("syslog_name", "postfix/clublist"),
            ("mynetworks", "127.0.0.0/8"),
            ("smtpd_client_restrictions", ""),
            ("smtpd_helo_restrictions", ""),
            ("smtpd_sender_restrictions", ""),
            ("smtpd_relay_restrictions", ""),
            ("smtpd_recipient_restrictions", "permit_mynetworks,reject"),
        ),
    )
    wanted = {
        "listen.host": listen_host,
        "delivery.mode": "smarthost",
        "delivery.smarthost": relay_address,
    }
    current = {
        "listen.host": site.listen.host,
        "delivery.mode": site.delivery.mode,
        "delivery.smarthost": site.delivery.smarthost,
    }
    changes = [(key, value) for key, value in wanted.items() if current[key] != value]
    if not _trusted(listen_host, site.listen.trusted_proxies):
        # Postfix connects from the address clublist listens on; XFORWARD only from a trusted proxy.
        changes.append(("listen.trusted_proxies", ",".join([*site.listen.trusted_proxies, listen_host])))
    return Setup(
        domain=site.domain,
        config_directory=config_directory,
        clublist_address=clublist_address,
        main_cf=tuple(main_cf),
        public=public_service,
        relay=relay_service,
        transport_path=transport_path,
        transport=((site.domain, f"smtp:{nexthop(listen_host, site.listen.port)}"),),
        clublist_settings=tuple(changes),
        notes=tuple(notes),
    )


def default_relay(site: Site) -> str:
    """``delivery.smarthost`` when it is a loopback address (clublist already sends through a
    local Postfix), else 127.0.0.1:10025."""
    if site.delivery.mode == "smarthost" and site.delivery.smarthost:
        host, _port = parse_hostport(site.delivery.smarthost, 25)
        if is_loopback(host):
            return site.delivery.smarthost
    return DEFAULT_RELAY


def _trusted(host: str, proxies: list[str]) -> bool:
    address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    return any(address in ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hostport(host: str, port: int) -> str:
    """An address as master.cf and smtpd_proxy_filter write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nexthop(host: str, port: int) -> str:
    """A transport next hop without an MX lookup."""
    return f"[ipv6:{host}]:{port}" if ":" in host else f"[{host}]:{port}"
