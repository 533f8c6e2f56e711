"""Inbound through a real ``clublist run``: who may send what, and what a post looks like when it leaves."""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import Runner, cli_runner
from daemon import DaemonProcess
from mta import RemoteMTA
from shared_daemon import SharedDaemon, copy_club

from clublist.actions import Actor
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.club.store import Store

POST = (
    "From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: Training tonight\r\n"
    "Message-ID: <p1@example.org>\r\n\r\nBring shoes.\r\n"
)


def populate(store: Store) -> Store:
    admin = Actor.shell()
    list_create(store, admin, "trainer", owners=["tom@example.org"])
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    member_add(store, admin, "ben@example.org", "Ben", ("youth", "trainer"), aliases=("ben@work.example",))
    member_add(store, admin, "tom@example.org", "Tom", ("trainer",))
    member_add(store, admin, "off@example.org", "Off", ("youth",))
    member_set(store, admin, "off@example.org", MemberChanges(enable=False))
    return store


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, club_template: Path) -> Iterator[SharedDaemon]:
    """One daemon for the module; each test starts with it reset (see shared_daemon)."""
    directory = tmp_path_factory.mktemp("inbound") / "lists.d"
    populate(copy_club(club_template, directory))
    with RemoteMTA() as server, SharedDaemon.running(directory, server) as running:
        yield running


@pytest.fixture
def daemon(shared: SharedDaemon) -> DaemonProcess:
    shared.reset()
    return shared.daemon


@pytest.fixture
def sink(shared: SharedDaemon, daemon: DaemonProcess) -> RemoteMTA:
    return shared.sink


@pytest.fixture
def club_dir(shared: SharedDaemon) -> Path:
    return shared.club_dir


@pytest.fixture
def cli(shared: SharedDaemon) -> Runner:
    return cli_runner(shared.club_dir)


def smtp(daemon: DaemonProcess) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", daemon.port, timeout=30)


