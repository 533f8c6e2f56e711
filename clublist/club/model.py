"""What the club decided, as typed records: the site, its lists, its members.

The store turns ``lists.d/`` into these records and back; everything else
reads them.  Validation lives here so the CLI, the bot and a hand-edited file
all meet the same rules.  Addresses keep what the person typed and compare
case-insensitively through :func:`address_key`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from clublist.errors import ClublistError

# RFC 5322 dot-atom local part.  Quoted local parts, comments and source
# routes are refused on purpose: they are the raw material of relay tricks
# and no club member needs them.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rf"{_ATEXT}(?:\.{_ATEXT})*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})+"
_ADDRESS_RE = re.compile(rf"({_LOCAL})@({_DOMAIN})")
_DOMAIN_RE = re.compile(_DOMAIN)
LIST_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# A DKIM selector is a DNS label here (and names its key file var/dkim/SELECTOR.key).
SELECTOR_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# Local parts the site answers itself (DESIGN.md, "Addresses the daemon answers"),
# and the names of lists.d's own files.
RESERVED_NAMES = frozenset(
    {
        "club",
        "members",
        "reminders",
        "bot",
        "postmaster",
        "abuse",
        "mailer-daemon",
        "bounces",
        "root",
        "hostmaster",
        "webmaster",
        "noreply",
        "no-reply",
    }
)
RESERVED_SUFFIXES = ("-owner", "-request", "-bounces")

PostingPolicy = Literal["members", "club", "owners", "moderated"]
POSTING_POLICIES: tuple[str, ...] = ("members", "club", "owners", "moderated")
FromRewrite = Literal["always", "dmarc", "never"]
FROM_REWRITES: tuple[str, ...] = ("always", "dmarc", "never")
ROLES: tuple[str, ...] = ("member", "admin")
Language = Literal["en", "de"]
LANGUAGES: tuple[str, ...] = ("en", "de")
OwnerNotices = Literal["each", "daily", "none"]


def parse_address(text: str, what: str = "address") -> str:
    """Return *text* stripped if it is a plain ``local@domain`` address, else raise saying why.

    email-validator decides (without DNS: deliverability is the delivery worker's
    business), with quoted local parts, address literals and special-use domains
    refused: they are the raw material of relay tricks and no club member needs
    them.  The address is kept as typed (a person's capitalisation and an IDN
    domain in Unicode survive); use :func:`address_key` to compare.
    """
    if not isinstance(text, str):
        raise ClublistError(f"{what} must be text, not {type(text).__name__}")
    candidate = text.strip()
    if any(c in candidate for c in "\r\n\t\0"):
        raise ClublistError(f"{what} {candidate!r} contains a control character")
    if _plain_ascii(candidate):
        return candidate  # what email-validator would accept too, about 50 times faster
    problem = _validation_problem(candidate)
    if problem:
        raise ClublistError(f"{what} {candidate!r} is not usable: {problem}")
    return candidate


def is_plain_address(text: str) -> bool:
    """Whether *text* is an ASCII dot-atom at a host name of two labels or more: the form that
    every address parser (email's, aiosmtpd's, aiosmtplib's) gives back exactly as it is."""
    return _ADDRESS_RE.fullmatch(text) is not None


def _plain_ascii(candidate: str) -> bool:
    """The common case, decided without email-validator: an ASCII dot-atom at an ordinary host name.

    It says yes only where email-validator says yes (tests/test_addresses.py checks both
    agree), so registries of thousands load fast.
    """
    match = _ADDRESS_RE.fullmatch(candidate)
    if match is None or len(candidate) > 254 or len(match[1]) > 64:
        return False
    tld = match[2].rpartition(".")[2].lower()
    return tld.isalpha() and tld not in _SPECIAL_USE_TLDS and not tld.startswith("xn--")


def _validation_problem(candidate: str) -> str:
    """email-validator's reason for refusing *candidate*, or "" when it is fine."""
    import email_validator

    if "<" in candidate:
        return "write the address alone, as name@example.org, without a display name or <>"
    try:
        email_validator.validate_email(
            candidate,
            check_deliverability=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=True,
        )
    except email_validator.EmailNotValidError as exc:
        return str(exc).rstrip(".")
    return ""


# email-validator refuses these as special-use names (RFC 6761 and friends).
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def address_key(address: str) -> str:
    """The form addresses are compared in: case-insensitive, as every real provider treats
    them, and an internationalised domain in its ASCII (IDNA) form, so ``x@bücher.example``
    and ``x@xn--bcher-kva.example`` are one address."""
    key = address.strip().lower()
    if key.isascii():
        return key
    local, at, domain = key.rpartition("@")
    return f"{local}{at}{_ascii_domain(domain)}"


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def check_selector(selector: str) -> str:
    """Return *selector* if it may name a DKIM key (a DNS label, lower case), else raise."""
    if not isinstance(selector, str) or not SELECTOR_RE.fullmatch(selector):
        raise ClublistError(
            f"DKIM selector {selector!r} is not allowed: use lower-case letters, digits and '-'"
            " (for example: s202612)"
        )
    return selector


def parse_domain(text: str) -> str:
    """Return a lower-cased host name such as ``myclub.org``, or raise."""
    candidate = text.strip().rstrip(".").lower() if isinstance(text, str) else ""
    if not _DOMAIN_RE.fullmatch(candidate):
        raise ClublistError(f"domain {text!r} is not a host name such as myclub.org")
    return candidate


def check_list_name(name: str) -> str:
    """Return *name* if it may name a list (it becomes a local part and a file name), else raise."""
    if not isinstance(name, str) or not LIST_NAME_RE.fullmatch(name) or len(name) > 64:
        raise ClublistError(
            f"list name {name!r} is not allowed: use lower-case letters, digits, '.', '_' "
            "and '-', starting with a letter or digit (for example: youth)"
        )
    if name in RESERVED_NAMES or name.endswith(RESERVED_SUFFIXES):
        raise ClublistError(f"list name {name!r} is reserved for the site's own addresses")
    return name


# --- the site (club.toml) -------------------------------------------------


def bounds(low: float, high: float | None = None) -> dict[str, Any]:
    """Field metadata: the range a number (for a list: each item) must stay in.

    The bounds are checked wherever a value enters: ``config set``, loading
    club.toml, and so the daemon's reload, which keeps the last good settings.
    """
    return {"bounds": (low, high)}


def bounded(default: float, low: float, high: float | None = None) -> Any:
    """A number setting's default with its :func:`bounds`."""
    return field(default=default, metadata=bounds(low, high))


PORT = (1, 65535)


@dataclass(frozen=True)
class SiteSection:
    """Who the club is."""

    domain: str = "myclub.org"
    name: str = "My Club"
    admin: str = "admin@myclub.org"
    timezone: str = "Europe/Berlin"
    bounce_local_part: str = "bounces"


@dataclass(frozen=True)
class ListenSection:
    """Where ``clublist run`` takes mail in."""

    host: str = "127.0.0.1"
    port: int = bounded(8025, *PORT)
    hostname: str = ""
    # The largest post taken in (announced as SIZE); see inbound_size_limit for the room kept
    # below delivery.max_message_size.
    max_message_size: int = bounded(10_000_000, 1)
    max_recipients: int = bounded(100, 1)
    max_connections: int = bounded(100, 1)
    # Sessions from one client address at once; peers in trusted_proxies are not counted
    # (Postfix in front limits its clients itself: smtpd_client_connection_count_limit).
    max_connections_per_client: int = bounded(10, 1)
    timeout: int = bounded(300, 1)
    # Seconds a session may wait for a command outside a mail transaction (before MAIL FROM):
    # shorter than timeout, so idle connections cannot hold the slots.
    idle_timeout: int = bounded(60, 1)
    # One-click unsubscribe (RFC 8058) is served here while unsubscribe.url is set; 0: any free port.
    http_port: int = bounded(8080, 0, 65535)
    # Serve it as HTTPS with tls.cert; plain HTTP suits a reverse proxy that holds the certificate.
    http_tls: bool = False
    # Clients whose mail counts as authenticated (a club machine that submits its own mail).
    # Empty by default: behind Postfix every session comes from 127.0.0.1, so trusting
    # loopback would trust the whole Internet; XFORWARD gives the real client instead.
    trusted_networks: list[str] = field(default_factory=list)
    # Peers whose XFORWARD (Postfix's smtpd_proxy_filter) names the real client.
    trusted_proxies: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Postfix's policy delegation (check_policy_service) on this port refuses strangers and
    # unknown addresses at RCPT, before the message is sent; 0: off.  Takes a restart.
    policy_port: int = bounded(0, 0, 65535)


@dataclass(frozen=True)
class TLSSection:
    """The listener's certificate (inbound STARTTLS)."""

    cert: str = ""
    key: str = ""
    require: bool = False
    # "ask": request a client certificate (never require one), verify it against the system
    # CAs and record the result; it says which server connected, not who wrote the post.
    client_certificates: Literal["none", "ask"] = "none"


@dataclass(frozen=True)
class DeliverySection:
    """How mail leaves: straight to each domain's MX, or through a smarthost."""

    mode: Literal["direct", "smarthost"] = "direct"
    smarthost: str = ""
    smarthost_tls: Literal["none", "opportunistic", "required"] = "opportunistic"
    smarthost_username: str = ""
    smarthost_password_file: str = ""
    tls: Literal["opportunistic", "verify"] = "opportunistic"
    tls_verify_domains: list[str] = field(default_factory=list)
    tls_ca_file: str = ""
    smtp_port: int = bounded(25, *PORT)
    # The largest message the next hop takes: Postfix's message_size_limit (its default) when
    # it relays for clublist, or the smarthost's SIZE.
    max_message_size: int = bounded(10_240_000, 128 * 1024)
    dns_servers: list[str] = field(default_factory=list)
    dns_port: int = bounded(53, *PORT)
    helo_name: str = ""
    max_recipients_per_transaction: int = bounded(100, 1)
    concurrency: int = bounded(50, 1)
    per_destination_concurrency: int = bounded(20, 1)
    timeout: int = bounded(60, 1)
    dns_timeout: float = bounded(10.0, 0.1, 60)
    verp: bool = False


@dataclass(frozen=True)
class RetrySection:
    """When a deferred delivery is tried again, and when clublist gives up."""

    schedule: list[int] = field(default_factory=lambda: [300, 600, 1200, 2400, 3600], metadata=bounds(1))
    give_up_after: int = bounded(5 * 24 * 3600, 1)


@dataclass(frozen=True)
class PostingSection:
    """Limits on posts, site-wide (a member may override ``daily_limit``)."""

    daily_limit: int = 50  # 0: no daily limit (hourly_limit still applies)
    daily_limit_reply: Literal["temporary", "permanent"] = "temporary"
    # Posts per author in any 60 minutes: the brake on loops and floods, for everyone; it
    # answers as daily_limit_reply says.
    hourly_limit: int = bounded(10, 1)
    # A member's post without an SPF or DKIM pass aligned with its From domain (a list may
    # override this); a failing domain that publishes p=reject/quarantine is always refused.
    unauthenticated: Literal["hold", "accept", "refuse"] = "hold"
    # Posts from people who may not post to a list: refused at RCPT, or held for its owners
    # (a list's own ``nonmember`` overrides it).  Mail to unknown addresses is refused either way.
    nonmember: Literal["refuse", "hold"] = "refuse"


@dataclass(frozen=True)
class BouncesSection:
    """Mailman's bounce score: disable delivery above the threshold."""

    threshold: float = bounded(5.0, 0.1)
    stale_after_days: int = bounded(7, 1)
    hard_weight: float = 1.0
    soft_weight: float = 0.5


@dataclass(frozen=True)
class DkimSection:
    """Signing everything clublist sends with the keys in var/dkim/SELECTOR.key (``clublist dkim``)."""

    selector: str = ""
    # A second key (ed25519) that signs in addition to the first, for receivers that know it.
    ed25519_selector: str = ""
    # Seal posts that carry clublist's Authentication-Results with ARC (RFC 8617).
    arc: bool = True


@dataclass(frozen=True)
class ModerationSection:
    """Held posts: how long they wait for an owner before they expire (the author is told)."""

    expire_days: int = bounded(30, 1)


@dataclass(frozen=True)
class UnsubscribeSection:
    """RFC 8058 one-click unsubscribe: each member's copy carries its own link under this URL."""

    url: str = ""


@dataclass(frozen=True)
class ArchiveSection:
    """What members may fetch from the lists' archives by mail (``get LIST 10-15``)."""

    get_per_request: int = bounded(10, 1)
    get_per_day: int = bounded(30, 1)


@dataclass(frozen=True)
class DigestSection:
    """The daily digest: sent once a day at this time (HH:MM, site time zone) when there were posts."""

    time: str = "18:00"


@dataclass(frozen=True)
class Site:
    """club.toml: every setting has a default, so a fresh club needs only a domain."""

    site: SiteSection = field(default_factory=SiteSection)
    listen: ListenSection = field(default_factory=ListenSection)
    tls: TLSSection = field(default_factory=TLSSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    retry: RetrySection = field(default_factory=RetrySection)
    posting: PostingSection = field(default_factory=PostingSection)
    bounces: BouncesSection = field(default_factory=BouncesSection)
    dkim: DkimSection = field(default_factory=DkimSection)
    unsubscribe: UnsubscribeSection = field(default_factory=UnsubscribeSection)
    moderation: ModerationSection = field(default_factory=ModerationSection)
    archive: ArchiveSection = field(default_factory=ArchiveSection)
    digest: DigestSection = field(default_factory=DigestSection)

    @property
    def domain(self) -> str:
        return self.site.domain

    @property
    def bot_address(self) -> str:
        return f"bot@{self.site.domain}"

    @property
    def bounce_address(self) -> str:
        return f"{self.site.bounce_local_part}@{self.site.domain}"


# What a post may grow by on its way through clublist: decoration (List-* headers, subject
# prefix, footer, a rewritten From, Authentication-Results) and then what is added as it
# leaves (DKIM and ARC headers, the relay's Received header).  A post is taken in only with
# DECORATION_ROOM to spare below the next hop's limit, and a decorated post must still leave
# SENDING_ROOM; so nothing is accepted with 250 that the next hop then refuses for every member.
DECORATION_ROOM = 64 * 1024
SENDING_ROOM = 16 * 1024


def inbound_size_limit(site: Site) -> int:
    """The largest post clublist takes in: listen.max_message_size, capped so that the post
    still fits delivery.max_message_size after decoration (announced as SIZE, enforced in DATA)."""
    cap = site.delivery.max_message_size - DECORATION_ROOM
    return min(site.listen.max_message_size, cap) if site.listen.max_message_size else cap


def outbound_size_limit(site: Site) -> int:
    """The largest decorated post clublist queues: the next hop's limit less :data:`SENDING_ROOM`."""
    return site.delivery.max_message_size - SENDING_ROOM


SITE_SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Site)}  # type: ignore[misc]


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class: it evaluates every (string) annotation anew on
    each call, which made each load of club.toml and the list files cost milliseconds."""
    return typing.get_type_hints(cls)


def _section_types(section: str) -> dict[str, Any]:
    return _type_hints(_type_hints(Site)[section])


def setting_keys() -> list[str]:
    """Every dotted key club.toml knows, for ``config`` and its completions."""
    return [f"{section}.{name}" for section in _type_hints(Site) for name in _section_types(section)]


def setting_value(site: Site, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(site, section), name)


def coerce_setting(key: str, value: Any) -> Any:
    """Check *value* against the type of setting *key*; strings from a command line are converted."""
    section, _, name = key.partition(".")
    types_ = _section_types(section) if section in SITE_SECTIONS else {}
    if name not in types_:
        raise ClublistError(f"unknown setting {key!r}; see 'clublist config show' for the keys")
    fields = {f.name: f for f in dataclasses.fields(_type_hints(Site)[section])}
    typed = _coerce(key, types_[name], value, fields[name].metadata.get("bounds"))
    if key in ("listen.trusted_networks", "listen.trusted_proxies"):
        for network in typed:
            _check_network(key, network)
    if key == "delivery.smarthost" and typed and parse_hostport(typed, 25, what=key)[1] == 0:
        raise ClublistError(f"{key} port must be between 1 and 65535, not 0")
    return typed


def _coerce(key: str, hint: Any, value: Any, bounds: tuple[float, float | None] | None = None) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ClublistError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ClublistError(f"{key} must be a list")
        return [_coerce(key, item, v, bounds) for v in value]
    if hint is bool:
        if isinstance(value, str) and value.lower() in {
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        }:
            return value.lower() in {"true", "yes", "on", "1"}
        if not isinstance(value, bool):
            raise ClublistError(f"{key} must be true or false, not {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ClublistError(f"{key} must be a number, not {value!r}")
        if isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                raise ClublistError(f"{key} must be a number, not {value!r}") from None
        if hint is float and isinstance(value, int):
            value = float(value)
        low, high = bounds or (0, None)
        if not isinstance(value, hint):
            raise ClublistError(f"{key} must be a number, not {value!r}")
        if high is not None and not low <= value <= high:
            raise ClublistError(f"{key} must be between {low:g} and {high:g}, not {value!r}")
        if value < low:
            raise ClublistError(f"{key} must be at least {low:g}, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ClublistError(f"{key} must be text, not {value!r}")
    return value


def _check_network(key: str, text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ClublistError(f"{key}: {text!r} is not an IP address or network (e.g. 192.0.2.0/24)") from None


def parse_hostport(text: str, default_port: int, *, what: str = "address") -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` to a pair (port 0: any free port, for tests)."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536 or any(c.isspace() for c in host):
        raise ClublistError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:25)")
    return host, int(port)


def site_from_toml(data: dict[str, Any]) -> Site:
    """Build a :class:`Site` from club.toml's parsed tables, refusing unknown keys and wrong types."""
    sections: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SITE_SECTIONS:
            raise ClublistError(f"unknown section [{section}]; known sections: {', '.join(SITE_SECTIONS)}")
        if not isinstance(values, dict):
            raise ClublistError(f"[{section}] must be a table")
        checked = {name: coerce_setting(f"{section}.{name}", v) for name, v in values.items()}
        sections[section] = _type_hints(Site)[section](**checked)
    site = Site(**sections)
    parse_domain(site.site.domain)
    parse_address(site.site.admin, "site.admin")
    _check_timezone(site.site.timezone)
    digest_time(site)
    for selector in (site.dkim.selector, site.dkim.ed25519_selector):
        if selector:
            check_selector(selector)
    if site.unsubscribe.url and not re.fullmatch(r"https://[^\s/?#]+(?:/[^\s?#]*)?", site.unsubscribe.url):
        raise ClublistError(
            f"unsubscribe.url {site.unsubscribe.url!r} must be an https:// URL without query"
            " (RFC 8058), for example https://lists.myclub.org/u"
        )
    return site


