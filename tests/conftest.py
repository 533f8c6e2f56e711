"""Fixtures that build a real club in a temporary directory and run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.club.store import Store

CLUBLIST = str(Path(sys.executable).with_name("clublist"))


@pytest.fixture
def club_dir(tmp_path: Path) -> Path:
    """An initialised lists.d for myclub.org with the list youth and no members.

    Tests post from 127.0.0.1 without SPF or DKIM, so loopback is a trusted network here
    (posts count as authenticated); tests of sender authentication set it back to [].
    """
    directory = tmp_path / "lists.d"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    config_set(Store(directory), Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8", "::1"])
    list_create(Store(directory), Actor.shell(), "youth", prefix="[Youth]")
    return directory


@pytest.fixture
def store(club_dir: Path) -> Store:
    return Store(club_dir)


Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(club_dir: Path) -> Runner:
    """Run the installed ``clublist`` console script on the fixture's lists.d."""

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLUBLIST_DIR": str(club_dir), "NO_COLOR": "1"}
        result = subprocess.run(
            [CLUBLIST, *args], input=input, capture_output=True, text=True, env=env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"clublist {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run
