"""Membership changes as log lines: who, what, and by which way (CLI, bot, bounces, one-click).

The daemon compares the registry before and after each reload of lists.d and logs one line per
change.  The parts inside the daemon that change members.toml themselves (the bot, one-click
unsubscribe, bounce disabling) :func:`claim` the addresses they changed first, so their lines
name them; any other change came from the command line or an editor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from clublist.club.model import Member, address_key

OUTSIDE = "CLI"

_claims: dict[str, str] = {}
_lock = threading.Lock()


def claim(by: str, addresses: Iterable[str]) -> None:
    """Say that the next change to these members is made *by* this way (bot, bounces, one-click)."""
    with _lock:
        for address in addresses:
            _claims[address_key(address)] = by


def _taken(key: str) -> str:
    with _lock:
        return _claims.pop(key, OUTSIDE)


def membership_changes(before: Sequence[Member], after: Sequence[Member]) -> list[str]:
    """One line per member added, removed, joining or leaving a list, or disabled/enabled."""
    old = {m.key: m for m in before}
    new = {m.key: m for m in after}
    lines = []
    for key in sorted(old.keys() | new.keys()):
        was, now = old.get(key), new.get(key)
        what: list[str] = []
        if was is None and now is not None:
            what.append(f"added, lists: {' '.join(now.lists) or 'none'}")
        elif now is None and was is not None:
            what.append("removed")
        elif was is not None and now is not None:
            joined = [n for n in now.lists if n not in was.lists]
            left = [n for n in was.lists if n not in now.lists]
            what += [f"joined {' '.join(joined)}"] if joined else []
            what += [f"left {' '.join(left)}"] if left else []
            if was.delivery != now.delivery:
                reason = f" ({now.disabled_reason})" if now.disabled_reason and not now.receives else ""
                what.append(f"delivery {now.delivery}{reason}")
        if what:
            lines.append(f"membership: {key} {'; '.join(what)} (by {_taken(key)})")
    return lines
