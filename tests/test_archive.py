"""Archives through a real ``clublist run``: posts are kept, listed, exported, fetched by mail, pruned.

One daemon and one SMTP sink for the module; the CLI runs in-process (CliRunner) on the same
lists.d and state database, with its own clock where time matters.
"""

from __future__ import annotations

import asyncio
import json
import mailbox
import signal
import smtplib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from daemon import DaemonProcess
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.cli import main
from clublist.cli.app import App
from clublist.club.store import Store
from clublist.mail import archive
from clublist.state import db as state_db

SUBJECTS = ["Training moved", "Shoes for the match", "Summer camp"]


@dataclass
class Club:
    directory: Path
    state: Path
    sink: RemoteMTA
    daemon: DaemonProcess

    def cli(self, *args: str, clock: float | None = None) -> str:
        app = App(self.directory, self.state, clock=(lambda: clock) if clock is not None else time.time)
        result = CliRunner().invoke(main, list(args), obj=app, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def send(self, sender: str, to: str, subject: str, text: str = "Hello.\n") -> None:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = f"<{abs(hash((sender, subject, text)))}@example.org>"
        message.set_content(text)
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=30) as client:
            assert client.send_message(message, sender, [to]) == {}

    def received(self, address: str) -> list[EmailMessage]:
        """What the sink took for *address* (wait_for holds the sink's lock while it asks)."""
        return [t.message for t in list(self.sink.transactions) if address in t.rcpt_tos]


