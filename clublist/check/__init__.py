"""``clublist check``: whether the club's mail will work, and how to fix what will not.

One module per area (config, dns, tls, listener, queue, postfix); each returns a list of
:class:`Finding` records, one line of the report each.  The checks only read:
lists.d, the state database, DNS, certificate files and, when the daemon
runs, its listener over loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clublist.club.model import Site
from clublist.club.store import Club, Store

Status = Literal["ok", "info", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("ok", "info", "warn", "fail")


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, how it stands, what was found and how to fix it."""

    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Target:
    """What the checks look at: the club as it loads (site alone when the rest does not) and the host."""

    store: Store
    state_path: Path
    site: Site | None
    club: Club | None
    public_ip: str | None = None

    @property
    def hostname(self) -> str:
        """The name the listener and the sender present (HELO, certificate, MX target)."""
        assert self.site is not None
        return self.site.listen.hostname or self.site.domain

    @property
    def helo_name(self) -> str:
        assert self.site is not None
        return self.site.delivery.helo_name or self.hostname
