"""``clublist postfix``: the lines Postfix in front of the club needs, and how a running Postfix differs.

See :mod:`clublist.postfix` for the deployment (before-queue, so that no refusal becomes
backscatter) and :mod:`clublist.check.postfix` for the comparison.
"""

from __future__ import annotations

from clublist.actions import Actor, require_admin
from clublist.check import Finding
from clublist.check.postfix import compare
from clublist.club.store import Store
from clublist.postfix.postconf import Postfix
from clublist.postfix.setup import DEFAULT_CONFIG_DIRECTORY, DEFAULT_PUBLIC, Setup, build


def postfix_setup(
    store: Store,
    actor: Actor,
    *,
    public: str = DEFAULT_PUBLIC,
    relay: str | None = None,
    config_directory: str = DEFAULT_CONFIG_DIRECTORY,
) -> Setup:
    """What Postfix needs for this club's settings (see :func:`clublist.postfix.setup.build`)."""
    require_admin(actor, "see the Postfix settings")
    return build(store.load_site(), public=public, relay=relay, config_directory=config_directory)


def postfix_check(
    store: Store,
    actor: Actor,
    *,
    public: str = DEFAULT_PUBLIC,
    relay: str | None = None,
    config_directory: str = DEFAULT_CONFIG_DIRECTORY,
) -> list[Finding]:
    """How the Postfix configured in *config_directory* differs from :func:`postfix_setup`."""
    require_admin(actor, "check the Postfix settings")
    site = store.load_site()
    setup = build(site, public=public, relay=relay, config_directory=config_directory)
    return compare(setup, site, Postfix(config_directory))
