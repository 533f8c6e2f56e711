"""Postfix in front of ``clublist run``, before the queue, against a real private Postfix.

One Postfix instance for the module (tests/postfix.py says what a private instance needs),
configured with ``clublist postfix``'s own output: its main.cf settings, its master.cf
services and its transport map go in as printed, then its commands run (``postmap``,
``postfix reload``).  Test clients talk to Postfix's public smtpd as senders on the Internet
would; the members' and the stranger's mail servers are recording sinks Postfix reaches by
transport entries.
"""

from __future__ import annotations

import json
import shlex
import smtplib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner, Result
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import Behaviour, RemoteMTA, Transaction
from postfix import PrivatePostfix, free_port, settle, unavailable

from clublist.actions import Actor
from clublist.actions.config import init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club.store import Store

pytestmark = pytest.mark.postfix

REFUSED = "carl@refuse.example"
MEMBERS = ("anna@example.org", "bert@example.org", REFUSED)
# Test clients connect from 127.0.0.2, Postfix connects to clublist from 127.0.0.1: only
# XFORWARD tells clublist the client's address, which example.org's SPF record names.
CLIENT = "127.0.0.2"
ZONE = {("example.org", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"]}
# Small limits keep the size tests quick; the rule is the same at 10 MB.
LISTEN_LIMIT = 300_000
RELAY_LIMIT = 400_000


def post(number: int, sender: str = "anna@example.org", to: str = "youth@myclub.org", body: str = "") -> str:
    return (
        f"From: Anna <{sender}>\r\nTo: {to}\r\nSubject: Training {number}\r\n"
        f"Message-ID: <p{number}@example.org>\r\n\r\nBring shoes.\r\n{body}"
    )


def refuse_carl(address: str) -> str | None:
    if address.lower() == REFUSED:
        return f"550 5.1.1 <{REFUSED}>: Recipient address rejected: User unknown"
    return None


@dataclass
class Front:
    """Postfix on ``public`` in front of clublist; what each side received."""

    postfix: PrivatePostfix
    public: int
    club_dir: Path
    state: Path
    daemon: DaemonProcess
    members: RemoteMTA
    strangers: RemoteMTA
    ca: trustme.CA
    policy_port: int

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--dir", str(self.club_dir), "--state", str(self.state), *args])

    def send(
        self,
        sender: str,
        recipients: list[str],
        message: str | bytes,
        *,
        tls: bool = False,
        **options: list[str],
    ) -> dict:
        with smtplib.SMTP("127.0.0.1", self.public, timeout=60, source_address=(CLIENT, 0)) as client:
            if tls:
                context = ssl.create_default_context()
                self.ca.configure_trust(context)
                client.starttls(context=context)
                client.ehlo()
            return client.sendmail(sender, recipients, message, **options)

    def queued(self, *addresses: str) -> list[dict]:
        """What Postfix holds in its queue from or for *addresses* (``postqueue -j``)."""
        return [
            entry
            for entry in self.postfix.queue_entries()
            if entry["sender"] in addresses or any(r["address"] in addresses for r in entry["recipients"])
        ]

    def delivered(self, number: int) -> list[Transaction]:
        return [t for t in self.members.transactions if t.message["Message-ID"] == f"<p{number}@example.org>"]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("front")
    club_dir, state = tmp / "lists.d", tmp / "var" / "clublist.sqlite3"
    store = Store(club_dir)
    init_club(club_dir, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    list_create(store, Actor.shell(), "youth", prefix="[Youth]")
    for address in MEMBERS:
        member_add(store, Actor.shell(), address, lists=("youth",))
    public, relay, clublist_port, policy_port = free_port(), free_port(), free_port(), free_port()
    # Postfix does STARTTLS on the public port with clublist's certificate (clublist postfix prints it).
    ca = trustme.CA()
    leaf = ca.issue_cert("postfix.test", "myclub.org", "127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    (tmp / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    with (
        RemoteMTA(Behaviour(rcpt=refuse_carl), smtputf8=True) as members,
        RemoteMTA(smtputf8=True) as strangers,
        DNSServer(ZONE) as dns,
    ):
        postfix = PrivatePostfix()
        try:
            front = Front(postfix, public, club_dir, state, None, members, strangers, ca, policy_port)  # type: ignore[arg-type]
            for key, value in [
                ("listen.port", str(clublist_port)),
                ("listen.policy_port", str(policy_port)),
                ("delivery.dns_servers", "127.0.0.1"),
                ("delivery.dns_port", str(dns.port)),
                ("listen.max_message_size", str(LISTEN_LIMIT)),
                ("delivery.max_message_size", str(RELAY_LIMIT)),
                ("tls.cert", str(tmp / "cert.pem")),
                ("tls.key", str(tmp / "key.pem")),
            ]:
                assert front.cli("config", "set", key, value).exit_code == 0
            postfix.write_base()
            postfix.start()
            printed = front.cli(
                "postfix",
                "--public",
                f"127.0.0.1:{public}",
                "--relay",
                f"127.0.0.1:{relay}",
                "-c",
                str(postfix.config),
                "--json",
            )
            assert printed.exit_code == 0, printed.output
            files = json.loads(printed.output)
            routes = {"example.org": members.port, "refuse.example": members.port}
            postfix.apply(files, routes | {"stranger.example": strangers.port})
            for command in files["clublist"]:
                result = front.cli(*shlex.split(command)[1:])
                assert result.exit_code == 0, result.output
            for command in files["commands"]:
                postfix.command(*shlex.split(command))
            postfix.wait_listening(public)
            postfix.wait_listening(relay)
            with DaemonProcess(club_dir, state, listen=f"127.0.0.1:{clublist_port}") as daemon:
                front.daemon = daemon
                yield front
        finally:
            postfix.stop()


@dataclass(frozen=True)
class Refusal:
    stage: str  # "RCPT" or "DATA"
    code: int
    text: str


def refusal(front: Front, sender: str, recipients: list[str], message: str) -> Refusal:
    """How the public smtpd refused *message* (fails if it was accepted)."""
    try:
        refused = front.send(sender, recipients, message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return Refusal("RCPT", code, text.decode())
    except smtplib.SMTPDataError as exc:
        return Refusal("DATA", exc.smtp_code, exc.smtp_error.decode())
    raise AssertionError(f"accepted: {refused}")


def test_a_members_post_goes_through_postfix_to_every_member(front: Front) -> None:
    assert front.send("anna@example.org", ["youth@myclub.org"], post(1)) == {}
    assert front.members.wait_for(lambda m: len({r for t in front.delivered(1) for r in t.rcpt_tos}) == 2)
    recipients = sorted(r for t in front.delivered(1) for r in t.rcpt_tos)
    assert recipients == ["anna@example.org", "bert@example.org"]
    message = front.delivered(1)[0].message
    # Postfix passed the real client on (XFORWARD): SPF passed for it, and clublist's trace names it.
    assert f"spf=pass (client-ip {CLIENT})" in message["Authentication-Results"]
    ours = [r for r in message.get_all("Received", []) if "(clublist)" in r]
    assert len(ours) == 1 and f"([{CLIENT}]) (via proxy [127.0.0.1])" in " ".join(ours[0].split())
    assert message["List-Id"] == "Youth <youth.myclub.org>"
    assert str(message["Subject"]) == "[Youth] Training 1"
    assert message["List-Post"] == "<mailto:youth@myclub.org>"


def test_postfix_does_starttls_on_the_public_port(front: Front) -> None:
    assert front.send("anna@example.org", ["youth@myclub.org"], post(11), tls=True) == {}
    assert front.members.wait_for(lambda m: len({r for t in front.delivered(11) for r in t.rcpt_tos}) == 2)
    received = front.delivered(11)[0].message.get_all("Received")
    public_hop = next(r for r in received if f"[{CLIENT}]" in r and "(Postfix)" in r)
    assert "with ESMTPS" in public_hop


def test_strangers_and_unknown_addresses_are_refused_in_their_own_session(front: Front) -> None:
    mallory = "mallory@stranger.example"
    # clublist's policy service refuses them at RCPT, before the message is sent.
    stranger = refusal(front, mallory, ["youth@myclub.org"], post(2, mallory))
    assert (stranger.stage, stranger.code) == ("RCPT", 550) and "not a member" in stranger.text
    unknown = refusal(front, mallory, ["nobody@myclub.org"], post(3, mallory))
    assert (unknown.stage, unknown.code) == ("RCPT", 550) and "no such list or address" in unknown.text
    relay = refusal(front, mallory, ["someone@elsewhere.example"], post(4))
    assert relay.code >= 400 and "Relay access denied" in relay.text  # Postfix's own check
    # A member's envelope with a stranger's From gets past RCPT; the proxy refuses it at DATA.
    forged = refusal(front, "anna@example.org", ["youth@myclub.org"], post(12, mallory))
    assert (forged.stage, forged.code) == ("DATA", 550) and mallory in forged.text
    # Postfix kept nothing, so there is nothing it could bounce to the (forged) sender.
    assert front.queued(mallory, "youth@myclub.org", "nobody@myclub.org") == []
    assert front.send("anna@example.org", ["youth@myclub.org"], post(5)) == {}
    assert front.members.wait_for(lambda m: len(front.delivered(5)) > 0)
    assert front.strangers.transactions == []
    assert not any(front.delivered(n) for n in (2, 3, 4, 12))


def test_the_policy_service_answers_postfixs_protocol(front: Front) -> None:
    def ask(connection: socket.socket, **attributes: str) -> bytes:
        request = {"request": "smtpd_access_policy", **attributes}
        connection.sendall("".join(f"{k}={v}\n" for k, v in request.items()).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = connection.recv(4096)
            assert chunk, answer
            answer += chunk
        return answer

    with socket.create_connection(("127.0.0.1", front.policy_port), timeout=30) as connection:
        member = {"sender": "anna@example.org", "recipient": "youth@myclub.org"}
        assert ask(connection, protocol_state="RCPT", **member) == b"action=DUNNO\n\n"
        stranger = ask(
            connection, protocol_state="RCPT", sender="x@stranger.example", recipient="youth@myclub.org"
        )
        assert stranger.startswith(b"action=550 5.7.1 ")
        assert ask(connection, protocol_state="DATA", sender="x@stranger.example") == b"action=DUNNO\n\n"
        connection.sendall(b"no equals sign\n\n")  # not the protocol: dropped, never half an answer
        assert connection.recv(4096) == b""


def test_a_member_address_the_mail_server_refuses_comes_back_as_a_bounce_for_that_member(
    front: Front,
) -> None:
    mark = len(front.daemon.lines)
    assert front.send("anna@example.org", ["youth@myclub.org"], post(6)) == {}
    # Postfix's own delivery report for carl reaches clublist's bounce address.
    front.daemon.wait_for_log(
        lambda line: "accepted message" in line and " from <> " in line and "bounce" in line, start=mark
    )
    shown = front.cli("bounces", "show", REFUSED, "--json")
    assert shown.exit_code == 0, shown.output
    events = [
        (e["kind"], e["status"], e["list_name"], e["source"]) for e in json.loads(shown.output)["events"]
    ]
    assert ("hard", "5.1.1", "youth", "dsn") in events
    listed = json.loads(front.cli("bounces", "ls", "--json").output)
    assert [b["address"] for b in listed] == [REFUSED]
    front.postfix.wait_queue_empty()


def test_while_clublist_is_down_postfix_answers_4xx_and_the_retry_goes_through(front: Front) -> None:
    front.daemon.stop()
    try:
        down = refusal(front, "anna@example.org", ["youth@myclub.org"], post(7))
        assert 400 <= down.code < 500, down
        assert front.queued("youth@myclub.org") == []
    finally:
        front.daemon.start()
    assert front.send("anna@example.org", ["youth@myclub.org"], post(7)) == {}
    assert front.members.wait_for(lambda m: len({r for t in front.delivered(7) for r in t.rcpt_tos}) == 2)


def test_a_post_just_under_the_limit_is_delivered_and_one_over_is_refused_at_data(front: Front) -> None:
    def sized(number: int, size: int) -> str:
        head = post(number)
        line = "x" * 76 + "\r\n"
        return head + line * ((size - len(head)) // len(line))

    under = sized(8, LISTEN_LIMIT - 1024)
    assert LISTEN_LIMIT - 1024 - 78 < len(under) <= LISTEN_LIMIT - 1024
    assert front.send("anna@example.org", ["youth@myclub.org"], under) == {}
    assert front.members.wait_for(lambda m: len({r for t in front.delivered(8) for r in t.rcpt_tos}) == 2)
    # Above clublist's limit but under Postfix's: refused during DATA, never 250 and then 552.
    over = sized(9, RELAY_LIMIT - 1024)
    too_big = refusal(front, "anna@example.org", ["youth@myclub.org"], over)
    assert (too_big.stage, too_big.code) == ("DATA", 552), too_big
    assert front.queued("youth@myclub.org") == []
    failed = json.loads(front.cli("queue", "ls", "--status", "failed", "--json").output)
    assert [row for row in failed if "Training 9" in row.get("subject", "")] == []
    assert front.delivered(9) == []


def test_utf8_names_and_subject_with_smtputf8_reach_the_members(front: Front) -> None:
    message = (
        "From: Jürgen Müller <anna@example.org>\r\nTo: Jugend Grüppe <youth@myclub.org>\r\n"
        "Subject: Grüße vom Training\r\nMessage-ID: <p10@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nBis später!\r\n"
    ).encode()
    assert front.send("anna@example.org", ["youth@myclub.org"], message, mail_options=["SMTPUTF8"]) == {}
    assert front.members.wait_for(lambda m: len({r for t in front.delivered(10) for r in t.rcpt_tos}) == 2)
    [first, *_] = front.delivered(10)
    assert "SMTPUTF8" in first.mail_options  # clublist to Postfix, Postfix to the members' server
    delivered = first.message
    assert str(delivered["Subject"]) == "[Youth] Grüße vom Training"
    assert "Jürgen Müller" in str(delivered["From"]) or "Jürgen Müller" in str(delivered["Reply-To"])
    assert delivered.get_content().strip() == "Bis später!"


def test_clublist_postfix_check_passes_and_reports_a_missing_line(front: Front) -> None:
    args = ["postfix", "--check", "--public", f"127.0.0.1:{front.public}", "-c", str(front.postfix.config)]
    checked = front.cli(*args, "--json")
    assert checked.exit_code == 0, checked.output
    findings = json.loads(checked.output)
    assert {f["status"] for f in findings} == {"ok"}, findings
    public = f"127.0.0.1:{front.public}/inet"
    front.postfix.postconf("-X", "relay_domains")
    front.postfix.postconf("-PX", f"{public}/smtpd_proxy_options")
    front.postfix.postconf("-e", "message_size_limit = 100000")
    try:
        checked = front.cli(*args)
        assert checked.exit_code == 1
        assert "relay_domains is '', clublist needs 'myclub.org'" in checked.output
        assert "postconf -c" in checked.output and "-e 'relay_domains = myclub.org'" in checked.output
        assert "lacks -o smtpd_proxy_options=speed_adjust" in checked.output
        assert f"message_size_limit is '100000', clublist needs '{RELAY_LIMIT}'" in checked.output
    finally:
        front.postfix.postconf("-e", "relay_domains = myclub.org")
        front.postfix.postconf("-P", f"{public}/smtpd_proxy_options=speed_adjust")
        front.postfix.postconf("-e", f"message_size_limit = {RELAY_LIMIT}")
    assert front.cli(*args).exit_code == 0


def test_clublist_check_looks_at_the_postfix_in_front(front: Front) -> None:
    result = CliRunner().invoke(
        main,
        ["--dir", str(front.club_dir), "--state", str(front.state), "check", "--only", "postfix", "--json"],
        env={"MAIL_CONFIG": str(front.postfix.config)},
    )
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)
    assert {f["status"] for f in findings} == {"ok"}, findings
    assert any(f["check"] == "postfix.transport myclub.org" for f in findings)


def test_clublist_check_leaves_a_postfix_that_is_not_in_front_alone(front: Front, tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    (tmp_path / "master.cf").write_text("")
    settle(tmp_path)
    result = CliRunner().invoke(
        main,
        ["--dir", str(front.club_dir), "--state", str(front.state), "check", "--only", "postfix", "--json"],
        env={"MAIL_CONFIG": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    [finding] = json.loads(result.output)
    assert finding["status"] == "info"
    assert "does not take mail for myclub.org" in finding["detail"]
