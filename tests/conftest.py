"""Fixtures that build a real club in a temporary directory and run the real CLI."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import clublist
from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.cli import main
from clublist.club.store import Store

CLUBLIST = str(Path(sys.executable).with_name("clublist"))


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile clublist once, as an install does.

    Where PYTHONDONTWRITEBYTECODE is set, each daemon and CLI process a test starts would
    compile every module it imports again (about 0.2 s of CPU each); the test workers too.
    """
    if not hasattr(config, "workerinput"):  # the controller, before the workers start
        compileall.compile_dir(Path(clublist.__file__).parent, quiet=1)


@pytest.fixture(scope="session")
def club_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The club every test starts from, built once per test process by the real actions."""
    directory = tmp_path_factory.mktemp("template") / "lists.d"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    config_set(Store(directory), Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8", "::1"])
    list_create(Store(directory), Actor.shell(), "youth", prefix="[Youth]")
    return directory


@pytest.fixture
def club_dir(tmp_path: Path, club_template: Path) -> Path:
    """An initialised lists.d for myclub.org with the list youth and no members.

    Tests post from 127.0.0.1 without SPF or DKIM, so loopback is a trusted network here
    (posts count as authenticated); tests of sender authentication set it back to [].
    A copy of one template (fresh files, fresh times), so each test owns its club.
    """
    directory = tmp_path / "lists.d"
    shutil.copytree(club_template, directory, copy_function=shutil.copy)
    return directory


@pytest.fixture
def store(club_dir: Path) -> Store:
    return Store(club_dir)


Runner = Callable[..., "Ran"]


@dataclass(frozen=True)
class Ran:
    """What one ``clublist`` command did: the fields of subprocess.CompletedProcess the tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli_runner(club_dir: Path) -> Runner:
    """Run ``clublist`` in this process (click's CliRunner) on *club_dir*.

    The command goes through the same group, error handling and exit codes as the
    console script; only the interpreter start is saved. Tests whose point is the
    process boundary (parallel writers, signals, the daemon) use ``cli_process``.
    An unexpected exception is not caught: it fails the test, as a traceback would.
    """

    def run(*args: str, input: str | None = None, check: bool = True) -> Ran:
        env = {"CLUBLIST_DIR": str(club_dir), "NO_COLOR": "1"}
        outcome = CliRunner().invoke(
            main, list(args), input=input, env=env, prog_name="clublist", catch_exceptions=False
        )
        result = Ran(list(args), outcome.exit_code, outcome.stdout, outcome.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"clublist {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run


@pytest.fixture
def cli(club_dir: Path) -> Runner:
    """The CLI in this process on the test's own lists.d (:func:`cli_runner`)."""
    return cli_runner(club_dir)


@pytest.fixture
def cli_process(club_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``clublist`` console script as a process on the fixture's lists.d."""

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLUBLIST_DIR": str(club_dir), "NO_COLOR": "1"}
        result = subprocess.run(
            [CLUBLIST, *args], input=input, capture_output=True, text=True, env=env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"clublist {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run
