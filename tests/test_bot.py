"""Commands mailed to bot@ through a real ``clublist run``: the same actions as the CLI, safely."""

from __future__ import annotations

import json
import re
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from conftest import Runner, cli_runner
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import Behaviour, RemoteMTA, Transaction
from shared_daemon import SharedDaemon, copy_club

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.bot import may_use
from clublist.cli import main as command_group
from clublist.club.store import Store

TOKEN = re.compile(r"confirm ([0-9a-f]{12})")


def populate(store: Store) -> Store:
    admin = Actor.shell()
    list_create(store, admin, "trainer", owners=["tom@example.org"], description="Trainers")
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    member_add(store, admin, "ben@example.org", "Ben", ("youth",))
    member_add(store, admin, "tom@example.org", "Tom", ("trainer",))
    return store


class Bot:
    """A daemon, a sink, and a way to mail the bot and read its replies."""

    def __init__(self, daemon: DaemonProcess, sink: RemoteMTA, cli: Runner) -> None:
        self.daemon, self.sink, self.cli = daemon, sink, cli
        self.sent = 0

    def mail(
        self, sender: str, body: str, subject: str = "commands", to: str = "bot@myclub.org", headers: str = ""
    ) -> Transaction:
        """Mail the bot and return its reply (notices the commands queued arrive beside it)."""
        message_id = f"<m{self.sent}@example.org>"
        self.sent += 1
        message = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=30) as client:
            client.sendmail(sender, [to], (message + headers + "\r\n" + body).encode())

        def reply(sink: RemoteMTA) -> Transaction | None:
            return next((t for t in sink.transactions if t.message["In-Reply-To"] == message_id), None)

        assert self.sink.wait_for(lambda s: reply(s) is not None), "no reply"
        found = reply(self.sink)
        assert found is not None
        return found

    def member(self, address: str) -> dict[str, object]:
        return json.loads(self.cli("member", "show", address, "--json").stdout)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, club_template: Path) -> Iterator[SharedDaemon]:
    """One daemon for the module; each test starts with it reset (see shared_daemon).

    The bot's mail is not authenticated here (loopback untrusted, no SPF or DKIM in DNS), so
    every change needs its confirmation round trip."""
    store = populate(copy_club(club_template, tmp_path_factory.mktemp("bot") / "lists.d"))
    with DNSServer() as dns_server, RemoteMTA() as sink:
        for key, value in [
            ("listen.trusted_networks", []),
            ("delivery.dns_servers", ["127.0.0.1"]),
            ("delivery.dns_port", dns_server.port),
        ]:
            config_set(store, Actor.shell(), key, value)
        with SharedDaemon.running(store.directory, sink) as running:
            yield running


@pytest.fixture
def bot(shared: SharedDaemon) -> Bot:
    shared.reset()
    return Bot(shared.daemon, shared.sink, cli_runner(shared.club_dir))


@pytest.fixture
def club(shared: SharedDaemon) -> Store:
    return Store(shared.club_dir)


@pytest.fixture
def club_dir(shared: SharedDaemon) -> Path:
    return shared.club_dir


def reply_text(transaction: Transaction) -> str:
    return transaction.message.get_content().replace("\r\n", "\n")


def test_reply_is_an_auto_reply_to_the_sender(bot: Bot) -> None:
    reply = bot.mail("anna@example.org", "lists\r\n")
    message = reply.message
    assert reply.rcpt_tos == ["anna@example.org"]
    assert message["From"] == "bot@myclub.org"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<m0@example.org>"
    assert message["Subject"] == "Re: commands"
    text = reply_text(reply)
    assert "> lists" in text and "trainer@myclub.org" in text and "youth@myclub.org" in text


def test_info_and_who(bot: Bot) -> None:
    text = reply_text(bot.mail("anna@example.org", "info trainer\r\nwho youth\r\nwho trainer\r\n"))
    info, who_youth, who_trainer = text.split("\n\n> ")[0:3]
    assert "Trainers" in info
    assert "anna@example.org" in who_youth and "ben@example.org" in who_youth
    assert "only members of trainer" in who_trainer


def test_subscribe_needs_confirmation_from_the_same_address(bot: Bot) -> None:
    first = reply_text(bot.mail("anna@example.org", "", subject="subscribe trainer"))
    assert bot.member("anna@example.org")["lists"] == ["youth"]
    token = TOKEN.search(first)[1]  # type: ignore[index]
    wrong_sender = reply_text(bot.mail("ben@example.org", f"confirm {token}\r\n"))
    assert "not sent to this address" in wrong_sender
    done = reply_text(bot.mail("anna@example.org", f"confirm {token}\r\n"))
    assert "joined trainer" in done
    assert bot.member("anna@example.org")["lists"] == ["youth", "trainer"]
    again = reply_text(bot.mail("anna@example.org", f"confirm {token}\r\n"))
    assert "already used" in again
    # The join sent one welcome to anna and told the list's owner, through the daemon's queue.
    assert bot.sink.wait_for(lambda s: len(s.transactions) >= 6)
    notices = [
        (t.rcpt_tos, t.message["Subject"]) for t in bot.sink.transactions if not t.message["In-Reply-To"]
    ]
    assert sorted(notices) == [
        (["anna@example.org"], "Welcome to Trainer"),
        (["tom@example.org"], "anna@example.org joined trainer"),
    ]


