"""One ``clublist run`` for a whole test module, put back as it was before each test.

Starting a daemon costs more than most end-to-end tests' own work, so a module
may share one: :meth:`SharedDaemon.start` runs it on a club the module built,
and each test begins with :meth:`SharedDaemon.reset`.  That waits until the
queue has delivered what earlier tests sent, empties the sink, writes lists.d's
TOML files back as they were and has the daemon read them (confirmed, as every
CLI write is), and forgets what the state database remembers for the day or
the hour (posts counted against the limits, the bot's replies, the owners'
once-a-day alerts, posts held for the owners).  So no test sees what an
earlier one did, and any test also runs alone.

The daemon uses the default state database beside lists.d, so a CLI write in
a test reloads it and returns when the change is in force.  A test that edits
lists.d another way waits for the reload by its own ``membership: ...`` log
line: the next "reloaded lists.d" may still be the reset's.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon import DaemonProcess
from mta import RemoteMTA

from clublist.cli.app import default_state_path
from clublist.club.store import Store
from clublist.club.tomltext import atomic_write
from clublist.state.db import DaemonLock, connect
from clublist.state.queue import counts

# What the state database remembers that would make an earlier test's mail count in a later
# one: posts counted against the daily and hourly limits, the bot's replies an hour, the
# owners' notices sent once a day, and posts held for the owners.
REMEMBERED = ("post_counts", "recent_posts", "bot_replies", "owner_alerts", "held")
WAIT = 30.0  # seconds: every wait here has this deadline


def copy_club(template: Path, directory: Path) -> Store:
    """A club of one's own from conftest's ``club_template``, as its ``club_dir`` makes one."""
    shutil.copytree(template, directory, copy_function=shutil.copy)
    return Store(directory)


@dataclass
class SharedDaemon:
    """A running daemon on *club_dir* delivering to *sink*, and lists.d as the module built it."""

    club_dir: Path
    state: Path
    sink: RemoteMTA
    daemon: DaemonProcess
    baseline: dict[str, str]

    @classmethod
    def start(cls, club_dir: Path, sink: RemoteMTA) -> SharedDaemon:
        """Start the daemon on lists.d as it is now, which each :meth:`reset` brings back."""
        state = default_state_path(club_dir)
        baseline = {path.name: path.read_text() for path in club_dir.glob("*.toml")}
        daemon = DaemonProcess(club_dir, state, smarthost=f"127.0.0.1:{sink.port}").start()
        return cls(club_dir, state, sink, daemon, baseline)

    def stop(self) -> None:
        self.daemon.stop()

    @classmethod
    @contextlib.contextmanager
    def running(cls, club_dir: Path, sink: RemoteMTA) -> Iterator[SharedDaemon]:
        """:meth:`start`, and the daemon stopped when the module is done with it."""
        shared = cls.start(club_dir, sink)
        try:
            yield shared
        finally:
            shared.stop()

    def reset(self) -> None:
        """Everything as before the first test, but the daemon still running."""
        self._wait_until_delivered()
        with self.sink.lock:
            self.sink.transactions.clear()
            self.sink.delivered.clear()
            self.sink.received_count = 0
        if self._restore_lists_d():
            self.reload()
        conn = connect(self.state)
        try:
            for table in REMEMBERED:
                conn.execute(f"DELETE FROM {table}")
        finally:
            conn.close()

    def reload(self) -> None:
        """Have the daemon read lists.d now and wait until it has, as every CLI write does."""
        if not DaemonLock(self.state).reload(time.monotonic_ns(), timeout=WAIT):
            raise AssertionError("the daemon did not confirm a reload:\n" + "\n".join(self.daemon.lines))

    def _wait_until_delivered(self) -> None:
        conn = connect(self.state)
        try:
            deadline = time.monotonic() + WAIT
            while (left := counts(conn))["pending"] + left["inflight"] + left["deferred"]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the queue did not empty: {left}")
                time.sleep(0.01)  # the deadline bounds the wait; deliveries take milliseconds
        finally:
            conn.close()

    def _restore_lists_d(self) -> bool:
        """lists.d's TOML files as in :attr:`baseline`; whether anything had to change."""
        changed = False
        for path in self.club_dir.glob("*.toml"):
            if path.name not in self.baseline:
                path.unlink()
                changed = True
        for name, text in self.baseline.items():
            path = self.club_dir / name
            if not path.exists() or path.read_text() != text:
                atomic_write(path, text)
                changed = True
        return changed
