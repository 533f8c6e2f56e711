"""Faults of the outbound side, through one real ``clublist run``: it waits them out and charges nobody.

The daemon runs with ``CLUBLIST_BUSY_TIMEOUT=0.25`` (SQLite's wait for another connection's
write lock; its only other writer here is one short CLI transaction), so a lock held a second
or two already outlasts the busy timeout more than once; the
75-second lock with the default 30 s timeout is the ``slow`` test.  Disk full is real: the state
database lives on a 8 MB tmpfs that the test fills with a file (mounting needs root; without it
that test is skipped).  The smarthost is a loopback aiosmtpd whose answers each test switches.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import smtplib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLUBLIST
from daemon import DaemonProcess
from mta import Behaviour, RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli.run import JournalFormatter
from clublist.club.store import Store
from clublist.outbound import sender_refusals

MEMBERS = ("anna@example.org", "ben@example.org", "cleo@example.net")
ADMIN = "admin@myclub.org"


class Smarthost:
    """What the loopback smarthost answers, switched by the tests."""

    def __init__(self) -> None:
        self.defer_data = False
        self.mail_reply: str | None = None

    def mail(self, sender: str) -> str | None:
        return self.mail_reply if sender not in ("", "<>") else None  # notices from <> pass

    def data(self, rcpts: list[str]) -> str | None:
        return "451 4.3.0 try again later" if self.defer_data else None


@dataclass
class Rig:
    base: Path
    club_dir: Path
    state: Path
    daemon: DaemonProcess
    sink: RemoteMTA
    smarthost: Smarthost
    tmpfs: bool

    def post(self, tag: str) -> None:
        """A post from anna to youth, answered 250 (raises SMTPDataError otherwise)."""
        message = f"From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: {tag}\r\n"
        message += f"Message-ID: <{tag}@example.org>\r\n\r\nSee you there.\r\n"
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=60) as client:
            client.sendmail("anna@example.org", ["youth@myclub.org"], message)

    def delivered(self, tag: str) -> list[Transaction]:
        with self.sink.lock:
            return [t for t in self.sink.transactions if tag in str(t.message["Subject"])]

    def wait_delivered(self, tag: str, recipients: int = len(MEMBERS)) -> None:
        def done(mta: RemoteMTA) -> bool:
            return sum(len(t.rcpt_tos) for t in mta.transactions if tag in t.content.decode()) >= recipients

        assert self.sink.wait_for(done, 60), "\n".join(self.daemon.lines)

    def wait_log(self, text: str, times: int = 1, start: int = 0) -> None:
        """Until *text* has appeared in *times* log lines after index *start*."""
        for _ in range(times):
            line = self.daemon.wait_for_log(lambda line: text in line, timeout=60, start=start)
            start = self.daemon.lines.index(line, start) + 1

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.state, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()


def _mount_tmpfs(path: Path) -> bool:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True, check=False
    )
    return result.returncode == 0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("faults")
    club_dir = base / "lists.d"
    init_club(club_dir, "myclub.org", ADMIN, "My Club", "Europe/Berlin")
    store = Store(club_dir)
    list_create(store, Actor.shell(), "youth")
    for address in MEMBERS:
        member_add(store, Actor.shell(), address, lists=("youth",))
    config_set(store, Actor.shell(), "retry.schedule", [1])
    config_set(store, Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8"])  # posts from here count
    var = base / "var"
    var.mkdir()
    tmpfs = _mount_tmpfs(var)
    smarthost = Smarthost()
    try:
        with RemoteMTA(Behaviour(mail=smarthost.mail, data=smarthost.data)) as sink:
            with DaemonProcess(
                club_dir,
                var / "state.sqlite3",
                smarthost=f"127.0.0.1:{sink.port}",
                env={"CLUBLIST_BUSY_TIMEOUT": "0.25"},
            ) as daemon:
                yield Rig(base, club_dir, var / "state.sqlite3", daemon, sink, smarthost, tmpfs)
                assert daemon.process.poll() is None, "\n".join(daemon.lines)
            assert not [line for line in daemon.lines if "Traceback" in line], "\n".join(daemon.lines)
    finally:
        if tmpfs:
            subprocess.run(["umount", "-l", str(var)], check=False)


def _refused_451(rig: Rig, tag: str) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        rig.post(tag)
    assert refused.value.smtp_code == 451


def test_a_write_lock_held_past_the_busy_timeout_is_waited_out(rig: Rig) -> None:
    rig.smarthost.defer_data = True  # keeps a delivery falling due every second
    rig.post("lock-1")
    rig.wait_log("451 4.3.0 try again later")
    start = len(rig.daemon.lines)
    holder = sqlite3.connect(rig.state, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # Two failed claims, each after a full busy timeout: the lock outlasted it twice.
        rig.wait_log("state database: database is locked", times=2, start=start)
        _refused_451(rig, "lock-2")  # inbound meanwhile: the sender keeps the post and retries
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    rig.smarthost.defer_data = False
    rig.wait_delivered("lock-1")
    rig.post("lock-2")
    rig.wait_delivered("lock-2")
    assert rig.daemon.process.poll() is None


def test_a_full_disk_is_waited_out(rig: Rig) -> None:
    if not rig.tmpfs:
        pytest.skip("mounting a tmpfs needs root")
    rig.smarthost.defer_data = True
    start = len(rig.daemon.lines)
    rig.post("full-1")
    rig.wait_log("451 4.3.0 try again later", start=start)
    start = len(rig.daemon.lines)
    filler = rig.state.with_name("filler")
    try:
        with filler.open("wb", buffering=0) as handle, pytest.raises(OSError) as full:
            for _ in range(10_000):  # bounded: 640 MB, far more than the 8 MB tmpfs
                handle.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC
        rig.wait_log("state database: database or disk is full", times=2, start=start)
        _refused_451(rig, "full-2")
    finally:
        with contextlib.suppress(OSError):
            filler.unlink()
    rig.smarthost.defer_data = False
    rig.wait_delivered("full-1")
    rig.post("full-2")
    rig.wait_delivered("full-2")


def test_a_refused_envelope_sender_charges_no_member_and_alerts_the_administrator_once(rig: Rig) -> None:
    rig.smarthost.defer_data = False
    rig.smarthost.mail_reply = "553 5.1.8 <bounces@myclub.org>: Sender address rejected: Domain not found"
    before = len(rig.query("SELECT id FROM messages"))
    rig.post("sender-1")
    rig.post("sender-2")

    def tried_twice() -> bool:
        rows = rig.query(
            "SELECT MIN(d.attempts) FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.subject LIKE '%sender-%'"
        )
        return rows[0][0] is not None and rows[0][0] >= 2

    deadline = time.monotonic() + 60
    while not tried_twice():
        assert time.monotonic() < deadline, "\n".join(rig.daemon.lines)
        rig.wait_log("Sender address rejected", start=len(rig.daemon.lines) - 1)
    statuses = rig.query(
        "SELECT DISTINCT d.status FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE m.subject LIKE '%sender-%'"
    )
    assert {status for (status,) in statuses} <= {"deferred", "inflight"}  # never failed
    assert rig.query("SELECT COUNT(*) FROM bounce_events") == [(0,)]
    assert rig.sink.wait_for(lambda mta: any(ADMIN in t.rcpt_tos for t in mta.transactions), 30)
    alerts = [t for t in rig.sink.transactions if "refused the club's sender" in str(t.message["Subject"])]
    assert len(alerts) == 1 and alerts[0].rcpt_tos == [ADMIN]
    assert "553 5.1.8" in alerts[0].message.get_body().get_content()
    assert len(rig.query("SELECT id FROM messages")) == before + 3  # two posts and one alert
    rig.smarthost.mail_reply = None
    rig.wait_delivered("sender-1")
    rig.wait_delivered("sender-2")
    assert rig.query("SELECT COUNT(*) FROM bounce_events") == [(0,)]


def _postfix_dsn(recipient: str, message_id: str) -> str:
    """A bounce as Postfix writes it: a report per recipient and the returned post's headers."""
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\nTo: bounces@myclub.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0"\r\n\r\n'
        "--B0\r\nContent-Description: Notification\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host mx.example.org said: 550 5.1.1 User unknown\r\n\r\n"
        "--B0\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\nX-Postfix-Queue-ID: 4F2A11C0234\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.org\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <"
        + recipient
        + ">: Recipient address rejected: User unknown\r\n\r\n"
        "--B0\r\nContent-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"From: youth@myclub.org\r\nTo: youth@myclub.org\r\nSubject: dsn\r\nMessage-ID: {message_id}\r\n"
        "\r\n--B0--\r\n"
    )