def test_unsubscribe_and_leave_via_request_address(bot: Bot) -> None:
    first = reply_text(bot.mail("ben@example.org", "unsubscribe\r\n", to="youth-request@myclub.org"))
    token = TOKEN.search(first)[1]  # type: ignore[index]
    reply_text(bot.mail("ben@example.org", f"confirm {token}\r\n"))
    assert bot.member("ben@example.org")["lists"] == []
    join = reply_text(bot.mail("ben@example.org", "join youth\r\n"))
    reply_text(bot.mail("ben@example.org", f"confirm {TOKEN.search(join)[1]}\r\n"))  # type: ignore[index]
    assert bot.member("ben@example.org")["lists"] == ["youth"]


def test_a_command_in_subject_and_body_is_one_command(bot: Bot) -> None:
    text = reply_text(bot.mail("ben@example.org", "unsubscribe youth\r\n", subject="unsubscribe youth"))
    assert len(TOKEN.findall(text)) == 1


def test_the_subject_is_read_without_reply_prefixes_when_the_body_has_no_command(bot: Bot) -> None:
    text = reply_text(
        bot.mail("ben@example.org", "Hello bot,\r\n", subject="AW: WG: Re[2]: unsubscribe youth")
    )
    assert len(TOKEN.findall(text)) == 1


def test_replying_to_the_confirmation_confirms_without_asking_again(bot: Bot) -> None:
    first = bot.mail("ben@example.org", "", subject="unsubscribe youth")
    token = TOKEN.search(reply_text(first))[1]  # type: ignore[index]
    asked = first.message["Message-ID"]
    assert asked == f"<confirm-{token}@myclub.org>"
    quoted = "".join(f"> {line}\r\n" for line in reply_text(first).splitlines())
    outlook = "\r\n-----Original Message-----\r\nFrom: bot@myclub.org\r\nSubject: Re: unsubscribe youth\r\n"
    done = bot.mail(
        "ben@example.org",
        quoted + outlook,
        subject="Re: Re: unsubscribe youth",
        headers=f"In-Reply-To: {asked}\r\nReferences: {asked}\r\n",
    )
    assert set(TOKEN.findall(reply_text(done))) <= {token}  # no new question
    assert "reply with this line" not in reply_text(done)
    assert bot.member("ben@example.org")["lists"] == []


def test_forged_from_cannot_change_anyone(bot: Bot) -> None:
    # Mallory writes as Anna: the token goes to Anna's mailbox, never to Mallory.
    reply = bot.mail("anna@example.org", "leave youth\r\n")
    assert reply.rcpt_tos == ["anna@example.org"]
    assert bot.member("anna@example.org")["lists"] == ["youth"]
    guessed = reply_text(bot.mail("anna@example.org", "confirm 0123456789ab\r\n"))
    assert "Unknown token" in guessed
    # A member naming another member is refused when the change is confirmed.
    first = reply_text(bot.mail("ben@example.org", "member leave anna@example.org youth\r\n"))
    refused = reply_text(bot.mail("ben@example.org", f"confirm {TOKEN.search(first)[1]}\r\n"))  # type: ignore[index]
    assert "only anna@example.org or the owners" in refused
    assert bot.member("anna@example.org")["lists"] == ["youth"]


def test_stranger_is_refused_at_rcpt(bot: Bot) -> None:
    with smtplib.SMTP("127.0.0.1", bot.daemon.port, timeout=30) as client:
        client.ehlo()
        client.mail("stranger@example.com")
        code, _ = client.rcpt("bot@myclub.org")
    assert code == 550


def expected_help(sender: str, club: Store) -> list[str]:
    loaded = club.load()
    actor = Actor.for_sender(loaded, sender)
    found = []

    def walk(group: click.Group, words: tuple[str, ...]) -> None:
        context = click.Context(group)
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if isinstance(command, click.Group):
                walk(command, (*words, name))
            elif command is not None and may_use(command, loaded, actor):
                found.append(" ".join((*words, name)))

    walk(command_group, ())
    return found


@pytest.mark.parametrize("sender", ["anna@example.org", "tom@example.org", "admin@myclub.org"])
def test_help_lists_exactly_the_commands_the_sender_may_use(bot: Bot, club: Store, sender: str) -> None:
    if sender == "admin@myclub.org":
        mark = len(bot.daemon.lines)
        member_add(club, Actor.shell(), sender, "Admin", role="admin")
        # Logged by the reload that reads the change, just before it puts it in force.
        bot.daemon.wait_for_log(lambda line: f"membership: {sender} added" in line, start=mark)
    text = reply_text(bot.mail(sender, "help\r\n"))
    shown = [
        m[1]
        for m in re.finditer(
            r"^  ((?:list|member|held|queue|config|status|remind|bounces|archive)\b[a-z ]*?)"
            r"(?: [A-Z\[]|$)",
            text,
            re.MULTILINE,
        )
    ]
    assert shown == expected_help(sender, club)
    assert ("member remove" in shown) == (sender != "anna@example.org")
    assert ("held approve" in shown) == (sender != "anna@example.org")
    assert "member join" in shown


