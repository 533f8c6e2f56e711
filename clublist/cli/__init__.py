"""The ``clublist`` command: a thin click layer over :mod:`clublist.actions`.

Each command group lives in its own module and is imported only when it is
used, so ``clublist --help`` and the store commands never pay for the
daemon's libraries (aiosmtpd, aiosmtplib, dnspython, rich).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import click

from clublist.cli.app import App, default_state_path
from clublist.errors import ClublistError


@dataclass(frozen=True)
class Lazy:
    """Where a command lives, and its one-line help, so ``--help`` imports nothing.

    A test checks that each ``summary`` is the command's own short help.
    """

    target: str
    summary: str


# In the order --help shows them.
COMMANDS = {
    "init": Lazy(
        "clublist.cli.config:init", "Create lists.d with a commented club.toml and an empty member registry."
    ),
    "config": Lazy("clublist.cli.config:config", "Show and change the site settings in club.toml."),
    "list": Lazy(
        "clublist.cli.lists:list_group", "Create, show, change and delete lists (one TOML file each)."
    ),
    "member": Lazy("clublist.cli.member:member", "Add, change, list, import and export members."),
    "run": Lazy("clublist.cli.run:run", "Take mail in and deliver it, in the foreground (for systemd)."),
    "queue": Lazy(
        "clublist.cli.queue:queue_group", "Show, retry, drop and flush outbound mail waiting for delivery."
    ),
    "held": Lazy(
        "clublist.cli.held:held", "List, read, approve, reject and discard posts held for moderation."
    ),
    "bounces": Lazy("clublist.cli.bounces:bounces", "See and reset bounce scores."),
    "remind": Lazy(
        "clublist.cli.remind:remind",
        "Queue the reminders that have fallen due; add, list and remove reminders.",
    ),
    "archive": Lazy(
        "clublist.cli.archive:archive",
        "Read, fetch, export and prune the lists' archives (var/archive/LIST, Maildir).",
    ),
    "digest": Lazy(
        "clublist.cli.digest:digest",
        "Send the lists' digests by hand (cron's 'clublist remind' sends them daily at digest.time).",
    ),
    "dkim": Lazy("clublist.cli.dkim:dkim", "Make DKIM keys and show the DNS records to publish."),
    "status": Lazy("clublist.cli.status:status", "Show the queue, held posts and whether the daemon runs."),
    "check": Lazy(
        "clublist.cli.check:check",
        "Check whether the club's mail will work, and say how to fix what will not.",
    ),
    "postfix": Lazy(
        "clublist.cli.postfix:postfix",
        "Print the lines Postfix needs in front of this club, or check Postfix against them.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, Lazy], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *sorted(self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, _, attribute = self.lazy[cmd_name].target.partition(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands from their summaries, without importing them."""
        rows = [(name, lazy.summary) for name, lazy in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        """Errors become one line and exit status 1; ``--debug`` shows the traceback instead."""
        try:
            return super().invoke(ctx)
        except ClublistError as exc:
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            from clublist.cli.errors import explain

            state = ctx.obj.state_path if isinstance(ctx.obj, App) else Path("the state database")
            raise click.ClickException(explain(exc, state)) from None


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "directory",
    envvar="CLUBLIST_DIR",
    default="lists.d",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The club's lists.d directory (env CLUBLIST_DIR).",
)
@click.option(
    "--state",
    "state",
    envvar="CLUBLIST_STATE",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The state database (env CLUBLIST_STATE) [default: var/clublist.sqlite3 beside lists.d].",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
@click.version_option(package_name="clublist")
@click.pass_context
def main(ctx: click.Context, directory: Path, state: Path | None, debug: bool) -> None:
    """Run a club's mailing lists from the command line.

    Members and lists live as TOML files in lists.d; `clublist run` takes
    mail in and delivers it.

    Example: clublist member add anna@example.org --name Anna --list youth
    """
    if ctx.obj is None:
        ctx.obj = App(directory=directory, state_path=state or default_state_path(directory))
