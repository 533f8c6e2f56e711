"""Moderation by mail: owners answer hold notices through a real ``clublist run``; held posts expire."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon import DaemonProcess
from mta import RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.cron import run_due
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.club.store import Store
from clublist.mail.moderation import hold
from clublist.state import db


class Club:
    """A daemon with the list youth (owner tom; ben is moderated) and a sink for what it sends."""

    def __init__(self, store: Store, daemon: DaemonProcess, sink: RemoteMTA, state: Path) -> None:
        self.store, self.daemon, self.sink, self.state = store, daemon, sink, state
        self.sent = 0

    def send(self, sender: str, to: str, subject: str, body: str, headers: str = "") -> str:
        self.sent += 1
        message_id = f"<t{self.sent}@example.org>"
        head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        text = f"{head}{headers}\r\n{body}"
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=30) as client:
            client.sendmail(sender, [to], text.encode())
        return message_id

    def wait(self, predicate: object) -> Transaction:
        def found(sink: RemoteMTA) -> Transaction | None:
            return next((t for t in sink.transactions if predicate(t)), None)  # type: ignore[operator]

        assert self.sink.wait_for(lambda s: found(s) is not None), "nothing arrived"
        result = found(self.sink)
        assert result is not None
        return result

    def reply_to(self, message_id: str) -> str:
        reply = self.wait(lambda t: t.message["In-Reply-To"] == message_id)
        return reply.message.get_content()

    def held_ids(self) -> list[int]:
        conn = db.connect(self.state)
        try:
            return [row[0] for row in conn.execute("SELECT id FROM held ORDER BY id")]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    directory = tmp_path_factory.mktemp("moderation") / "lists.d"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(directory)
    admin = Actor.shell()
    # The test's mail comes from loopback: count it as authenticated (conftest's club does the same).
    config_set(store, admin, "listen.trusted_networks", ["127.0.0.0/8", "::1"])
    list_create(store, admin, "youth", prefix="[Youth]", owners=["tom@example.org"])
    for email, name in [("anna@example.org", "Anna"), ("ben@example.org", "Ben"), ("mal@example.org", "Mal")]:
        member_add(store, admin, email, name, ("youth",))
    member_add(store, admin, "tom@example.org", "Tom", ("youth",))
    member_set(store, admin, "ben@example.org", MemberChanges(moderated=True))
    state = directory.parent / "var" / "state.sqlite3"
    with (
        RemoteMTA() as sink,
        DaemonProcess(directory, state, smarthost=f"127.0.0.1:{sink.port}") as daemon,
    ):
        yield Club(store, daemon, sink, state)


def hold_notice(club: Club, subject: str) -> Transaction:
    return club.wait(lambda t: t.rcpt_tos == ["tom@example.org"] and subject in str(t.message["Subject"]))


def test_an_owner_approves_by_reply_and_others_cannot(club: Club) -> None:
    club.send("ben@example.org", "youth@myclub.org", "Training moved", "To 18:00.\r\n")
    notice = hold_notice(club, "Training moved")
    message = notice.message
    assert message["Reply-To"] == "youth-request@myclub.org"
    assert str(message["Message-ID"]).startswith("<held-")
    assert "ben@example.org is moderated" in message.get_content()
    (held_id,) = club.held_ids()
    reply_headers = f"In-Reply-To: {message['Message-ID']}\r\nReferences: {message['Message-ID']}\r\n"
    subject = f"Re: {message['Subject']}"

    # Mal is a member, but no owner: nothing changes.
    asked = club.send("mal@example.org", "youth-request@myclub.org", subject, "approve\r\n", reply_headers)
    assert "Nothing was done" in club.reply_to(asked)
    # Tom forged from an address the notice did not go to changes nothing either.
    forged = club.send("anna@example.org", "youth-request@myclub.org", subject, "approve\r\n", reply_headers)
    assert "Nothing was done" in club.reply_to(forged)
    assert club.held_ids() == [held_id]

    answer = "approve\r\n\r\n> A post to youth@myclub.org is waiting\r\n"
    approved = club.send("tom@example.org", "youth-request@myclub.org", subject, answer, reply_headers)
    assert f"approved held post {held_id}" in club.reply_to(approved)
    assert club.held_ids() == []
    post = club.wait(lambda t: t.message["Subject"] == "[Youth] Training moved")
    again = club.send("tom@example.org", "youth-request@myclub.org", subject, "approve\r\n", reply_headers)
    assert "no longer held" in club.reply_to(again)
    copies = [t for t in club.sink.transactions if t.message["Subject"] == "[Youth] Training moved"]
    delivered = sorted(r for t in copies for r in t.rcpt_tos)
    assert delivered == sorted(set(delivered)) and "anna@example.org" in delivered
    assert post.mail_from.startswith("bounces")


def test_discard_by_reply_tells_nobody(club: Club) -> None:
    club.send("ben@example.org", "youth@myclub.org", "Cheap watches", "Buy now.\r\n")
    message = hold_notice(club, "Cheap watches").message
    token = str(message["Subject"]).rsplit("[held ", 1)[1].rstrip("]")
    # No In-Reply-To this time: the token in the Subject is enough.
    subject = f"AW: Held for youth: Cheap watches [held {token}]"
    discarded = club.send("tom@example.org", "youth-request@myclub.org", subject, "discard\r\n")
    assert "discarded held post" in club.reply_to(discarded)
    assert club.held_ids() == []
    club.send("anna@example.org", "bot@myclub.org", "lists", "lists\r\n")  # a marker: mail after it
    club.wait(lambda t: t.rcpt_tos == ["anna@example.org"] and t.message["Subject"] == "Re: lists")
    about_it = [t for t in club.sink.transactions if "Cheap watches" in str(t.message["Subject"])]
    # The hold notice and the bot's answer went to tom; the author heard nothing.
    assert [t.rcpt_tos for t in about_it] == [["tom@example.org"], ["tom@example.org"]]


def test_held_post_expires_with_a_notice(tmp_path: Path, store: Store) -> None:
    member_add(store, Actor.shell(), "ben@example.org", "Ben", ("youth",))
    club_now = store.load()
    conn = db.connect(tmp_path / "state.sqlite3")
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    with db.transaction(conn):
        hold(
            conn,
            club_now,
            club_now.lists["youth"],
            sender="ben@example.org",
            author="ben@example.org",
            subject="Old news",
            reason="moderated",
            content=b"Subject: Old news\r\n\r\nhi\r\n",
            now=start.timestamp(),
        )
    conn.execute("DELETE FROM messages")  # the hold notice
    early = run_due(store, conn, Actor.shell(), now=start + timedelta(days=29))
    assert early.expired_held == 0 and conn.execute("SELECT COUNT(*) FROM held").fetchone()[0] == 1
    late = run_due(store, conn, Actor.shell(), now=start + timedelta(days=30, minutes=1))
    assert late.expired_held == 1 and conn.execute("SELECT COUNT(*) FROM held").fetchone()[0] == 0
    ((content,),) = conn.execute("SELECT content FROM messages").fetchall()
    ((recipient,),) = conn.execute("SELECT recipient FROM deliveries").fetchall()
    assert recipient == "ben@example.org"
    text = bytes(content).decode()
    assert "Subject: Not posted: Old news" in text and "waited 30 days" in text
    conn.close()


def test_held_commands_take_several_ids_or_all(tmp_path: Path, store: Store) -> None:
    from click.testing import CliRunner

    from clublist.cli import main

    member_add(store, Actor.shell(), "ben@example.org", "Ben", ("youth",))
    loaded = store.load()
    state = tmp_path / "state.sqlite3"
    conn = db.connect(state)
    with db.transaction(conn):
        for subject in ("one", "two", "three", "four"):
            hold(
                conn,
                loaded,
                loaded.lists["youth"],
                sender="ben@example.org",
                author="ben@example.org",
                subject=subject,
                reason="moderated",
                content=f"From: ben@example.org\r\nSubject: {subject}\r\n\r\nhi\r\n".encode(),
                now=1.8e9,
            )
    conn.execute("DELETE FROM messages")

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(main, ["--dir", str(store.directory), "--state", str(state), *args])
        assert result.exit_code == code, result.output
        return result.output

    assert "no held post 9" in run("held", "discard", "1", "9", code=1)
    assert "name the held posts' IDs, or --all" in run("held", "discard", code=1)
    assert run("held", "discard", "1", "2") == "discarded held post 1\ndiscarded held post 2\n"
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    out = run("held", "reject", "--all", "--reason", "off topic")
    assert out == "rejected held post 3; told ben@example.org\nrejected held post 4; told ben@example.org\n"
    notices = [bytes(r[0]).decode() for r in conn.execute("SELECT content FROM messages")]
    assert len(notices) == 2 and all("Reason: off topic" in n for n in notices)
    assert run("held", "approve", "--all") == "no held posts\n"
    conn.close()


def test_nonmember_hold_takes_a_strangers_post_for_the_owners(club: Club) -> None:
    from clublist.actions.lists import list_set

    mark = len(club.daemon.lines)
    list_set(club.store, Actor.shell(), "youth", "nonmember", "hold")
    club.daemon.wait_for_log(lambda line: "reloaded lists.d" in line, start=mark)
    with smtplib.SMTP("127.0.0.1", club.daemon.port, timeout=30) as client:
        client.ehlo()
        client.mail("parent@example.net")
        assert client.rcpt("nobody@myclub.org")[0] == 550  # unknown addresses stay refused
        assert client.rcpt("youth@myclub.org")[0] == 250
        head = "From: parent@example.net\r\nTo: youth@myclub.org\r\nSubject: Lift on Saturday\r\n"
        code, text = client.data(f"{head}Message-ID: <p1@example.net>\r\n\r\nWho needs one?\r\n".encode())
    assert code == 250 and b"held for approval" in text
    notice = hold_notice(club, "Lift on Saturday").message
    assert "nonmember = hold" in notice.get_content()
