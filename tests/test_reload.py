"""A change to lists.d made while ``clublist run`` runs is in force when the command returns.

A real daemon subprocess and a loopback smarthost; the commands run in-process
(CliRunner) on the daemon's state, and each post follows its command with no
wait in between.  Reloads run one at a time, so a reading that began earlier
never replaces one that began later (an in-process daemon whose first reading stalls).
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from daemon import DaemonProcess
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.members import member_add, member_remove
from clublist.cli import main
from clublist.club.store import Store
from clublist.daemon import Daemon, Overrides


def post(daemon: DaemonProcess, message_id: str) -> None:
    text = (
        f"From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: Training {message_id}\r\n"
        f"Message-ID: <{message_id}@example.org>\r\n\r\nBring shoes.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        assert client.sendmail("anna@example.org", ["youth@myclub.org"], text) == {}


def recipients_of(sink: RemoteMTA, message_id: str) -> set[str]:
    return {
        rcpt.lower()
        for t in sink.transactions
        if t.message["Message-ID"] == f"<{message_id}@example.org>"
        for rcpt in t.rcpt_tos
    }


def test_the_next_post_follows_member_remove_and_add_at_once(club_dir: Path, tmp_path: Path) -> None:
    store = Store(club_dir)
    member_add(store, Actor.shell(), "anna@example.org", "Anna", ("youth",))
    member_add(store, Actor.shell(), "xavier@example.org", "Xavier", ("youth",))
    state = tmp_path / "var" / "state.sqlite3"

    def clublist(*args: str) -> None:
        result = CliRunner().invoke(main, ["--dir", str(club_dir), "--state", str(state), *args])
        assert result.exit_code == 0, result.output

    with RemoteMTA() as sink, DaemonProcess(club_dir, state, smarthost=f"127.0.0.1:{sink.port}") as daemon:
        clublist("member", "remove", "xavier@example.org", "--yes")
        post(daemon, "after-remove")
        clublist("member", "add", "yvonne@example.org", "--list", "youth")
        post(daemon, "after-add")
        # Each post leaves in one transaction: once anna has both, every recipient has.
        assert sink.wait_for(
            lambda s: all("anna@example.org" in recipients_of(s, m) for m in ("after-remove", "after-add"))
        )
    assert recipients_of(sink, "after-remove") == {"anna@example.org"}
    assert recipients_of(sink, "after-add") == {"anna@example.org", "yvonne@example.org"}


class SlowFirstReading(Daemon):
    """A daemon whose first reload reads lists.d and then stalls until the test lets it go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readings = 0
        self.first_read = threading.Event()
        self.go_on = threading.Event()
        self.reloads_done = 0
        self.second_done = threading.Event()

    def _read_lists_d(self) -> Any:
        self.readings += 1
        reading = super()._read_lists_d()
        if self.readings == 1:
            self.first_read.set()
            assert self.go_on.wait(30)
        return reading

    async def reload(self) -> None:
        await super().reload()
        self.reloads_done += 1
        if self.reloads_done == 2:
            self.second_done.set()


def test_an_older_reading_never_replaces_a_newer_one(club_dir: Path, tmp_path: Path) -> None:
    store = Store(club_dir)
    member_add(store, Actor.shell(), "anna@example.org", "Anna", ("youth",))
    member_add(store, Actor.shell(), "xavier@example.org", "Xavier", ("youth",))
    ready = threading.Event()
    daemon = SlowFirstReading(
        club_dir,
        tmp_path / "var" / "state.sqlite3",
        Overrides(listen=("127.0.0.1", 0), smarthost="127.0.0.1:9"),
        on_ready=lambda d: ready.set(),
    )
    thread = threading.Thread(target=asyncio.run, args=(daemon.serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        daemon.loop.call_soon_threadsafe(daemon.request_reload)
        assert daemon.first_read.wait(30)  # it has read xavier in, and stalls
        member_remove(store, Actor.shell(), "xavier@example.org")
        daemon.loop.call_soon_threadsafe(daemon.request_reload)  # arrives during the first reload
        daemon.go_on.set()
        assert daemon.second_done.wait(30)
        assert [m.email for m in daemon.club.members] == ["anna@example.org"]
        assert daemon.readings == 2
    finally:
        daemon.go_on.set()
        daemon.loop.call_soon_threadsafe(daemon.request_exit)
        thread.join(60)
    assert not thread.is_alive()
