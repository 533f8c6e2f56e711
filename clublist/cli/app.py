"""What every command needs: where lists.d and the state are, who asks, where output goes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from clublist.actions import Actor
from clublist.store import Store


def default_state_path(directory: Path) -> Path:
    """The state database sits in var/ beside lists.d, never inside it."""
    return directory.absolute().parent / "var" / "clublist.sqlite3"


@dataclass
class App:
    """The context object: the shell passes the administrator; the bot passes a sender."""

    directory: Path
    state_path: Path
    actor: Actor = field(default_factory=Actor.shell)
    out: TextIO | None = None
    # The bot sets this: commands that read local files or need a terminal refuse to run.
    by_mail: bool = False

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.directory)

    @property
    def stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout

    @property
    def is_terminal(self) -> bool:
        return self.out is None and sys.stdout.isatty()


F = TypeVar("F", bound=Callable[..., Any])

pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
