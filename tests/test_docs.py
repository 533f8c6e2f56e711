"""The man page and shell completions are generated from the CLI and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_man_page_and_completions_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gendocs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_man_page_names_every_command() -> None:
    page = (ROOT / "man" / "clublist.1").read_text()
    for words in ("member add", "member import", "list create", "config set"):
        assert f'.SS "clublist {words}' in page


def test_help_summaries_match_the_commands() -> None:
    """``clublist --help`` prints kept summaries so it imports nothing; they must not drift."""
    import click

    from clublist.cli import COMMANDS, main

    context = click.Context(main)
    for name, lazy in COMMANDS.items():
        command = main.get_command(context, name)
        assert command is not None
        assert lazy.summary == command.get_short_help_str(limit=200), name


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys\nfrom clublist.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('clublist.cli.') and m != 'clublist.cli.app'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
