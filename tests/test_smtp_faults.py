"""The listener under hostile load, through a real ``clublist run``: parallel posters against the
daily limit, a member's naive auto-responder, one client holding many connections, NUL bytes and
raw 8-bit headers, and a SIGTERM with sessions open."""

from __future__ import annotations

import queue
import signal
import smtplib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from daemon import DaemonProcess
from mta import Behaviour, RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.club.store import Store

ADMIN = Actor.shell()
LIMIT_ROUNDS = 3


@pytest.fixture(scope="module")
def club_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """youth (owner: olga) with anna and carl; "limits" with one member per round of the
    parallel test, each allowed 3 posts a day.  Posts from loopback count as authenticated;
    no peer is a trusted proxy, so every client address is counted for the connection limit."""
    directory = tmp_path_factory.mktemp("club") / "lists.d"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(directory)
    config_set(store, ADMIN, "listen.trusted_networks", ["127.0.0.0/8"])
    config_set(store, ADMIN, "listen.trusted_proxies", [])
    config_set(store, ADMIN, "listen.idle_timeout", 3)
    list_create(store, ADMIN, "youth", prefix="[Youth]", owners=["olga@example.org"])
    list_create(store, ADMIN, "limits")
    member_add(store, ADMIN, "anna@example.org", "Anna", ("youth",))
    member_add(store, ADMIN, "carl@example.org", "Carl", ("youth",))
    for round_number in range(LIMIT_ROUNDS):
        address = f"poster{round_number}@example.org"
        member_add(store, ADMIN, address, "Poster", ("limits",))
        member_set(store, ADMIN, address, MemberChanges(daily_limit=3))
    return directory


