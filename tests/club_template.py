"""A club built once per test module and copied for each test.

Building lists.d through the actions costs a locked, fsynced TOML write per list and member,
often more than the test itself; a module builds its club once (``tmp_path_factory``) and
overrides conftest's ``club_dir`` with :func:`copy_club`, so ``store`` and ``cli`` use the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.club.store import Store
from clublist.state import db as state


def build_club(root: Path, state_name: str) -> Store:
    """root/lists.d as conftest's ``club_dir`` makes it (myclub.org, loopback trusted, the list
    youth) and a migrated state database root/var/*state_name*."""
    directory = root / "lists.d"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(directory)
    config_set(store, Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8", "::1"])
    list_create(store, Actor.shell(), "youth", prefix="[Youth]")
    state.Writer(root / "var" / state_name).close()
    return store


def copy_club(template: Path, tmp_path: Path) -> Path:
    """The test's own lists.d and var/, copied from *template*; the copy's lists.d."""
    shutil.copytree(template / "var", tmp_path / "var")
    return Path(shutil.copytree(template / "lists.d", tmp_path / "lists.d"))
