"""Settings stay inside sane bounds wherever they enter, and reports never hide a broken state."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from clublist.actions import Actor
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.cli import main
from clublist.club.store import Store
from clublist.daemon import Daemon, Overrides
from clublist.state import db as state


def clublist(club_dir: Path, *args: str, state: Path | None = None) -> tuple[int, str]:
    options = ["--dir", str(club_dir)] + (["--state", str(state)] if state else [])
    result = CliRunner().invoke(main, [*options, *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("listen.timeout", "0", "at least 1"),
        ("listen.max_recipients", "0", "at least 1"),
        ("listen.max_connections", "0", "at least 1"),
        ("listen.port", "99999", "between 1 and 65535"),
        ("delivery.dns_port", "0", "between 1 and 65535"),
        ("retry.schedule", "300,0", "at least 1"),
        ("retry.give_up_after", "0", "at least 1"),
        ("delivery.smarthost", "relay.example.net:0", "between 1 and 65535"),
        ("delivery.smarthost", "relay example", "HOST:PORT"),
    ],
)
def test_config_set_refuses_values_out_of_bounds_naming_the_bound(
    club_dir: Path, key: str, value: str, bound: str
) -> None:
    before = (club_dir / "club.toml").read_text()
    code, output = clublist(club_dir, "config", "set", key, value)
    assert code == 1
    assert key in output and bound in output
    assert (club_dir / "club.toml").read_text() == before


def test_config_set_takes_values_at_the_bounds(club_dir: Path) -> None:
    assert clublist(club_dir, "config", "set", "listen.port", "65535")[0] == 0
    assert clublist(club_dir, "config", "set", "listen.timeout", "1")[0] == 0
    assert clublist(club_dir, "config", "set", "delivery.smarthost", "relay.example.net:587")[0] == 0
    assert clublist(club_dir, "config", "set", "posting.daily_limit", "0")[0] == 0


@pytest.fixture
def daemon(club_dir: Path, tmp_path: Path) -> Iterator[Daemon]:
    """An in-process ``clublist run`` on an ephemeral loopback port."""
    ready = threading.Event()
    daemon = Daemon(
        club_dir,
        tmp_path / "var" / "state.sqlite3",
        Overrides(listen=("127.0.0.1", 0), smarthost="127.0.0.1:9"),
        on_ready=lambda d: ready.set(),
    )
    thread = threading.Thread(target=asyncio.run, args=(daemon.serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        yield daemon
    finally:
        daemon.loop.call_soon_threadsafe(daemon.request_exit)
        thread.join(60)
    assert not thread.is_alive()


def reload(daemon: Daemon) -> None:
    """Run the daemon's reload on its own loop and wait for it."""
    asyncio.run_coroutine_threadsafe(daemon.reload(), daemon.loop).result(30)


def test_a_hand_edited_value_out_of_bounds_is_refused_on_reload(
    daemon: Daemon, club_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = club_dir / "club.toml"
    site.write_text(site.read_text().replace("[listen]\n", "[listen]\ntimeout = 0\n", 1))
    with caplog.at_level(logging.ERROR, logger="clublist"):
        reload(daemon)
    assert daemon.club.site.listen.timeout == 300
    assert any(
        "not reloaded" in r.message and "listen.timeout must be at least 1" in r.message
        for r in caplog.records
    )
    site.write_text(site.read_text().replace("timeout = 0\n", "timeout = 30\n", 1))
    reload(daemon)
    assert daemon.club.site.listen.timeout == 30


def test_reload_logs_the_warnings_start_up_logs(
    daemon: Daemon, club_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    members = club_dir / "members.toml"
    members.write_text(members.read_text() + '\n[[member]]\nemail = "anna@example.org"\nlists = ["yuoth"]\n')
    with caplog.at_level(logging.WARNING, logger="clublist"):
        reload(daemon)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "anna@example.org is on list 'yuoth', which has no file yuoth.toml" in warning
    assert "clublist list create yuoth" in warning


def test_owner_who_gets_no_mail_is_a_warning(store: Store) -> None:
    admin = Actor.shell()
    list_create(store, admin, "trainer", owners=["tom@example.org"])
    member_add(store, admin, "tom@example.org", "Tom", ("trainer",))
    member_set(store, admin, "tom@example.org", MemberChanges(enable=False))
    (advice,) = store.load().warnings
    assert "owner tom@example.org has delivery disabled" in advice.detail
    assert advice.fix.startswith("'clublist member set tom@example.org --enable'")


def test_status_on_a_corrupt_state_database_names_the_file_and_fails(club_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "var" / "state.sqlite3"
    state.parent.mkdir()
    state.write_bytes(b"this is not a database, it only sits where one should be" * 100)
    code, output = clublist(club_dir, "status", state=state)
    assert code == 1
    assert str(state) in output and "file is not a database" in output
    assert "not created yet" not in output


def test_status_on_a_damaged_state_database_fails(club_dir: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "var" / "state.sqlite3"
    state.connect(state_path).close()
    data = bytearray(state_path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # the header survives, the schema and tables do not
    state_path.write_bytes(bytes(data))
    code, output = clublist(club_dir, "status", state=state_path)
    assert code == 1 and str(state_path) in output and "malformed" in output


def test_status_before_the_first_run_still_says_not_created_yet(club_dir: Path, tmp_path: Path) -> None:
    code, output = clublist(club_dir, "status", state=tmp_path / "var" / "state.sqlite3")
    assert code == 0 and "not created yet" in output
