"""Bounces through a real ``clublist run``: a dead address ends disabled, and ``--enable`` brings it back.

The worker's own failures count once a day, and a test cannot wait for days, so the club sets
``bounces.threshold`` to 1: one day with a permanent failure is enough to disable a member.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner
from daemon import DaemonProcess
from mta import Behaviour, RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.members import member_add
from clublist.club.store import Store
from clublist.outbound import verp

DEAD = "dead@example.org"
POST = (
    "From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: Training tonight\r\n"
    "Message-ID: <p{number}@example.org>\r\n\r\nBring shoes.\r\n"
)
SUMMARY = "Bounces: delivery disabled"


class Mailboxes:
    """The members' mail server: DEAD's mailbox does not exist until ``revive``; every RCPT is noted."""

    def __init__(self) -> None:
        self.dead = True
        self.asked: list[str] = []

    def __call__(self, address: str) -> str | None:
        self.asked.append(address.lower())
        if self.dead and address.lower() == DEAD:
            return f"550 5.1.1 <{DEAD}>: Recipient address rejected: User unknown"
        return None


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "state.sqlite3"


@pytest.fixture
def club(store: Store) -> Store:
    for address in ("anna@example.org", DEAD, "jonas.weber@example.net"):
        member_add(store, Actor.shell(), address, lists=("youth",))
    config_set(store, Actor.shell(), "bounces.threshold", 1)
    return store


@pytest.fixture
def mailboxes() -> Mailboxes:
    return Mailboxes()


@pytest.fixture
def sink(mailboxes: Mailboxes) -> Iterator[RemoteMTA]:
    with RemoteMTA(Behaviour(rcpt=mailboxes)) as server:
        yield server


@pytest.fixture
def daemon(club: Store, club_dir: Path, state_path: Path, sink: RemoteMTA) -> Iterator[DaemonProcess]:
    with DaemonProcess(club_dir, state_path, smarthost=f"127.0.0.1:{sink.port}") as process:
        yield process


def post(daemon: DaemonProcess, number: int) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        assert client.sendmail("anna@example.org", ["youth@myclub.org"], POST.format(number=number)) == {}


def delivered(sink: RemoteMTA, number: int) -> list[Transaction]:
    return [t for t in sink.transactions if t.message["Message-ID"] == f"<p{number}@example.org>"]


def summaries(sink: RemoteMTA) -> list[Transaction]:
    return [t for t in sink.transactions if str(t.message["Subject"]).startswith(SUMMARY)]


def test_a_dead_address_ends_disabled_and_member_set_enable_brings_it_back(
    daemon: DaemonProcess, sink: RemoteMTA, mailboxes: Mailboxes, cli: Runner, state_path: Path
) -> None:
    mark = len(daemon.lines)
    post(daemon, 1)
    daemon.wait_for_log(lambda line: f"disabled delivery to {DEAD}" in line, start=mark)
    member = json.loads(cli("member", "show", DEAD, "--json").stdout)
    assert member["delivery"] == "disabled"
    assert member["disabled_reason"].startswith("bounces: score 1.0 on ")
    assert "550 5.1.1" in member["disabled_reason"]
    assert sink.wait_for(lambda s: len(summaries(s)) == 1)
    [summary] = summaries(sink)
    assert summary.rcpt_tos == ["admin@myclub.org"]
    assert DEAD in summary.message.get_content()

    # The daemon picks up its own change to members.toml; the next post skips the member.
    daemon.wait_for_log(lambda line: "reloaded lists.d" in line, start=mark)
    mailboxes.asked.clear()
    post(daemon, 2)
    assert sink.wait_for(lambda s: len(delivered(s, 2)) == 1)
    assert sorted(delivered(sink, 2)[0].rcpt_tos) == ["anna@example.org", "jonas.weber@example.net"]
    assert DEAD not in mailboxes.asked

    # The member fixed their mailbox; the administrator resumes delivery.
    mailboxes.dead = False
    mark = len(daemon.lines)
    cli("member", "set", DEAD, "--enable")
    daemon.wait_for_log(lambda line: "reloaded lists.d" in line, start=mark)
    post(daemon, 3)
    assert sink.wait_for(lambda s: len(delivered(s, 3)) == 1)
    assert DEAD in delivered(sink, 3)[0].rcpt_tos
    shown = json.loads(cli("--state", str(state_path), "bounces", "show", DEAD, "--json").stdout)
    assert shown["score"] == 0 and shown["delivery"] == "enabled"
    assert [e["kind"] for e in shown["events"]] == ["hard", "disabled"]
    assert len(summaries(sink)) == 1


UNREADABLE = "From: someone@example.net\r\nSubject: Returned mail\r\n\r\nSomething went wrong.\r\n"


def test_bounces_sent_by_smtp_are_counted(
    daemon: DaemonProcess, cli: Runner, state_path: Path, sink: RemoteMTA
) -> None:
    post(daemon, 7)  # the post the plain DSN returns: it counts only for a delivery clublist made
    assert sink.wait_for(lambda s: len(delivered(s, 7)) == 1)
    dsn = (Path(__file__).parent / "bounces" / "postfix_user_unknown.eml").read_text()
    dsn = dsn.replace("<177252564500.1234.5678@myclub.org>", "<p7@example.org>")
    to_verp = verp.bounce_address(verp.load_secret(state_path), "bounces", "myclub.org", "youth", DEAD)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        assert client.sendmail("", ["bounces@myclub.org"], dsn) == {}
        assert client.sendmail("", [to_verp], UNREADABLE) == {}

    def events(address: str) -> list[tuple[str, str, str, str]]:
        shown = json.loads(cli("--state", str(state_path), "bounces", "show", address, "--json").stdout)
        return [(e["kind"], e["status"], e["list_name"], e["source"]) for e in shown["events"]]

    # 250 came after the commit, so the evidence is there already.
    assert events("jonas.weber@example.net")[0] == ("hard", "5.1.1", "youth", "dsn")
    assert ("hard", "", "youth", "verp") in events(DEAD)  # after the failure of post 7 itself