def test_hostile_input_changes_nothing_and_breaks_nothing(bot: Bot, club_dir: Path) -> None:
    before = (club_dir / "members.toml").read_text()
    body = (
        "init --domain evil.example --admin a@evil.example\r\n"
        "member import /etc/passwd\r\n"
        "run\r\n"
        "subscribe youth; rm -rf /\r\n"
        'member set anna@example.org --name "x\r\nBcc: victim@example.com"\r\n'
    ) + "who youth\r\n" * 1000
    text = reply_text(bot.mail("anna@example.org", body))
    assert "Cannot read this line" in text
    assert text.count("cannot be used by mail") == 3
    assert "No such option '-r'" in text
    assert text.count("> who youth") == 20 - 6
    assert "more lines were ignored" in text
    assert (club_dir / "members.toml").read_text() == before
    big = reply_text(bot.mail("anna@example.org", "lists\r\n" + ("x" * 998 + "\r\n") * 9000))
    assert "youth@myclub.org" in big
    broken = bot.mail(
        "anna@example.org",
        "--b\r\nContent-Type: text/plain\r\n\r\nlists\r\n",
        headers='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n',
    )
    assert "youth@myclub.org" in reply_text(broken)
    undecodable = bot.mail(
        "anna@example.org",
        "lists \xff\xfe\r\n".encode("latin-1").decode("latin-1"),
        headers="Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 8bit\r\n",
    )
    assert undecodable.rcpt_tos == ["anna@example.org"]
    assert (club_dir / "members.toml").read_text() == before


def test_html_only_mail_is_read(bot: Bot) -> None:
    html = "<html><body><p>lists</p><blockquote>leave youth</blockquote></body></html>\r\n"
    text = reply_text(
        bot.mail(
            "anna@example.org",
            html,
            headers="MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n",
        )
    )
    assert "> lists" in text and "leave youth" not in text


def test_no_loop_with_an_auto_responder(tmp_path: Path, club_template: Path) -> None:
    """Its own club and daemon: here the smarthost answers each message with an out-of-office reply."""
    club_dir = populate(copy_club(club_template, tmp_path / "lists.d")).directory
    answered = []
    port = {}
    senders: list[threading.Thread] = []

    def auto_reply(transaction: Transaction) -> None:
        if len(answered) >= 20:  # the responder itself is bounded, so the test always ends
            return
        answered.append(transaction)
        polite = len(answered) % 2 == 0
        headers = "Auto-Submitted: auto-replied\r\n" if polite else ""
        message = (
            f"From: {transaction.rcpt_tos[0]}\r\nTo: bot@myclub.org\r\nSubject: Out of the office\r\n"
            f"{headers}\r\nI am away until Monday.\r\n"
        )

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port["daemon"], timeout=30) as client:
                client.sendmail(transaction.rcpt_tos[0], ["bot@myclub.org"], message)

        thread = threading.Thread(target=send)
        senders.append(thread)
        thread.start()

    with (
        RemoteMTA(behaviour=Behaviour(delivered=auto_reply)) as sink,
        DaemonProcess(club_dir, tmp_path / "state.sqlite3", smarthost=f"127.0.0.1:{sink.port}") as daemon,
    ):
        port["daemon"] = daemon.port
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.sendmail(
                "anna@example.org", ["bot@myclub.org"], "From: anna@example.org\r\nSubject: lists\r\n\r\n"
            )
        assert sink.wait_for(lambda s: len(s.transactions) >= 1)
        daemon.wait_for_log(lambda line: "bot: no reply to anna@example.org" in line)
        assert len(sink.transactions) == 1
        for thread in senders:  # done before the daemon stops, which would answer them 421
            thread.join(30)


def test_remind_and_reminders_by_mail(bot: Bot, club_dir: Path) -> None:
    reminders = club_dir / "reminders.toml"
    first = reply_text(bot.mail("anna@example.org", "remind youth tomorrow 18:00 Bring shoes\r\n"))
    assert not reminders.exists() or "Bring shoes" not in reminders.read_text()
    done = reply_text(bot.mail("anna@example.org", f"confirm {TOKEN.search(first)[1]}\r\n"))  # type: ignore[index]
    assert "Bring shoes" in done
    stored = reminders.read_text()
    assert 'to = "youth"' in stored and "Bring shoes" in stored
    listing = reply_text(bot.mail("anna@example.org", "reminders\r\n"))
    assert "youth" in listing and "Bring shoes" in listing
    other = reply_text(bot.mail("anna@example.org", "remind trainer tomorrow 18:00 Not my list\r\n"))
    refused = reply_text(bot.mail("anna@example.org", f"confirm {TOKEN.search(other)[1]}\r\n"))  # type: ignore[index]
    assert "only those who may post to trainer@myclub.org" in refused
    assert "Not my list" not in reminders.read_text()
