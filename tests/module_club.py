"""A club with members, built once per test module and copied for each test.

Adding lists and members through the actions costs a locked, fsynced TOML write each, often
more than the test itself; a module builds its club once from conftest's ``club_template``
and overrides conftest's ``club_dir`` with :func:`copy_club`, so ``store`` and ``cli`` use
the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clublist.club.store import Store
from clublist.state import db as state


def start_club(template: Path, root: Path, state_name: str) -> Store:
    """root/lists.d, a copy of conftest's *template*, and a migrated state database root/var/*state_name*."""
    shutil.copytree(template, root / "lists.d", copy_function=shutil.copy)
    state.Writer(root / "var" / state_name).close()
    return Store(root / "lists.d")


def copy_club(built: Path, tmp_path: Path) -> Path:
    """The test's own lists.d and var/, copied (fresh files, fresh times) from *built*; the lists.d."""
    shutil.copytree(built / "var", tmp_path / "var", copy_function=shutil.copy)
    return Path(shutil.copytree(built / "lists.d", tmp_path / "lists.d", copy_function=shutil.copy))