@dataclass(frozen=True)
class Advice:
    """Something lists.d allows that likely does not do what was meant: what it is, and the fix."""

    detail: str
    fix: str

    def __str__(self) -> str:
        return f"{self.detail}; {self.fix}"


def site_advice(site: Site) -> list[Advice]:
    """Settings that load but quietly disable something; logged by the daemon, shown by ``check``."""
    advice = []
    if site.tls.require and not site.tls.cert:
        advice.append(
            Advice(
                "tls.require is true but tls.cert is empty, so 'clublist run' refuses to start",
                "set a certificate ('clublist config set tls.cert /etc/ssl/club/fullchain.pem' and tls.key) "
                "or 'clublist config set tls.require false'",
            )
        )
    if site.posting.daily_limit == 0:
        advice.append(
            Advice(
                f"posting.daily_limit is 0 (no daily limit): only posting.hourly_limit "
                f"({site.posting.hourly_limit} an hour) brakes floods and mail loops",
                "clublist config set posting.daily_limit 50",
            )
        )
    if site.listen.max_message_size > inbound_size_limit(site):
        advice.append(
            Advice(
                f"listen.max_message_size ({site.listen.max_message_size}) leaves less than "
                f"{DECORATION_ROOM} bytes for decoration below delivery.max_message_size "
                f"({site.delivery.max_message_size}), so clublist takes in at most "
                f"{inbound_size_limit(site)}",
                f"clublist config set listen.max_message_size {inbound_size_limit(site)} (or raise "
                "delivery.max_message_size to what the next hop takes)",
            )
        )
    if site.delivery.mode == "smarthost" and not site.delivery.smarthost:
        advice.append(
            Advice(
                "delivery.mode is smarthost but delivery.smarthost is empty, so mail goes to each MX",
                "clublist config set delivery.smarthost HOST:PORT",
            )
        )
    return advice


