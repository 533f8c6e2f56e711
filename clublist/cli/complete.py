"""Shell completion of list names and member addresses (click ``shell_complete`` callbacks).

Completion runs before ``main`` sets up the App, so the callbacks find lists.d the way
``main`` would: ``--dir`` on the command line, else CLUBLIST_DIR, else ./lists.d.  A club
that does not load completes nothing rather than printing an error into the shell.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from clublist.club.store import Club, Store
from clublist.errors import ClublistError


def _club(ctx: click.Context) -> Club | None:
    directory = ctx.find_root().params.get("directory") or Path("lists.d")
    try:
        return Store(directory).load()
    except (ClublistError, OSError):
        return None


def list_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The club's list names starting with what was typed."""
    club = _club(ctx)
    if club is None:
        return []
    return [
        CompletionItem(name, help=ml.description or None)
        for name, ml in sorted(club.lists.items())
        if name.startswith(incomplete.lower())
    ]


def member_addresses(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Members' addresses starting with what was typed (any case)."""
    club = _club(ctx)
    if club is None:
        return []
    typed = incomplete.lower()
    return [
        CompletionItem(m.email, help=m.name or None)
        for m in club.members
        if m.email.lower().startswith(typed)
    ]
