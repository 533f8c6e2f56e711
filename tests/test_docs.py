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