def digest_time(site: Site) -> tuple[int, int]:
    """``digest.time`` as (hour, minute), or raise naming the setting."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", site.digest.time.strip())
    if not match:
        raise ClublistError(f"digest.time {site.digest.time!r} is not a time of day such as 18:00")
    return int(match[1]), int(match[2])


def _check_timezone(name: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ClublistError(
            f"site.timezone {name!r} is not a known time zone (for example Europe/Berlin)"
        ) from None


# --- lists (one TOML file each) --------------------------------------------


@dataclass(frozen=True)
class MailingList:
    """One list: a group of the club.  Its members are recorded in members.toml."""

    name: str
    title: str = ""
    description: str = ""
    posting: PostingPolicy = "members"
    prefix: str = ""
    footer: str = ""
    owners: tuple[str, ...] = ()
    reply_to: str = "author"  # "author", "list", or an address
    from_rewrite: FromRewrite = "always"
    send_to_author: bool = True
    self_subscribe: bool = True
    archive_url: str = ""
    # posting.unauthenticated for this list; "site" follows club.toml.
    unauthenticated: Literal["site", "hold", "accept", "refuse"] = "site"
    # The shipped set of texts people receive (clublist/templates/LANGUAGE).
    language: Language = "en"
    # Owners hear of each join and leave: a mail each ("each"), one a day ("daily"), or not at all.
    owner_notices: OwnerNotices = "each"
    # People who may not post: "refuse" or "hold" for the owners; "" follows posting.nonmember.
    nonmember: Literal["", "refuse", "hold"] = ""

    def nonmember_policy(self, site: Site) -> str:
        return self.nonmember or site.posting.nonmember

    # Keep every accepted post in var/archive/LIST/ (and so offer digests); 0 days: keep for ever.
    archive: bool = True
    archive_days: int = 0

    @property
    def display_name(self) -> str:
        return self.title or self.name.capitalize()

    def address(self, domain: str) -> str:
        return f"{self.name}@{domain}"

    def is_owner(self, address: str) -> bool:
        return address_key(address) in {address_key(o) for o in self.owners}


LIST_KEYS = tuple(f.name for f in dataclasses.fields(MailingList) if f.name != "name")


def list_from_toml(name: str, data: dict[str, Any]) -> MailingList:
    """Build a :class:`MailingList` named after its file from that file's parsed content."""
    check_list_name(name)
    values = {key: coerce_list_setting(key, value) for key, value in data.items()}
    return MailingList(name=name, **values)