def _bounce(rig: Rig, message: str) -> tuple[int, bytes]:
    """Mail *message* to the plain bounce address from <>; the reply to its DATA, as sent."""
    with smtplib.SMTP("127.0.0.1", rig.daemon.port, timeout=60) as client:
        client.ehlo()
        client.mail("<>")
        client.rcpt("bounces@myclub.org")
        return client.data(message.encode())


def _events(rig: Rig, address: str) -> list[tuple[object, ...]]:
    return rig.query("SELECT kind, status, source FROM bounce_events WHERE address = ?", address)


def test_a_forged_dsn_counts_for_nobody_and_gets_the_genuine_ones_reply(rig: Rig) -> None:
    rig.post("dsn-post")
    rig.wait_delivered("dsn-post")
    [delivered] = rig.delivered("dsn-post")
    message_id = str(delivered.message["Message-ID"])
    forged_reply = _bounce(rig, _postfix_dsn("cleo@example.net", "<made-up.1@myclub.org>"))
    genuine_reply = _bounce(rig, _postfix_dsn("ben@example.org", message_id))
    assert forged_reply == genuine_reply  # byte for byte: the reply tells a forger nothing
    assert forged_reply[0] == 250
    assert _events(rig, "cleo@example.net") == []
    assert _events(rig, "ben@example.org") == [("hard", "5.1.1", "dsn")]
    rig.wait_log("cleo@example.net: matches no recent delivery, ignored")  # the details are in the log