def test_member_post_reaches_every_member_with_list_headers(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    with smtp(daemon) as client:
        refused = client.sendmail("anna@example.org", ["youth@myclub.org"], POST)
    assert refused == {}
    assert sink.wait_for(lambda s: len(s.delivered) == 2)
    assert sink.delivered == {"anna@example.org", "ben@example.org"}  # off@ has delivery disabled
    (transaction,) = sink.transactions
    assert transaction.mail_from == "bounces@myclub.org"
    message = transaction.message
    assert message["List-Id"] == "Youth <youth.myclub.org>"
    assert message["List-Post"] == "<mailto:youth@myclub.org>"
    assert message["List-Unsubscribe"] == "<mailto:bot@myclub.org?subject=unsubscribe%20youth>"
    assert message["List-Help"] == "<mailto:bot@myclub.org?subject=help>"
    assert message["List-Owner"] == "<mailto:youth-owner@myclub.org>"
    assert message["Precedence"] == "list"
    assert message["X-Loop"] == "youth@myclub.org"
    assert message["Subject"] == "[Youth] Training tonight"
    assert message["From"] == "Anna via Youth <youth@myclub.org>"
    assert message["Reply-To"] == "Anna <anna@example.org>"
    assert message["Message-ID"] == "<p1@example.org>"
    assert message["Received"].startswith("from ")
    assert message.get_content().strip() == "Bring shoes."


def test_non_member_is_refused_at_rcpt(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    with smtp(daemon) as client:
        client.ehlo()
        client.mail("stranger@example.com")
        code, text = client.rcpt("youth@myclub.org")
    assert code == 550 and text.startswith(b"5.7.1") and b"not a member" in text


def test_member_of_another_list_is_refused(daemon: DaemonProcess) -> None:
    with smtp(daemon) as client:
        client.ehlo()
        client.mail("tom@example.org")
        code, text = client.rcpt("youth@myclub.org")
    assert code == 550 and text.startswith(b"5.7.1")


def test_an_alias_may_post_as_its_member(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    post = POST.replace("Anna <anna@example.org>", "Ben <ben@work.example>")
    with smtp(daemon) as client:
        client.sendmail("ben@work.example", ["youth@myclub.org"], post)
    assert sink.wait_for(lambda s: len(s.delivered) == 2)


def test_header_from_of_a_stranger_is_refused_at_data(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    post = POST.replace("Anna <anna@example.org>", "Mallory <mallory@evil.example>")
    with smtp(daemon) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("anna@example.org", ["youth@myclub.org"], post)
    assert refused.value.smtp_code == 550


RELAY_TRICKS = [
    "someone@gmail.com",
    "youth%gmail.com@myclub.org",
    "youth@gmail.com@myclub.org",
    "@myclub.org:someone@gmail.com",
    '"youth@gmail.com"@myclub.org',
    "youth@[127.0.0.1]",
    "youth@myclub.org.",
    "YOUTH@MyClub.ORG.evil.example",
    "youth@sub.myclub.org",
]


@pytest.mark.parametrize("recipient", RELAY_TRICKS)
def test_relay_tricks_are_refused_at_rcpt(daemon: DaemonProcess, recipient: str) -> None:
    with smtp(daemon) as client:
        client.ehlo()
        client.mail("anna@example.org")
        code, _text = client.rcpt(recipient)
    assert code in (550, 553)  # 553: aiosmtpd itself refuses what does not parse as an address


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("<anna@example.org>", 250),
        ("<anna@example.org> (a comment)", 250),  # left to aiosmtpd's parser, which reads it
        ("<" + "a" * 65 + "@example.org>", 553),  # read, then refused: over 64 characters before the @
        ("<anna@example.org> SIZE=x", 501),  # what follows the path is still checked
        ("<>", 250),  # the null sender, for bounces
    ],
)
def test_mail_from_paths_are_read_as_aiosmtpd_reads_them(daemon: DaemonProcess, path: str, code: int) -> None:
    with smtp(daemon) as client:
        client.ehlo()
        reply = client.docmd("MAIL", f"FROM:{path}")
        assert reply[0] == code, reply


def test_odd_case_reaches_the_list(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    with smtp(daemon) as client:
        client.sendmail("Anna@Example.ORG", ["YOUTH@MyClub.Org"], POST)
    assert sink.wait_for(lambda s: len(s.delivered) == 2)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by .ci/run")
def test_swaks_sees_relay_and_stranger_refused(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    def swaks(sender: str, recipient: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.1:{daemon.port}",
                "--from",
                sender,
                "--to",
                recipient,
                "--header",
                "From: Anna <anna@example.org>",
                "--body",
                "hello",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    relay = swaks("anna@example.org", "victim@gmail.com")
    assert relay.returncode != 0 and "<** 550 5.7.1" in relay.stdout
    stranger = swaks("stranger@example.com", "youth@myclub.org")
    assert stranger.returncode != 0 and "<** 550 5.7.1" in stranger.stdout
    member = swaks("anna@example.org", "youth@myclub.org")
    assert member.returncode == 0, member.stdout
    assert sink.wait_for(lambda s: len(s.delivered) == 2)


def test_postmaster_takes_mail_from_anyone_for_the_administrator(
    daemon: DaemonProcess, sink: RemoteMTA
) -> None:
    with smtp(daemon) as client:
        client.sendmail("", ["postmaster@myclub.org"], "From: x@y.example\r\nSubject: hi\r\n\r\nhello\r\n")
    assert sink.wait_for(lambda s: "admin@myclub.org" in s.delivered)


def test_owner_address_reaches_the_owners(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    with smtp(daemon) as client:
        client.sendmail("stranger@example.com", ["trainer-owner@myclub.org"], "Subject: hi\r\n\r\nhello\r\n")
    assert sink.wait_for(lambda s: s.delivered == {"tom@example.org"})


def test_null_sender_to_a_list_is_refused(daemon: DaemonProcess) -> None:
    with smtp(daemon) as client:
        client.ehlo()
        client.mail("")
        code, _ = client.rcpt("youth@myclub.org")
    assert code == 550


def test_cross_post_reaches_a_member_of_both_lists_once(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    post = POST.replace("Anna <anna@example.org>", "Ben <ben@example.org>")
    with smtp(daemon) as client:
        client.sendmail("ben@example.org", ["youth@myclub.org", "trainer@myclub.org"], post)
    assert sink.wait_for(lambda s: s.received_count >= 3)
    recipients = [r for t in sink.transactions for r in t.rcpt_tos]
    assert sorted(recipients) == ["anna@example.org", "ben@example.org", "tom@example.org"]


def test_a_loop_is_discarded_and_an_auto_reply_held_for_the_owners(
    daemon: DaemonProcess, sink: RemoteMTA
) -> None:
    mark = len(daemon.lines)
    looped = "List-Id: Youth <youth.myclub.org>\r\n" + POST
    auto = "Auto-Submitted: auto-replied\r\n" + POST
    with smtp(daemon) as client:
        assert client.sendmail("anna@example.org", ["youth@myclub.org"], looped) == {}
        client.mail("anna@example.org")
        client.rcpt("youth@myclub.org")
        code, reply = client.data(auto.encode())
        assert code == 250 and b"held for approval" in reply
        client.sendmail("anna@example.org", ["youth@myclub.org"], POST.replace("p1@", "p2@"))
    assert sink.wait_for(lambda s: len(s.transactions) == 2)
    daemon.wait_for_log(lambda line: "discarded" in line, start=mark)
    posts = [t for t in sink.transactions if "youth@myclub.org" in str(t.message["From"])]
    assert [t.message["Message-ID"] for t in posts] == ["<p2@example.org>"]
    (notice,) = [t for t in sink.transactions if t.rcpt_tos == ["admin@myclub.org"]]
    assert "Auto-Submitted: auto-replied" in notice.message.get_content()


def test_too_large_is_refused(daemon: DaemonProcess, cli: Runner) -> None:
    cli("config", "set", "listen.max_message_size", "2000")  # in force when it returns
    with smtp(daemon) as client, pytest.raises(smtplib.SMTPException) as refused:
        client.sendmail("anna@example.org", ["youth@myclub.org"], POST + "x" * 5000 + "\r\n")
    assert "552" in str(refused.value)


def test_daily_limit_counts_the_posts_accepted_today(daemon: DaemonProcess, cli: Runner) -> None:
    cli("config", "set", "posting.daily_limit", "1")
    with smtp(daemon) as client:
        assert client.sendmail("anna@example.org", ["youth@myclub.org"], POST) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("anna@example.org", ["youth@myclub.org"], POST.replace("p1@", "p2@"))
    assert refused.value.smtp_code == 450
    assert b"limit of 1 posts a day" in refused.value.smtp_error


def test_hourly_limit_brakes_an_author_without_a_daily_limit(daemon: DaemonProcess, cli: Runner) -> None:
    cli("config", "set", "posting.daily_limit", "0")
    cli("config", "set", "posting.hourly_limit", "2")
    with smtp(daemon) as client:
        for n in (1, 2):
            post = POST.replace("p1@", f"h{n}@")
            assert client.sendmail("anna@example.org", ["youth@myclub.org"], post) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("anna@example.org", ["youth@myclub.org"], POST.replace("p1@", "h3@"))
        ben = POST.replace("Anna <anna@example.org>", "Ben <ben@example.org>").replace("p1@", "b1@")
        assert client.sendmail("ben@example.org", ["youth@myclub.org"], ben) == {}  # counted apart
    assert refused.value.smtp_code == 450
    assert b"limit of 2 posts an hour" in refused.value.smtp_error


def test_edits_to_members_take_effect_without_restart(
    daemon: DaemonProcess, sink: RemoteMTA, cli: Runner
) -> None:
    mark = len(daemon.lines)
    cli("member", "add", "carl@example.org", "--list", "youth")
    daemon.wait_for_log(lambda line: "reloaded lists.d" in line, start=mark)
    post = POST.replace("Anna <anna@example.org>", "Carl <carl@example.org>")
    with smtp(daemon) as client:
        client.sendmail("carl@example.org", ["youth@myclub.org"], post)
    assert sink.wait_for(lambda s: s.delivered == {"anna@example.org", "ben@example.org", "carl@example.org"})


def test_broken_members_file_keeps_the_last_good_version(
    daemon: DaemonProcess, sink: RemoteMTA, club_dir: Path
) -> None:
    mark = len(daemon.lines)
    path = club_dir / "members.toml"
    path.write_text(path.read_text() + "\n[[member]\nemail = broken\n")
    line = daemon.wait_for_log(lambda text: "not reloaded" in text, start=mark)
    assert "members.toml:" in line
    with smtp(daemon) as client:
        client.sendmail("anna@example.org", ["youth@myclub.org"], POST)
    assert sink.wait_for(lambda s: len(s.delivered) == 2)


def test_moderated_post_is_held_then_approved(
    shared: SharedDaemon, daemon: DaemonProcess, sink: RemoteMTA, cli: Runner
) -> None:
    # Each change is in force when its command returns, so the post follows both.
    cli("list", "set", "youth", "posting", "moderated")
    cli("list", "set", "youth", "owners", "ben@example.org")
    state = ["--state", str(shared.state)]
    with smtp(daemon) as client:
        client.sendmail("anna@example.org", ["youth@myclub.org"], POST)
    assert sink.wait_for(lambda s: s.delivered == {"ben@example.org"})  # the owner's notice
    notice = sink.transactions[0].message
    assert str(notice["Subject"]).startswith("Held for youth: Training tonight [held ")
    (held,) = json.loads(cli(*state, "held", "ls", "--json").stdout)
    assert held["list_name"] == "youth" and held["author"] == "anna@example.org"
    cli(*state, "held", "approve", str(held["id"]))
    assert sink.wait_for(lambda s: s.received_count == 3)
    assert json.loads(cli(*state, "held", "ls", "--json").stdout) == []


def test_starttls_is_offered_and_recorded_in_received(tmp_path: Path, club_template: Path) -> None:
    """Its own club and daemon: the certificate is read at start-up."""
    club_dir = populate(copy_club(club_template, tmp_path / "lists.d")).directory
    cli = cli_runner(club_dir)
    ca = trustme.CA()
    cert = ca.issue_cert("myclub.org")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cli("config", "set", "tls.cert", str(tmp_path / "cert.pem"))
    cli("config", "set", "tls.require", "true")
    with (
        RemoteMTA() as sink,
        DaemonProcess(club_dir, tmp_path / "state.sqlite3", smarthost=f"127.0.0.1:{sink.port}") as daemon,
    ):
        with smtp(daemon) as client:
            client.ehlo()
            code, _text = client.mail("anna@example.org")
            assert code == 530
            context = ssl.create_default_context()
            ca.configure_trust(context)
            context.check_hostname = False
            client.starttls(context=context)
            client.sendmail("anna@example.org", ["youth@myclub.org"], POST)
        assert sink.wait_for(lambda s: len(s.delivered) == 2)
    received = sink.transactions[0].message["Received"]
    assert "ESMTPS" in received and "TLSv1." in received and "cipher" in received


def test_a_looping_message_is_refused(daemon: DaemonProcess, sink: RemoteMTA) -> None:
    looping = "".join(
        f"Received: from hop{n} by hop{n + 1}; Wed, 25 Nov 2026 18:00:00 +0000\r\n" for n in range(31)
    )
    with smtp(daemon) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("anna@example.org", ["youth@myclub.org"], looping + POST)
    assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.4.6")


def test_deeply_nested_mime_is_refused_not_retried(daemon: DaemonProcess) -> None:
    depth = 400
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(depth)
    )
    closing = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(depth)))
    message = (
        "From: Anna <anna@example.org>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
        + opening
        + "Content-Type: text/plain\r\n\r\nhi\r\n"
        + closing
    )
    with smtp(daemon) as client:
        try:
            client.sendmail("anna@example.org", ["youth@myclub.org"], message)
            code = 250
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
    assert code in (250, 554)  # accepted and decorated, or refused for good: never 451 forever
