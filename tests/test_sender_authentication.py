"""Who may post, checked through a real ``clublist run``: SPF, DKIM and DMARC at DATA, XFORWARD.

One daemon for the module, with the loopback DNS responder as its resolver and keys made here.
Sessions from 127.0.0.1 are untrusted clients whose IP is in no domain's SPF record (and
127.0.0.1 is a trusted proxy, so XFORWARD can name another client); 127.0.0.2 is in
listen.trusted_networks; 127.0.0.3 is neither.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from authkeys import DKIMKey, domain_records
from click.testing import CliRunner
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli import main as clublist_main
from clublist.club.store import Store

INSIDE_SPF = "192.0.2.25"  # in example.org's and nodmarc.example's SPF records
OUTSIDE_SPF = "198.51.100.7"
DNS_TIMEOUT = 1.0


@dataclass
class Club:
    directory: Path
    state: Path
    daemon: DaemonProcess
    sink: RemoteMTA
    dns: DNSServer
    key: DKIMKey
    other_key: DKIMKey

    def held(self, *args: str) -> str:
        result = CliRunner().invoke(
            clublist_main, ["--dir", str(self.directory), "--state", str(self.state), "held", *args]
        )
        assert result.exit_code == 0, result.output
        return result.output

    def delivered(self, message_id: str, count: int = 1) -> list[Transaction]:
        """The deliveries of one post, once *count* have arrived."""

        def copies(sink: RemoteMTA) -> list[Transaction]:
            return [t for t in sink.transactions if t.message["Message-ID"] == f"<{message_id}>"]

        assert self.sink.wait_for(lambda s: len(copies(s)) >= count), f"{message_id} not delivered"
        return copies(self.sink)


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    key, other_key = DKIMKey.generate(), DKIMKey.generate()
    records = {
        **domain_records(
            "example.org", spf="v=spf1 ip4:192.0.2.0/24 -all", dmarc="v=DMARC1; p=reject", key=key
        ),
        **domain_records("nodmarc.example", spf="v=spf1 ip4:192.0.2.0/24 -all"),
    }
    root = tmp_path_factory.mktemp("authclub")
    directory = root / "lists.d"
    admin = Actor.shell()
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(directory)
    list_create(store, admin, "youth", prefix="[Youth]")
    list_create(store, admin, "open", unauthenticated="accept")
    member_add(store, admin, "anna@example.org", "Anna", ("youth", "open"))
    member_add(store, admin, "carl@nodmarc.example", "Carl", ("youth", "open"))
    member_add(store, admin, "hank@hang.example", "Hank", ("youth",))
    with DNSServer(records, hang=["hang.example"]) as dns, RemoteMTA() as sink:
        for setting, value in [
            ("listen.trusted_networks", ["127.0.0.2"]),
            ("delivery.dns_servers", ["127.0.0.1"]),
            ("delivery.dns_port", dns.port),
            ("delivery.dns_timeout", DNS_TIMEOUT),
        ]:
            config_set(store, admin, setting, value)
        state = root / "var" / "state.sqlite3"
        with DaemonProcess(directory, state, smarthost=f"127.0.0.1:{sink.port}") as daemon:
            yield Club(directory, state, daemon, sink, dns, key, other_key)


def post(message_id: str, author: str = "Anna <anna@example.org>", to: str = "youth@myclub.org") -> bytes:
    return (
        f"From: {author}\r\nTo: {to}\r\nSubject: Training {message_id}\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nBring shoes.\r\n"
    ).encode()


def send(
    club: Club,
    message: bytes,
    sender: str = "anna@example.org",
    to: str = "youth@myclub.org",
    *,
    source: str = "127.0.0.1",
    xforward: str = "",
) -> tuple[int, bytes]:
    """One SMTP transaction; the reply to DATA (or to the first command refused)."""
    with smtplib.SMTP("127.0.0.1", club.daemon.port, timeout=30, source_address=(source, 0)) as client:
        client.ehlo("mail.sender.example")
        if xforward:
            code, text = client.docmd("XFORWARD", xforward)
            assert code == 250, text
        for reply in (client.mail(sender), client.rcpt(to)):
            if reply[0] != 250:
                return reply
        return client.data(message)


def results(transaction: Transaction) -> list[str]:
    return [" ".join(str(v).split()) for v in transaction.message.get_all("Authentication-Results", [])]


# --- Done when 1: the five cases -----------------------------------------------------


def test_a_dkim_signed_post_from_outside_spf_is_delivered_with_dkim_and_dmarc_pass(club: Club) -> None:
    code, _ = send(club, club.key.sign(post("signed@example.org"), "example.org"))
    assert code == 250
    copy = club.delivered("signed@example.org")[0]
    (ours,) = results(copy)
    assert ours.startswith("myclub.org; spf=fail (client-ip 127.0.0.1) smtp.mailfrom=example.org;")
    assert "dkim=pass header.d=example.org header.s=sel" in ours
    assert "dmarc=pass (p=reject) header.from=example.org" in ours


def test_the_same_from_unsigned_and_outside_spf_is_refused_during_data(club: Club) -> None:
    code, text = send(club, post("forged@example.org"))
    assert code == 550 and text.startswith(b"5.7.26 example.org publishes the DMARC policy p=reject")
    send(club, club.key.sign(post("after-forged@example.org"), "example.org"))
    club.delivered("after-forged@example.org")
    assert not [t for t in club.sink.transactions if t.message["Message-ID"] == "<forged@example.org>"]


def test_an_unauthenticated_post_without_dmarc_is_held_and_held_show_says_why(club: Club) -> None:
    code, text = send(
        club, post("held@nodmarc.example", "Carl <carl@nodmarc.example>"), "carl@nodmarc.example"
    )
    assert code == 250 and b"held for approval" in text
    held = [
        h for h in json.loads(club.held("ls", "--json")) if h["subject"] == "Training held@nodmarc.example"
    ]
    assert len(held) == 1 and "carl@nodmarc.example could not be authenticated" in held[0]["reason"]
    shown = json.loads(club.held("show", str(held[0]["id"]), "--json"))
    assert "could not be authenticated" in shown["reason"] and "spf=fail" in shown["reason"]
    assert "dmarc=none header.from=nodmarc.example" in shown["authentication"]

    def is_notice(subject: object) -> bool:
        return str(subject).startswith("Held for ") and "Training held@nodmarc.example [held " in str(subject)

    assert club.sink.wait_for(lambda sink: any(is_notice(t.message["Subject"]) for t in sink.transactions))
    (notice,) = [t.message for t in club.sink.transactions if is_notice(t.message["Subject"])]
    assert "could not be authenticated" in notice.get_content()


def test_posting_unauthenticated_accept_delivers_and_records_the_result(club: Club) -> None:
    message = post("accepted@nodmarc.example", "Carl <carl@nodmarc.example>", to="open@myclub.org")
    code, _ = send(club, message, "carl@nodmarc.example", "open@myclub.org")
    assert code == 250
    (ours,) = results(club.delivered("accepted@nodmarc.example")[0])
    assert "spf=fail" in ours and "dkim=none" in ours and "dmarc=none header.from=nodmarc.example" in ours


def test_spf_pass_for_an_aligned_envelope_domain_is_accepted(club: Club) -> None:
    code, _ = send(club, post("spf@example.org"), xforward=f"ADDR={INSIDE_SPF} HELO=mail.example.org")
    assert code == 250
    copy = club.delivered("spf@example.org")[0]
    (ours,) = results(copy)
    assert f"spf=pass (client-ip {INSIDE_SPF}) smtp.mailfrom=example.org" in ours and "dmarc=pass" in ours
    assert (
        f"[{INSIDE_SPF}]" in copy.message["Received"] and "via proxy [127.0.0.1]" in copy.message["Received"]
    )


def test_of_two_signatures_the_second_may_be_the_one_that_verifies(club: Club) -> None:
    signed = club.other_key.sign(club.key.sign(post("two@example.org"), "example.org"), "example.org")
    code, _ = send(club, signed)
    assert code == 250
    (ours,) = results(club.delivered("two@example.org")[0])
    assert ours.count("dkim=fail") == 1 and ours.count("dkim=pass") == 1 and "dmarc=pass" in ours


# --- Done when 2, 3, 4, 5 --------------------------------------------------------------


def test_a_forged_authentication_results_of_ours_is_removed(club: Club) -> None:
    forged = b"Authentication-Results: myclub.org; dkim=pass header.d=example.org\r\n"
    others = b"Authentication-Results: mx.example.net; spf=pass\r\n"
    code, _ = send(club, club.key.sign(forged + others + post("forgedar@example.org"), "example.org"))
    assert code == 250
    found = results(club.delivered("forgedar@example.org")[0])
    assert [r for r in found if r.startswith("myclub.org")] == [
        r for r in found if r.startswith("myclub.org; spf=")
    ]
    assert len(found) == 2 and "mx.example.net; spf=pass" in found


def test_a_hanging_dns_server_gives_451_while_other_sessions_go_on(club: Club) -> None:
    replies: list[tuple[int, bytes]] = []
    before = club.dns.count("hang.example")
    started = time.monotonic()
    hanging = threading.Thread(
        target=lambda: replies.append(
            send(club, post("hang@hang.example", "Hank <hank@hang.example>"), "hank@hang.example")
        )
    )
    hanging.start()
    deadline = time.monotonic() + 30
    while club.dns.count("hang.example") == before and time.monotonic() < deadline:
        hanging.join(0.01)  # waits for the daemon to ask the silent server, not for a fixed time
    assert club.dns.count("hang.example") > before
    code, _ = send(
        club,
        post("meanwhile@nodmarc.example", "Carl <carl@nodmarc.example>"),
        "carl@nodmarc.example",
        source="127.0.0.2",
    )
    answered_meanwhile = hanging.is_alive()
    hanging.join(30)
    elapsed = time.monotonic() - started
    assert code == 250 and answered_meanwhile  # the trusted post was accepted while the other waited
    ((hang_code, hang_text),) = replies
    assert hang_code == 451 and hang_text.startswith(b"4.7.26 ")
    print(f"\n451 after {elapsed:.2f} s with delivery.dns_timeout = {DNS_TIMEOUT} s")
    (ours,) = results(club.delivered("meanwhile@nodmarc.example")[0])
    assert ours == "myclub.org; none (127.0.0.2 is in listen.trusted_networks)"


def test_xforward_addr_alone_decides_spf(club: Club) -> None:
    outside = send(club, post("xf-out@example.org"), xforward=f"ADDR={OUTSIDE_SPF}")
    inside = send(club, post("xf-in@example.org"), xforward=f"ADDR={INSIDE_SPF}")
    assert outside[0] == 550 and inside[0] == 250


def test_xforward_from_an_untrusted_peer_is_neither_announced_nor_accepted(club: Club) -> None:
    with smtplib.SMTP("127.0.0.1", club.daemon.port, timeout=30, source_address=("127.0.0.3", 0)) as client:
        client.ehlo("mail.sender.example")
        assert not client.has_extn("xforward")
        code, _ = client.docmd("XFORWARD", f"ADDR={INSIDE_SPF}")
    assert code == 550
    with smtplib.SMTP("127.0.0.1", club.daemon.port, timeout=30) as client:
        client.ehlo("proxy.example")
        assert client.has_extn("xforward") and "ADDR" in client.esmtp_features["xforward"]
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AGFubmEAc2VjcmV0")
    assert code == 502


def test_a_batv_envelope_of_a_member_with_an_aligned_signature_is_accepted(club: Club) -> None:
    signed = club.key.sign(post("batv@example.org"), "example.org")
    code, _ = send(club, signed, "prvs=1234abcd=anna@example.org")
    assert code == 250
    club.delivered("batv@example.org")
    srs = "SRS0=HHH=TT=example.org=anna@forwarder.example"
    code, _ = send(club, club.key.sign(post("srs@example.org"), "example.org"), srs)
    assert code == 250


def test_xforward_is_refused_inside_a_transaction_and_for_unknown_attributes(club: Club) -> None:
    with smtplib.SMTP("127.0.0.1", club.daemon.port, timeout=30) as client:
        client.ehlo("proxy.example")
        assert client.docmd("XFORWARD", "COLOUR=blue")[0] == 501
        assert client.docmd("XFORWARD", "ADDR=IPV6:2001:db8::1 NAME=[UNAVAILABLE]")[0] == 250
        client.mail("anna@example.org")
        assert client.docmd("XFORWARD", f"ADDR={INSIDE_SPF}")[0] == 503
