"""Site settings: create a club (``init``) and read or change club.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clublist.actions import Actor, Done, require_admin
from clublist.club import model
from clublist.club.model import parse_address
from clublist.club.store import MEMBERS_FILE, SITE_FILE, Store
from clublist.club.tomltext import toml_value
from clublist.errors import ClublistError

CLUB_TEMPLATE = """\
# clublist site settings.  Every key has a default: `clublist config show` lists them
# all, and `clublist config set KEY VALUE` changes one, keeping these comments.

[site]
# Lists are LIST@domain; the administrator gets reports, bounce summaries and postmaster@.
domain = {domain}
name = {name}
admin = {admin}
# Reminders are scheduled in this time zone.
timezone = {timezone}

[listen]
# Where `clublist run` accepts mail: behind Postfix on a high port (`clublist postfix`
# prints Postfix's lines), or on port 25 itself.
host = "127.0.0.1"
port = 8025
# Clients whose mail counts as authenticated without SPF or DKIM (a club machine that sends
# its own mail).  Never 127.0.0.1 while Postfix is in front: every session comes from there.
# trusted_networks = ["192.0.2.10"]

[posting]
# A member's post that its From domain neither sent (SPF) nor signed (DKIM): "hold" for the
# owners, "accept", or "refuse".  A domain's own DMARC reject/quarantine is always obeyed.
unauthenticated = "hold"

[delivery]
# "direct" looks up each domain's MX; "smarthost" hands everything to one relay (Postfix).
mode = "direct"
# smarthost = "127.0.0.1:10025"
# One message per recipient, so that every bounce names its member.
verp = false

[retry]
# Seconds between tries of a deferred delivery; the last step repeats until give_up_after
# (5 days), and then a delivery report goes to the administrator.
schedule = [300, 600, 1200, 2400, 3600]
give_up_after = 432000
"""


def init_club(directory: Path, domain: str, admin: str, name: str = "", timezone: str = "") -> Done:
    """Create lists.d with a commented club.toml and an empty member registry."""
    domain = model.parse_domain(domain)
    admin = parse_address(admin, "admin address")
    directory.mkdir(parents=True, exist_ok=True)
    store = Store(directory)
    with store.locked():
        if store.path(SITE_FILE).exists():
            raise ClublistError(
                f"{store.path(SITE_FILE)} already exists; change settings with 'clublist config set'"
            )
        import tomlkit

        text = CLUB_TEMPLATE.format(
            domain=tomlkit.string(domain).as_string(),
            name=tomlkit.string(name or domain.split(".")[0].capitalize()).as_string(),
            admin=tomlkit.string(admin).as_string(),
            timezone=tomlkit.string(timezone or _local_timezone()).as_string(),
        )
        store.write_text(SITE_FILE, text)
        if not store.path(MEMBERS_FILE).exists():
            from clublist.club.store import MEMBERS_HEADER

            store.write_text(MEMBERS_FILE, MEMBERS_HEADER)
    store.load()
    return Done(f"initialised {directory} for {domain}; administrator {admin}")


def _local_timezone() -> str:
    """The machine's zone name when it has one (Debian's /etc/timezone), else UTC."""
    try:
        name = Path("/etc/timezone").read_text().strip()
    except OSError:
        return "UTC"
    return name or "UTC"


def config_show(store: Store, actor: Actor) -> dict[str, Any]:
    """Every setting with its value in force (defaults included)."""
    require_admin(actor, "read the site settings")
    site = store.load().site
    return {key: model.setting_value(site, key) for key in model.setting_keys()}


def config_get(store: Store, actor: Actor, key: str) -> Any:
    settings = config_show(store, actor)
    if key not in settings:
        raise ClublistError(f"unknown setting {key!r}; see 'clublist config show' for the keys")
    return settings[key]


def config_set(store: Store, actor: Actor, key: str, value: Any) -> Done:
    """Change one setting in club.toml, keeping comments; the value is checked against its type."""
    require_admin(actor, "change the site settings")
    typed = model.coerce_setting(key, value)
    section, _, name = key.partition(".")
    if key == "site.domain":
        typed = model.parse_domain(typed)
    if key == "site.admin":
        typed = parse_address(typed, "site.admin")

    def change(document: Any) -> None:
        import tomlkit

        if section not in document:
            document[section] = tomlkit.table()
        document[section][name] = typed

    store.edit_toml(SITE_FILE, change)
    return Done(f"{key} = {toml_value(typed)}", typed)
