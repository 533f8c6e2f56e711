"""Write man/clublist.1 and the shell completions from the click command tree.

Run ``python scripts/gendocs.py`` after changing a command; ``--check``
exits 1 when the files in the repository are stale (the test suite runs it).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import click
from click.shell_completion import BashComplete, FishComplete, ZshComplete

from clublist import __version__
from clublist.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMPLETERS = {"clublist.bash": BashComplete, "_clublist": ZshComplete, "clublist.fish": FishComplete}


def walk(command: click.Command, path: list[str], ctx: click.Context):
    """Yield (words, command, ctx) for every command below *command*, depth first."""
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, [*path, name], click.Context(sub, info_name=name, parent=ctx))


def roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def paragraphs(text: str | None) -> str:
    """A docstring as roff paragraphs (click keeps the indentation; man does not want it)."""
    blocks = [b.replace("\n", " ") for b in inspect.cleandoc(text or "").split("\n\n") if b.strip()]
    return "\n.PP\n".join(roff(b) for b in blocks)


def option_lines(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{roff(names)}\\fR", roff(help_text or "")]
    return out


def man_page() -> str:
    ctx = click.Context(main, info_name="clublist")
    lines = [
        f'.TH CLUBLIST 1 "" "clublist {__version__}" "User Commands"',
        ".SH NAME",
        "clublist \\- run a club's mailing lists from the command line",
        ".SH SYNOPSIS",
        ".B clublist",
        "[\\fB\\-\\-dir\\fR \\fIDIR\\fR] [\\fB\\-\\-state\\fR \\fIPATH\\fR]",
        "\\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        paragraphs(main.help),
        ".SH GLOBAL OPTIONS",
        *option_lines(main, ctx),
        ".SH COMMANDS",
    ]
    for words, command, sub_ctx in walk(main, [], ctx):
        if not words:
            continue
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        lines += [f'.SS "clublist {roff(" ".join(words))} {roff(usage)}"', paragraphs(command.help)]
        lines += option_lines(command, sub_ctx)
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B CLUBLIST_DIR",
        "The lists.d directory, as \\fB\\-\\-dir\\fR.",
        ".TP",
        ".B CLUBLIST_STATE",
        "The state database, as \\fB\\-\\-state\\fR.",
        ".SH EXIT STATUS",
        "0 when the command did what was asked, 1 when it failed (the message says why),",
        "2 for a usage error.",
        ".SH FILES",
        ".TP",
        ".I lists.d/club.toml, lists.d/members.toml, lists.d/LIST.toml, lists.d/reminders.toml",
        "What the club decided; hand-editable, comments are kept.",
        ".TP",
        ".I var/clublist.sqlite3",
        "The state database: queue, held posts, counters, bounces.",
    ]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines)) + "\n"


def completion(cls: type) -> str:
    return cls(main, {}, "clublist", "_CLUBLIST_COMPLETE").source()


def generated() -> dict[Path, str]:
    files = {ROOT / "man" / "clublist.1": man_page()}
    for name, cls in COMPLETERS.items():
        files[ROOT / "completions" / name] = completion(cls)
    return files


def main_script(argv: list[str]) -> int:
    stale = [path for path, text in generated().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python scripts/gendocs.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated().items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main_script(sys.argv[1:]))