def coerce_list_setting(key: str, value: Any) -> Any:
    """Check one list setting (from a file or ``list set``); strings are converted."""
    if key not in LIST_KEYS:
        raise ClublistError(f"unknown list setting {key!r}; known: {', '.join(LIST_KEYS)}")
    if key == "owners":
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list | tuple):
            raise ClublistError("owners must be a list of addresses")
        return tuple(parse_address(v, "owner") for v in value)
    if key == "reply_to" and value not in ("author", "list"):
        return parse_address(value, "reply_to")
    hint = _type_hints(MailingList)[key]
    return _coerce(key, hint, value)


# --- members (members.toml) -------------------------------------------------


class _Keyed:
    """Room for a record's comparison key beside its fields: a slot, so no per-record dict."""

    __slots__ = ("_key",)
    _key: str


@dataclass(frozen=True, slots=True)
class Member(_Keyed):
    """A person of the club: one address, optional aliases they also post from, their lists.

    A daemon holds one per member (50,000 in a big club), so the record has slots and no
    ``__dict__``; the registry shares equal values between records (list names and tuples
    of them, and the key with the email when it is already lower case).
    """

    email: str
    name: str = ""
    lists: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    role: Literal["member", "admin"] = "member"
    delivery: Literal["enabled", "disabled"] = "enabled"
    disabled_reason: str = ""
    daily_limit: int | None = None
    # Their posts wait for a list owner's approval (``member set --moderated``).
    moderated: bool = False
    # The lists (of ``lists``) this member reads as one daily digest instead of post by post.
    digest: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The email as addresses are compared (computed once: a 50,000-member club asks often)."""
        try:
            return self._key
        except AttributeError:
            key = address_key(self.email)
            object.__setattr__(self, "_key", self.email if key == self.email else key)
            return self._key

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def receives(self) -> bool:
        return self.delivery == "enabled"

    def takes_digest(self, list_name: str) -> bool:
        return list_name in self.digest and list_name in self.lists

    def to_toml(self) -> dict[str, Any]:
        """The fields worth writing: defaults are left out so files stay short."""
        out: dict[str, Any] = {"email": self.email}
        if self.name:
            out["name"] = self.name
        out["lists"] = list(self.lists)
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.role != "member":
            out["role"] = self.role
        if self.delivery != "enabled":
            out["delivery"] = self.delivery
        if self.disabled_reason:
            out["disabled_reason"] = self.disabled_reason
        if self.daily_limit is not None:
            out["daily_limit"] = self.daily_limit
        if self.moderated:
            out["moderated"] = True
        if self.digest:
            out["digest"] = list(self.digest)
        return out


MEMBER_KEYS = tuple(f.name for f in dataclasses.fields(Member))


def check_name(name: Any) -> str:
    """A person's display name: one line of text, no control characters."""
    if not isinstance(name, str):
        raise ClublistError(f"name must be text, not {name!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ClublistError(f"name {name!r} contains a control character")
    if len(name) > 200:
        raise ClublistError("name is longer than 200 characters")
    return name.strip()


def member_from_toml(data: dict[str, Any]) -> Member:
    """Build a :class:`Member` from one ``[[member]]`` table, refusing unknown keys and wrong types."""
    unknown = set(data) - set(MEMBER_KEYS)
    if unknown:
        raise ClublistError(f"unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(MEMBER_KEYS)}")
    if "email" not in data:
        raise ClublistError("a member needs an email")
    email = parse_address(data["email"], "email")
    lists = data.get("lists", [])
    aliases = data.get("aliases", [])
    digest = data.get("digest", [])
    if not isinstance(lists, list) or not isinstance(aliases, list) or not isinstance(digest, list):
        raise ClublistError(f'{email}: lists, aliases and digest must be lists, e.g. lists = ["youth"]')
    role = data.get("role", "member")
    if role not in ROLES:
        raise ClublistError(f"{email}: role must be one of {', '.join(ROLES)}, not {role!r}")
    delivery = data.get("delivery", "enabled")
    if delivery not in ("enabled", "disabled"):
        raise ClublistError(f"{email}: delivery must be enabled or disabled, not {delivery!r}")
    daily_limit = data.get("daily_limit")
    if daily_limit is not None and (isinstance(daily_limit, bool) or not isinstance(daily_limit, int)):
        raise ClublistError(f"{email}: daily_limit must be a whole number")
    reason = data.get("disabled_reason", "")
    if not isinstance(reason, str):
        raise ClublistError(f"{email}: disabled_reason must be text")
    moderated = data.get("moderated", False)
    if not isinstance(moderated, bool):
        raise ClublistError(f"{email}: moderated must be true or false")
    return Member(
        email=email,
        name=check_name(data.get("name", "")),
        # Interned: a list's name is then one string however many members are on the list.
        lists=tuple(dict.fromkeys(sys.intern(check_list_name(n)) for n in lists)),
        aliases=tuple(parse_address(a, "alias") for a in aliases),
        role="admin" if role == "admin" else "member",  # the constants, not a copy per member
        delivery="enabled" if delivery == "enabled" else "disabled",
        disabled_reason=reason,
        daily_limit=daily_limit,
        moderated=moderated,
        digest=tuple(dict.fromkeys(check_list_name(n) for n in digest)),
    )


def replace(record: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` under a shorter name, for frozen records."""
    return dataclasses.replace(record, **changes)
