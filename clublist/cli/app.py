"""What every command needs: where lists.d and the state are, who asks, where output goes."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO, TypeVar

import click

if TYPE_CHECKING:  # imported when first used, so that `clublist --help` stays fast
    from clublist.actions import Actor
    from clublist.club.store import Store


def default_state_path(directory: Path) -> Path:
    """The state database sits in var/ beside lists.d, never inside it."""
    return directory.absolute().parent / "var" / "clublist.sqlite3"


def _shell_actor() -> Actor:
    """At the shell the actor is the administrator."""
    from clublist.actions import Actor

    return Actor.shell()


@dataclass
class App:
    """The context object: the shell passes the administrator; the bot passes a sender."""

    directory: Path
    state_path: Path
    actor: Actor = field(default_factory=_shell_actor)
    out: TextIO | None = None
    # The bot sets this: commands that read local files or need a terminal refuse to run.
    by_mail: bool = False
    # Messages a command hands the bot to attach to its reply (``archive get`` by mail).
    attachments: list[bytes] = field(default_factory=list)
    # What "now" is for commands that depend on it (tests pass their own).
    clock: Callable[[], float] = time.time

    @functools.cached_property
    def store(self) -> Store:
        from clublist.club.store import Store

        return Store(self.directory, cache_dir=self.state_path.parent, on_change=self.changed_lists_d)

    def changed_lists_d(self) -> None:
        """After a write to lists.d: the running daemon reloads it before the command returns."""
        import time

        from clublist.state.db import DaemonLock

        lock = DaemonLock(self.state_path)
        if lock.reload(time.monotonic_ns()) is False:
            click.echo(
                f"warning: the running daemon (pid {lock.holder()}) did not confirm the change; "
                "it picks it up within a second",
                err=True,
            )

    @property
    def stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout

    @property
    def is_terminal(self) -> bool:
        return self.out is None and sys.stdout.isatty()


Audience = Literal["member", "owner", "admin"]
AUDIENCES: tuple[Audience, ...] = ("member", "owner", "admin")
C = TypeVar("C", bound=click.Command)


def by_mail(audience: Audience, *, changes: bool = True) -> Callable[[C], C]:
    """Offer a command to the mail bot, for club members, list owners or the administrator.

    Commands without this mark cannot be run by mail at all.  The actions
    still check every request's rights; the mark decides what the bot runs
    and what its ``help`` lists, straight from the click definitions.  A
    command that *changes* something runs by mail only after the sender
    confirms it from their own mailbox.
    """

    def mark(command: C) -> C:
        command.mail_audience = audience  # type: ignore[attr-defined]
        command.mail_changes = changes  # type: ignore[attr-defined]
        return command

    return mark


pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