class Sink(RemoteMTA):
    """The smarthost, which hands every transaction to the test as well."""

    def __init__(self) -> None:
        self.arrivals: queue.SimpleQueue[Transaction] = queue.SimpleQueue()
        super().__init__(Behaviour(delivered=self.arrivals.put))


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(club_dir: Path, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    state = tmp_path_factory.mktemp("state") / "state.sqlite3"
    with DaemonProcess(club_dir, state, smarthost=f"127.0.0.1:{sink.port}") as process:
        yield process


@pytest.fixture(scope="module", autouse=True)
def idle_session(daemon: DaemonProcess) -> Iterator[smtplib.SMTP]:
    """A session that says EHLO and then nothing, opened before the module's first test: its
    listen.idle_timeout runs out while the other tests run, not in a wait of its own."""
    with connect(daemon, "127.0.0.7") as client:
        yield client


def connect(daemon: DaemonProcess, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", daemon.port, timeout=30, source_address=(source, 0))
    client.ehlo("client.example.org")
    return client


def post(author: str, to: str, subject: str, body: str = "Hello.", headers: str = "") -> bytes:
    return (f"From: <{author}>\r\nTo: {to}\r\nSubject: {subject}\r\n{headers}\r\n{body}\r\n").encode()


def send(daemon: DaemonProcess, author: str, to: str, message: bytes, source: str = "127.0.0.1") -> int:
    """Post *message*; the reply code of DATA (or of the first refusal)."""
    with connect(daemon, source) as client:
        code, _ = client.mail(author)
        if code != 250:
            return code
        code, _ = client.rcpt(to)
        if code != 250:
            return code
        code, _ = client.data(message)
        return code


# --- the daily limit holds under concurrency --------------------------------------------


@pytest.mark.parametrize("round_number", range(LIMIT_ROUNDS))
def test_thirty_parallel_posts_against_a_limit_of_three_accept_exactly_three(
    daemon: DaemonProcess, round_number: int
) -> None:
    author = f"poster{round_number}@example.org"
    barrier = threading.Barrier(30)

    def one(index: int) -> int:
        # Thirty clients (thirty addresses: one client may hold only 10 connections).
        with connect(daemon, f"127.0.0.{10 + index}") as client:
            client.mail(author)
            client.rcpt("limits@myclub.org")
            barrier.wait(30)
            code, _ = client.data(post(author, "limits@myclub.org", f"Post {index}"))
            return code

    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(one, range(30)))
    assert sorted(codes) == [250] * 3 + [450] * 27


# --- a member's naive auto-responder ---------------------------------------------------


def test_a_naive_auto_responder_reaches_the_list_at_most_twice_and_the_owners_hear_once(
    daemon: DaemonProcess, sink: Sink
) -> None:
    """Carl's responder answers every list post it gets, from his address, to the list (the
    post's From), with the same text: the loop stops and the owners are told once."""
    start = len(daemon.lines)

    def respond(transaction: Transaction) -> None:
        message = transaction.message
        if "carl@example.org" not in transaction.rcpt_tos or message["List-Id"] is None:
            return
        reply = post(
            "carl@example.org",
            "youth@myclub.org",
            f"Re: {message['Subject']}",
            "I am away until Monday and will answer then.\r\n\r\n> " + message.get_content().strip(),
            f"In-Reply-To: {message['Message-ID']}\r\nReferences: {message['Message-ID']}\r\n",
        )
        assert send(daemon, "carl@example.org", "youth@myclub.org", reply) == 250

    def carls_posts() -> int:
        return sum(
            1
            for t in sink.transactions
            if "olga@example.org" not in t.rcpt_tos and "Carl" in str(t.message["From"])
        )

    def answer_until(held: int) -> None:
        """Play the responder until *held* of its replies are held (or fail after 30 s)."""
        deadline = time.monotonic() + 30
        while sum("held:" in line for line in daemon.lines[start:]) < held:
            try:
                respond(sink.arrivals.get(timeout=0.5))  # short: the hold shows in the log only
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError("\n".join(daemon.lines[start:])) from None

    for first in (1, 2):
        assert (
            send(
                daemon,
                "anna@example.org",
                "youth@myclub.org",
                post("anna@example.org", "youth@myclub.org", f"Meeting {first}"),
            )
            == 250
        )
        answer_until(held=first)
    assert sink.wait_for(lambda s: any("olga@example.org" in t.rcpt_tos for t in s.transactions))
    while not sink.arrivals.empty():
        respond(sink.arrivals.get())
    assert carls_posts() <= 2
    notices = [t for t in sink.transactions if t.rcpt_tos == ["olga@example.org"]]
    assert len(notices) == 1
    assert "auto-responder: carl@example.org" in notices[0].message.get_content()


def test_bulk_mail_from_a_member_is_held_with_the_reason(daemon: DaemonProcess, sink: Sink) -> None:
    message = post("anna@example.org", "youth@myclub.org", "Newsletter", headers="Precedence: bulk\r\n")
    with connect(daemon) as client:
        client.mail("anna@example.org")
        client.rcpt("youth@myclub.org")
        code, reply = client.data(message)
    assert code == 250 and b"held for approval" in reply
    assert sink.wait_for(
        lambda s: any(
            "Precedence: bulk" in t.message.get_content()
            for t in s.transactions
            if t.rcpt_tos == ["olga@example.org"]
        )
    )


# --- connections ----------------------------------------------------------------------


def test_the_eleventh_connection_from_one_client_is_refused_and_others_still_get_in(
    daemon: DaemonProcess,
) -> None:
    held = [
        smtplib.SMTP("127.0.0.1", daemon.port, timeout=30, source_address=("127.0.0.5", 0)) for _ in range(10)
    ]
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", daemon.port, timeout=30, source_address=("127.0.0.5", 0))
        assert refused.value.smtp_code == 421
        assert (
            refused.value.smtp_error == b"4.7.0 Too many connections from 127.0.0.5, please try again later"
        )
        message = post("anna@example.org", "youth@myclub.org", "From elsewhere")
        assert send(daemon, "anna@example.org", "youth@myclub.org", message, source="127.0.0.6") == 250
    finally:
        for client in held:
            client.close()


# --- shutdown --------------------------------------------------------------------------


def test_sigterm_answers_421_to_idle_and_mid_data_sessions_and_commits_nothing_unfinished(
    club_dir: Path, sink: Sink, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite3"
    process = DaemonProcess(club_dir, state, smarthost=f"127.0.0.1:{sink.port}").start()
    try:
        idle = connect(process)
        busy = connect(process, "127.0.0.3")
        assert busy.mail("anna@example.org")[0] == 250
        assert busy.rcpt("youth@myclub.org")[0] == 250
        busy.putcmd("data")
        assert busy.getreply()[0] == 354
        busy.send(b"From: <anna@example.org>\r\nSubject: cut short\r\n\r\nfirst line\r\n")
        mark = len(process.lines)
        process.process.send_signal(signal.SIGTERM)
        process.wait_for_log(lambda line: "shutting down" in line, start=mark)
        assert idle.getreply() == (421, b"4.3.2 Service shutting down, please try again later")
        busy.send(b"last line\r\n.\r\n")
        assert busy.getreply() == (421, b"4.3.2 Service shutting down, please try again later")
        assert process.process.wait(timeout=60) == 0
    finally:
        process.stop()
    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE subject LIKE '%cut short%'").fetchone() == (
            0,
        )


def test_a_second_signal_closes_a_stalled_session_at_once(club_dir: Path, tmp_path: Path) -> None:
    process = DaemonProcess(club_dir, tmp_path / "state.sqlite3").start()
    try:
        stalled = connect(process)
        stalled.mail("anna@example.org")
        stalled.rcpt("youth@myclub.org")
        stalled.putcmd("data")
        assert stalled.getreply()[0] == 354
        mark = len(process.lines)
        process.process.send_signal(signal.SIGTERM)
        process.wait_for_log(lambda line: "shutting down" in line, start=mark)
        process.process.send_signal(signal.SIGINT)
        assert process.process.wait(timeout=20) == 0  # not the 30 s the first signal would wait
        assert stalled.getreply()[0] == 421
    finally:
        process.stop()


# --- what a message may hold -----------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "body"])
def test_a_message_with_a_nul_byte_is_refused(daemon: DaemonProcess, where: str) -> None:
    message = post(
        "anna@example.org", "youth@myclub.org", "Null", "Hello\x00there." if where == "body" else "Hello."
    )
    if where == "header":
        message = message.replace(b"Subject: Null", b"Subject: Nu\x00ll")
    with connect(daemon) as client:
        client.mail("anna@example.org")
        client.rcpt("youth@myclub.org")
        assert client.data(message) == (
            554,
            b"5.6.0 The message contains NUL bytes, which mail may not carry",
        )


def test_raw_latin1_header_bytes_arrive_as_the_right_characters(daemon: DaemonProcess, sink: Sink) -> None:
    subject = "Grüße aus München"
    posted = post("anna@example.org", "youth@myclub.org", "8BIT").replace(b"8BIT", subject.encode("latin-1"))
    assert send(daemon, "anna@example.org", "youth@myclub.org", posted) == 250
    assert sink.wait_for(lambda s: any(t.message["Subject"] == f"[Youth] {subject}" for t in s.transactions))
    bulk = post("carl@example.org", "youth@myclub.org", "8BIT", headers="Precedence: bulk\r\n")
    assert (
        send(daemon, "carl@example.org", "youth@myclub.org", bulk.replace(b"8BIT", "Café".encode("latin-1")))
        == 250
    )
    assert sink.wait_for(
        lambda s: any(
            "Café" in t.message.get_content() for t in s.transactions if t.rcpt_tos == ["olga@example.org"]
        )
    )
    assert not any("\ufffd" in str(t.message["Subject"]) + t.message.get_content() for t in sink.transactions)


# --- last, so that the idle session's timeout has run out meanwhile -----------------------


def test_a_session_idle_before_mail_from_is_closed_with_421(idle_session: smtplib.SMTP) -> None:
    code, text = idle_session.getreply()  # nothing sent: the server speaks when listen.idle_timeout is up
    assert (code, text) == (421, b"4.4.2 Idle too long before MAIL FROM, closing the connection")