def test_the_log_has_a_line_per_delivery_and_per_membership_change(rig: Rig) -> None:
    start = len(rig.daemon.lines)
    rig.post("log-post")
    rig.wait_delivered("log-post")
    rig.wait_log("(list youth, 3 recipients) via 127.0.0.1: 3 sent: 250", start=start)
    cli = [CLUBLIST, "--dir", str(rig.club_dir), "--state", str(rig.state)]
    subprocess.run(
        [*cli, "member", "add", "dora@example.org", "--list", "youth"], check=True, capture_output=True
    )
    rig.wait_log("membership: dora@example.org added, lists: youth (by CLI)", start=start)


def test_under_systemd_log_lines_carry_syslog_priorities(rig: Rig, tmp_path: Path) -> None:
    with DaemonProcess(
        rig.club_dir,
        tmp_path / "state.sqlite3",
        extra=["--log-format", "auto"],
        env={"JOURNAL_STREAM": "8:1"},
    ) as daemon:
        line = daemon.wait_for_log(lambda line: "listening on" in line)
    assert line.startswith("<6>INFO clublist.daemon: ")
    record = logging.LogRecord(
        "clublist.x", logging.WARNING, __file__, 1, "state database: %s", ("full",), None
    )
    assert JournalFormatter().format(record) == "<4>WARNING clublist.x: state database: full"


@pytest.mark.slow
def test_a_write_lock_held_75_seconds_with_the_default_busy_timeout(tmp_path: Path) -> None:
    """The issue's figure: 75 s against SQLite's 30 s wait, while a post waits to be delivered."""
    club_dir = tmp_path / "lists.d"
    init_club(club_dir, "myclub.org", ADMIN, "My Club", "Europe/Berlin")
    store = Store(club_dir)
    list_create(store, Actor.shell(), "youth")
    member_add(store, Actor.shell(), "anna@example.org", lists=("youth",))
    config_set(store, Actor.shell(), "retry.schedule", [1])
    config_set(store, Actor.shell(), "listen.trusted_networks", ["127.0.0.0/8"])
    smarthost = Smarthost()
    smarthost.defer_data = True
    state = tmp_path / "var" / "state.sqlite3"
    with (
        RemoteMTA(Behaviour(data=smarthost.data)) as sink,
        DaemonProcess(club_dir, state, smarthost=f"127.0.0.1:{sink.port}") as daemon,
    ):
        rig = Rig(tmp_path, club_dir, state, daemon, sink, smarthost, False)
        rig.post("long-lock")
        rig.wait_log("451 4.3.0 try again later")
        holder = sqlite3.connect(state, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        held_until = time.monotonic() + 75  # the duration is the fault itself
        try:
            # Two jobs of the writer's line fail on the lock, 30 s each: the worker's claim, and
            # the archive's filing of the post when it came first ("archive: ... database is locked").
            rig.wait_log("database is locked", times=2)
            time.sleep(max(0.0, held_until - time.monotonic()))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        smarthost.defer_data = False
        rig.wait_delivered("long-lock", 1)
        assert daemon.process.poll() is None


@pytest.mark.parametrize(
    ("code", "text", "ours"),
    [
        (550, "Relaying denied", True),
        (554, "5.7.1 <ben@example.org>: Relay access denied", True),
        (550, "5.7.1 Unable to relay", True),
        (550, "5.7.54 SMTP; Unable to relay recipient in non-accepted domain", True),
        (530, "5.7.0 Authentication required", True),
        (550, "5.7.0 authentication required", True),
        (550, "5.7.57 Client not authenticated to send mail", True),
        (
            550,
            "5.1.1 <ben@example.org>: Recipient address rejected: User unknown in relay recipient table",
            False,
        ),
        (550, "5.1.1 The email account that you tried to reach does not exist", False),
        (550, "5.7.26 Unauthenticated email from example.org is not accepted due to its DMARC policy", False),
    ],
)
def test_relay_and_authentication_refusals_are_told_from_recipient_refusals(
    code: int, text: str, ours: bool
) -> None:
    assert sender_refusals.is_relay_or_auth_refusal(code, text) is ours