def make_club(directory: Path) -> None:
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(directory)
    config_set(store, Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8"])  # posts from here count
    list_create(store, Actor.shell(), "youth", prefix="[Youth]")
    list_create(store, Actor.shell(), "trainer", archive_days=7)
    for address, lists in (
        ("anna@example.org", ("youth",)),
        ("dora@example.org", ("youth",)),
        ("carl@example.org", ("trainer",)),
        ("ben@example.org", ("youth",)),
    ):
        member_add(store, Actor.shell(), address, address.partition("@")[0].title(), lists)
    member_set(store, Actor.shell(), "ben@example.org", MemberChanges(digest_list="youth", digest=True))
    # The digest fell due two minutes ago: cron (with the real clock, which the daemon also
    # keeps) sends it now; later days come from an injected clock.
    due = datetime.now(ZoneInfo("Europe/Berlin")) - timedelta(minutes=2)
    with (directory / "club.toml").open("a") as toml:
        toml.write("\n[archive]\nget_per_request = 3\nget_per_day = 4\n")
        toml.write(f'\n[digest]\ntime = "{due:%H:%M}"\n')


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    directory = tmp_path_factory.mktemp("archive") / "lists.d"
    make_club(directory)
    state = directory.parent / "var" / "clublist.sqlite3"
    with RemoteMTA() as sink, DaemonProcess(directory, state, smarthost=f"127.0.0.1:{sink.port}") as daemon:
        found = Club(directory, state, sink, daemon)
        for subject in SUBJECTS:
            found.send("anna@example.org", "youth@myclub.org", subject)
        assert sink.wait_for(lambda s: len(found.received("dora@example.org")) == 3)
        yield found


def test_three_posts_are_listed_with_numbers_and_subjects(club: Club) -> None:
    rows = json.loads(club.cli("archive", "ls", "youth", "--json"))
    assert [(r["number"], r["subject"]) for r in rows] == list(enumerate(SUBJECTS, 1))
    assert {r["author"] for r in rows} == {"anna@example.org"}
    searched = json.loads(club.cli("archive", "ls", "youth", "--search", "camp", "--json"))
    assert [r["number"] for r in searched] == [3]


def eventually(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether *predicate* comes to hold within *timeout* (checked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


def test_each_post_is_a_maildir_entry_as_distributed(club: Club) -> None:
    folder = club.state.parent / "archive" / "youth"
    # Filed once the posts pause (the daemon's ARCHIVE_QUIET): new/ is made then.
    assert eventually(lambda: (folder / "new").is_dir() and len(list((folder / "new").iterdir())) == 3)
    box = mailbox.Maildir(folder, create=False)
    archived = sorted(box, key=lambda m: str(m["Subject"]))
    assert [str(m["Subject"]) for m in archived] == sorted(f"[Youth] {s}" for s in SUBJECTS)
    # Decorated (List-Id) but without what the worker adds per recipient or at sending.
    assert all(m["List-Id"] and not m["DKIM-Signature"] for m in archived)


def test_export_writes_an_mbox_with_the_same_posts(club: Club, tmp_path: Path) -> None:
    target = tmp_path / "youth.mbox"
    assert club.cli("archive", "export", "youth", str(target)).startswith("exported 3 posts")
    exported = list(mailbox.mbox(target))
    delivered = club.received("dora@example.org")
    assert [m["Message-ID"] for m in exported] == [m["Message-ID"] for m in delivered]
    assert [m["Subject"] for m in exported] == [f"[Youth] {s}" for s in SUBJECTS]


def test_show_prints_one_post(club: Club) -> None:
    assert "Subject: [Youth] Shoes for the match" in club.cli("archive", "show", "youth", "2")


def _bot_reply(club: Club, address: str, count: int) -> EmailMessage:
    assert club.sink.wait_for(
        lambda s: len([m for m in club.received(address) if m["Auto-Submitted"]]) >= count
    )
    return [m for m in club.received(address) if m["Auto-Submitted"]][count - 1]


def test_a_member_fetches_the_index_and_a_post_by_mail(club: Club) -> None:
    club.send("anna@example.org", "bot@myclub.org", "Request", "index youth\nget youth 2\n")
    reply = _bot_reply(club, "anna@example.org", 1)
    text = reply.get_body(("plain",)).get_content()
    for number, subject in enumerate(SUBJECTS, 1):
        assert f"{number}" in text and subject in text
    attached = [part for part in reply.iter_attachments() if part.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert attached[0].get_content()["Subject"] == "[Youth] Shoes for the match"


def test_a_club_member_not_on_the_list_is_refused(club: Club) -> None:
    club.send("carl@example.org", "bot@myclub.org", "Request", "index youth\nget youth 1\n")
    reply = _bot_reply(club, "carl@example.org", 1)
    text = reply.get_body(("plain",)).get_content()
    assert text.count("only members of youth may read its archive") == 2
    assert not list(reply.iter_attachments())


def test_more_than_the_daily_cap_is_refused_politely(club: Club) -> None:
    lines = "get youth 1-4\nget youth 1-3\nget youth 1-3\n"
    club.send("dora@example.org", "bot@myclub.org", "Request", lines)
    reply = _bot_reply(club, "dora@example.org", 1)
    text = reply.get_body(("plain",)).get_content()
    assert "at most 3 posts per request" in text
    assert "at most 4 archived posts a day" in text and "please ask again tomorrow" in text
    assert len(list(reply.iter_attachments())) == 3


def test_retention_prunes_entries_older_than_archive_days(club: Club) -> None:
    club.send("carl@example.org", "trainer@myclub.org", "Old news")
    assert club.sink.wait_for(lambda s: len(club.received("carl@example.org")) == 1)
    filed = club.state.parent / "archive" / "trainer" / "new"
    assert eventually(lambda: filed.is_dir() and len(list(filed.iterdir())) == 1)  # its file goes too
    now = time.time()
    kept = json.loads(club.cli("archive", "prune", "--json", clock=now + 6 * 86400))
    assert kept["record"] == {"trainer": 0}
    assert len(json.loads(club.cli("archive", "ls", "trainer", "--json"))) == 1
    result = json.loads(club.cli("archive", "prune", "--json", clock=now + 8 * 86400))
    assert result["record"] == {"trainer": 1}
    assert json.loads(club.cli("archive", "ls", "trainer", "--json")) == []
    assert not list(mailbox.Maildir(club.state.parent / "archive" / "trainer", create=False).keys())
    assert len(json.loads(club.cli("archive", "ls", "youth", "--json"))) == 3  # youth keeps everything


def test_a_file_written_for_an_entry_pruned_meanwhile_is_removed(tmp_path: Path) -> None:
    """The filer reads an entry, prune removes its row and sweeps, then the file lands: it goes."""
    state_path = tmp_path / "var" / "clublist.sqlite3"
    conn = state_db.connect(state_path)
    root = archive.root_of(state_path)
    with state_db.transaction(conn):
        archive.record(conn, "youth", b"Subject: Old\r\n\r\nGone.\r\n", author="a", subject="Old", now=1.0)
        archive.record(conn, "youth", b"Subject: New\r\n\r\nKept.\r\n", author="a", subject="New", now=9.0)
    pending = archive.unfiled(conn)
    assert archive.prune(conn, root, "youth", before=5.0) == 1
    filed = archive.write_files(root, pending)
    with state_db.transaction(conn):
        archive.mark_filed(conn, root, filed)
    assert sorted(archive.maildir(root, "youth").keys()) == [archive.maildir_key(2)]
    assert archive.unfiled(conn) == []
    conn.close()


def test_sigkill_right_after_250_ends_delivered_and_archived(tmp_path: Path) -> None:
    directory = tmp_path / "lists.d"
    make_club(directory)
    state = directory.parent / "var" / "clublist.sqlite3"
    with RemoteMTA() as sink:
        smarthost = f"127.0.0.1:{sink.port}"
        daemon = DaemonProcess(directory, state, smarthost=smarthost).start()
        club = Club(directory, state, sink, daemon)
        club.send("anna@example.org", "youth@myclub.org", "Killed at once")
        daemon.stop(signal.SIGKILL)
        with DaemonProcess(directory, state, smarthost=smarthost):
            assert sink.wait_for(lambda s: len(club.received("dora@example.org")) == 1)
        box = mailbox.Maildir(state.parent / "archive" / "youth", create=False)
        assert [str(m["Subject"]) for m in box] == ["[Youth] Killed at once"]
        assert json.loads(club.cli("archive", "ls", "youth", "--json"))[0]["number"] == 1


def test_the_digest_choice_round_trips_through_export_and_sync(tmp_path: Path) -> None:
    directory = tmp_path / "lists.d"
    make_club(directory)
    app = App(directory, tmp_path / "state.sqlite3")
    runner = CliRunner()
    result = runner.invoke(
        main, ["member", "set", "anna@example.org", "--list", "youth", "--digest"], obj=app
    )
    assert result.exit_code == 0, result.output
    exported = runner.invoke(main, ["member", "export"], obj=app).output
    assert "anna@example.org,Anna,youth,,member,enabled,,,false,youth" in exported.splitlines()
    runner.invoke(main, ["member", "set", "anna@example.org", "--list", "youth", "--no-digest"], obj=app)
    assert Store(directory).load().member("anna@example.org").digest == ()
    synced = runner.invoke(main, ["member", "sync", "-", "--yes"], obj=app, input=exported)
    assert synced.exit_code == 0, synced.output
    assert Store(directory).load().member("anna@example.org").digest == ("youth",)


def test_a_digest_member_gets_one_digest_with_the_days_posts_and_no_copies(club: Club) -> None:
    assert club.received("ben@example.org") == []  # none of the three posts came one by one
    at = time.time()
    runs = [club.cli("remind", clock=at) for _ in range(3)]
    assert runs[0].startswith("queued the digest of youth (3 posts) for 1 members as ")
    assert runs[1] == runs[2] == ""
    assert club.sink.wait_for(lambda s: len(club.received("ben@example.org")) == 1)
    digest = club.received("ben@example.org")[0]
    assert digest.get_content_type() == "multipart/digest"
    contents, *posts = digest.iter_parts()
    assert contents.get_content_type() == "text/plain"
    text = contents.get_content()
    assert "Today's Topics:" in text and all(subject in text for subject in SUBJECTS)
    assert [p.get_content_type() for p in posts] == ["message/rfc822"] * 3
    assert [p.get_content()["Subject"] for p in posts] == [f"[Youth] {s}" for s in SUBJECTS]
    # The next day had no posts: nothing is sent, however often cron runs.
    assert club.cli("remind", clock=at + 86400) == ""
    assert club.cli("digest", "send", "--list", "youth", clock=at + 86400 + 60).startswith(
        "youth: no digest (no posts since the last digest)"
    )
    with sqlite3.connect(club.state) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages WHERE kind = 'digest'").fetchone() == (1,)
    assert len(club.received("ben@example.org")) == 1


def test_digest_and_nodigest_by_mail_are_member_set_lines() -> None:
    from clublist.bot import translate

    zone = ZoneInfo("Europe/Berlin")
    now = datetime.now(zone)
    assert translate(["digest", "youth"], "anna@example.org", None, now, zone) == [
        "member", "set", "anna@example.org", "--list", "youth", "--digest",
    ]  # fmt: skip
    assert translate(["nodigest"], "anna@example.org", "youth", now, zone)[-1] == "--no-digest"
    assert translate(["index", "youth", "5"], "anna@example.org", None, now, zone) == [
        "archive", "ls", "youth", "--last", "5",
    ]  # fmt: skip


def unfiled_entries(state_path: Path, count: int, list_name: str = "youth") -> sqlite3.Connection:
    """*count* archive entries committed with their bytes, as the listener leaves them."""
    conn = state_db.connect(state_path)
    with state_db.transaction(conn):
        for i in range(count):
            content = f"Subject: Post {i}\r\n\r\nHello.\r\n".encode()
            archive.record(conn, list_name, content, author="anna@example.org", subject=f"Post {i}", now=1.0)
    return conn


def test_a_batch_is_filed_per_list_and_an_entry_a_reader_moved_is_left(tmp_path: Path) -> None:
    state_path = tmp_path / "var" / "clublist.sqlite3"
    conn = unfiled_entries(state_path, 3)
    with state_db.transaction(conn):
        archive.record(
            conn, "trainer", b"Subject: T\r\n\r\nHi.\r\n", author="a@example.org", subject="T", now=1.0
        )
    root = archive.root_of(state_path)
    box = archive.maildir(root, "youth")
    (root / "youth" / "cur" / f"{archive.maildir_key(2)}:2,S").write_bytes(b"Subject: read\n\nRead.\n")
    filed = archive.write_files(root, archive.unfiled(conn))
    assert sorted(filed) == [("trainer", 1), ("youth", 1), ("youth", 2), ("youth", 3)]
    assert sorted(box.keys()) == [archive.maildir_key(n) for n in (1, 2, 3)]
    assert box.get_bytes(archive.maildir_key(2)) == b"Subject: read\n\nRead.\n"  # not written again
    assert box.get_bytes(archive.maildir_key(3)) == b"Subject: Post 2\n\nHello.\n"
    assert archive.maildir(root, "trainer").get_bytes(archive.maildir_key(1)) == b"Subject: T\n\nHi.\n"
    conn.close()


def test_the_daemon_files_a_backlog_in_batches(
    club_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clublist import daemon as daemon_module

    state_path = tmp_path / "var" / "clublist.sqlite3"
    unfiled_entries(state_path, 5).close()
    monkeypatch.setattr(daemon_module, "ARCHIVE_BATCH", 2)
    batches: list[int] = []
    write_files = archive.write_files

    def counted(root: Path, entries: list[tuple[str, int, str, bytes]]) -> list[tuple[str, int]]:
        batches.append(len(entries))
        return write_files(root, entries)

    monkeypatch.setattr(archive, "write_files", counted)
    daemon = daemon_module.Daemon(club_dir, state_path)

    async def file_backlog() -> None:
        daemon.writer = state_db.Writer(state_path)
        try:
            await daemon.file_archive()
        finally:
            daemon.writer.close()

    asyncio.run(file_backlog())
    assert batches == [2, 2, 1]
    conn = state_db.connect(state_path)
    assert archive.unfiled(conn) == []
    conn.close()
    assert len(archive.maildir(archive.root_of(state_path), "youth").keys()) == 5
