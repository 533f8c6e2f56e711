"""``clublist check``: run the checks of the chosen areas and collect their findings.

The club is loaded once; when lists.d does not load, club.toml alone still
lets the DNS, TLS and listener checks run (the config area reports why).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from pathlib import Path

from clublist.actions import Actor
from clublist.check import Finding, Target
from clublist.club.store import Store
from clublist.errors import ClublistError, PermissionDenied

AREAS = ("config", "dns", "tls", "listener", "queue", "postfix")
NEEDS_SITE = ("dns", "tls", "listener", "postfix")


def check(
    store: Store,
    state_path: Path,
    actor: Actor,
    areas: Sequence[str] = AREAS,
    public_ip: str | None = None,
) -> list[Finding]:
    """The findings of each area in *areas*, in the order of :data:`AREAS`."""
    if not actor.is_admin:
        raise PermissionDenied("only the club's administrator may run the checks")
    club, site, problem = None, None, ""
    try:
        club = store.load()
        site = club.site
    except ClublistError as exc:
        problem = str(exc)
        with contextlib.suppress(ClublistError):
            site = store.load_site()
    target = Target(store, state_path, site, club, public_ip)
    findings: list[Finding] = []
    for area in (a for a in AREAS if a in areas):
        if area in NEEDS_SITE and site is None:
            findings.append(
                Finding(
                    area,
                    "fail",
                    f"not checked: {problem}",
                    "fix club.toml first ('clublist check --only config')",
                )
            )
            continue
        findings += importlib.import_module(f"clublist.check.{area}").run(target)
    return findings
