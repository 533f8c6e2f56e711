"""DKIM signing through a real ``clublist run``: every kind of mail it sends verifies with dkimpy.

One daemon for the module: a key made with ``clublist dkim keygen``, its record (from ``dkim show
--json``) served by the loopback DNS responder, and a sink as smarthost that receives everything,
posts, bot replies, hold notices, reminders and the RFC 3464 report to the administrator.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import dns.exception
import dns.resolver
import pytest
from click.testing import CliRunner
from conftest import CLUBLIST
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import Behaviour, RemoteMTA, Transaction

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club.model import DeliverySection, DkimSection, Site
from clublist.club.store import Store
from clublist.dns import resolver_for
from clublist.outbound import signing
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db, queue

GONE = "gone@example.org"
POST = (
    b"From: Anna via Youth <youth@myclub.org>\r\nTo: youth@myclub.org\r\nSubject: [Youth] Training\r\n"
    b"Message-ID: <1@example.org>\r\nDate: Tue, 01 Dec 2026 18:00:00 +0000\r\n"
    b"List-Id: Youth <youth.myclub.org>\r\n"
    b"List-Unsubscribe: <mailto:bot@myclub.org?subject=unsubscribe%20youth>\r\n"
    b"\r\nTraining is at six.\r\n"
)
DnsFunc = Callable[..., bytes | None]


def dns_lookup(server: DNSServer) -> DnsFunc:
    """dkimpy's ``dnsfunc``: the TXT record from the loopback responder, strings joined."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text.rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    return lookup


def clublist(directory: Path, state: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--dir", str(directory), "--state", str(state), *args])
    assert result.exit_code == 0, result.output
    return result.output


def verifies(content: bytes, lookup: DnsFunc) -> bool:
    return bool(dkim.verify(content, dnsfunc=lookup))


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("signing")
    directory, state = root / "lists.d", root / "var" / "clublist.sqlite3"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store, shell = Store(directory), Actor.shell()
    config_set(store, shell, "listen.trusted_networks", ["127.0.0.0/8"])  # posts from here count
    list_create(store, shell, "youth", prefix="[Youth]")
    list_create(store, shell, "board", posting="moderated", owners=["admin@myclub.org"])
    member_add(store, shell, "anna@example.org", "Anna", ("youth", "board"))
    member_add(store, shell, GONE, "Gone", ("youth",))
    due = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    (directory / "reminders.toml").write_text(
        '[[reminder]]\nid = "fees"\nto = "anna@example.org"\nsubject = "Fees are due"\ntext = "Pay."\n'
        f"at = {due.isoformat()}\nstart = {(due - timedelta(hours=1)).isoformat()}\n"
    )
    clublist(directory, state, "dkim", "keygen", "--selector", "s1")
    return directory, state


@pytest.fixture(scope="module")
def record(club: tuple[Path, Path]) -> dict[str, str]:
    return json.loads(clublist(*club, "dkim", "show", "--json"))


@pytest.fixture(scope="module")
def lookup(record: dict[str, str]) -> Iterator[DnsFunc]:
    with DNSServer({(record["name"], "TXT"): [record["record"]]}) as server:
        yield dns_lookup(server)


@pytest.fixture(scope="module")
def sink() -> Iterator[RemoteMTA]:
    refuse = {GONE: f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown"}
    with RemoteMTA(Behaviour(rcpt=lambda address: refuse.get(address.lower()))) as server:
        yield server


@pytest.fixture(scope="module")
def daemon(club: tuple[Path, Path], sink: RemoteMTA) -> Iterator[DaemonProcess]:
    with DaemonProcess(*club, smarthost=f"127.0.0.1:{sink.port}") as process:
        yield process


def send(daemon: DaemonProcess, to: str, text: str, sender: str = "anna@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        assert client.sendmail(sender, [to], text.replace("\n", "\r\n")) == {}


def received(sink: RemoteMTA, match: Callable[[Transaction], bool]) -> Transaction:
    assert sink.wait_for(lambda s: any(match(t) for t in s.transactions)), [
        t.message["Subject"] for t in sink.transactions
    ]
    with sink.lock:
        return next(t for t in sink.transactions if match(t))


def test_dkim_show_json_has_exactly_the_documented_keys(record: dict[str, str]) -> None:
    assert set(record) == {"selector", "domain", "name", "record", "key_path"}
    assert record["name"] == "s1._domainkey.myclub.org" and record["record"].startswith("v=DKIM1; k=rsa; p=")
    assert Path(record["key_path"]).stat().st_mode & 0o777 == 0o600
    assert "lists.d" not in Path(record["key_path"]).parts


def test_keygen_sets_the_selector_keeping_comments_and_never_overwrites_a_key(
    club: tuple[Path, Path],
) -> None:
    directory, state = club
    text = (directory / "club.toml").read_text()
    assert 'selector = "s1"' in text and "# Lists are LIST@domain" in text
    standby = clublist(directory, state, "dkim", "keygen", "--selector", "s9", "--standby")
    assert "s9._domainkey.myclub.org" in standby and 'IN TXT ( "v=DKIM1; k=rsa; p=' in standby
    assert (directory / "club.toml").read_text() == text  # made, not yet signing
    again = CliRunner().invoke(
        main, ["--dir", str(directory), "--state", str(state), "dkim", "keygen", "--selector", "s9"]
    )
    assert again.exit_code == 1 and "never overwritten" in again.output and "Traceback" not in again.output
    assert (directory / "club.toml").read_text() == text


def test_a_post_verifies_and_a_tampered_copy_does_not(
    daemon: DaemonProcess, sink: RemoteMTA, lookup: DnsFunc
) -> None:
    send(daemon, "youth@myclub.org", "From: Anna <anna@example.org>\nSubject: Training\n\nAt six.\n")
    post = received(
        sink, lambda t: "Training" in str(t.message["Subject"]) and "anna@example.org" in t.rcpt_tos
    )
    assert verifies(post.content, lookup)
    signature = dkim.util.parse_tag_value(post.message["DKIM-Signature"].encode().replace(b"\r\n", b""))
    assert signature[b"d"] == b"myclub.org" and signature[b"c"] == b"relaxed/relaxed"
    signed = [h.strip() for h in signature[b"h"].split(b":")]
    for name in (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"list-id"):
        assert name in signed
    assert signed.count(b"from") == 2  # over-signed
    assert not verifies(post.content.replace(b"At six.", b"At ten."), lookup)
    assert not verifies(post.content.replace(b"Subject: [Youth]", b"Subject: [Y]"), lookup)


def test_a_bot_reply_verifies(daemon: DaemonProcess, sink: RemoteMTA, lookup: DnsFunc) -> None:
    send(daemon, "bot@myclub.org", "From: Anna <anna@example.org>\nSubject: commands\n\nlists\n")
    reply = received(
        sink, lambda t: "bot@myclub.org" in str(t.message["From"]) and "anna@example.org" in t.rcpt_tos
    )
    assert verifies(reply.content, lookup)


def test_a_hold_notice_verifies(daemon: DaemonProcess, sink: RemoteMTA, lookup: DnsFunc) -> None:
    send(daemon, "board@myclub.org", "From: Anna <anna@example.org>\nSubject: Budget\n\nNumbers.\n")
    notice = received(sink, lambda t: str(t.message["Subject"]).startswith("Held for "))
    assert verifies(notice.content, lookup)


def test_a_reminder_verifies(
    daemon: DaemonProcess, sink: RemoteMTA, lookup: DnsFunc, club: tuple[Path, Path]
) -> None:
    clublist(*club, "remind")
    reminder = received(sink, lambda t: "Fees are due" in str(t.message["Subject"]))
    assert verifies(reminder.content, lookup)


def test_the_delivery_report_to_the_administrator_verifies(
    daemon: DaemonProcess, sink: RemoteMTA, lookup: DnsFunc
) -> None:
    send(daemon, "youth@myclub.org", "From: Anna <anna@example.org>\nSubject: Hall\n\nHall 2.\n")
    report = received(sink, lambda t: "Undelivered mail: [Youth] Hall" in str(t.message["Subject"]))
    assert report.mail_from in ("", "<>") and report.rcpt_tos == ["admin@myclub.org"]
    assert report.message.get_content_type() == "multipart/report"
    assert verifies(report.content, lookup)


def test_a_verp_post_to_300_members_is_signed_once_and_every_copy_verifies(tmp_path: Path) -> None:
    """300 copies: several connections' worth (100 messages each) and more than the signer
    remembers bodies for, so neither a new connection nor a full cache signs again."""
    state = tmp_path / "var" / "clublist.sqlite3"
    key = signing.generate_key(signing.key_path(state, "s2"), "rsa")
    recipients = [f"member{i}@example.org" for i in range(300)]
    with (
        RemoteMTA() as sink,
        DNSServer({("s2._domainkey.myclub.org", "TXT"): [signing.dns_record(key)]}) as dns,
    ):
        site = Site(
            delivery=DeliverySection(mode="smarthost", smarthost=f"127.0.0.1:{sink.port}", verp=True),
            dkim=DkimSection(selector="s2"),
        )
        conn = db.connect(state)
        with db.transaction(conn):
            queue.enqueue(
                conn,
                kind="post",
                sender="bounces@myclub.org",
                recipients=recipients,
                content=POST,
                now=time.time(),
                list_name="youth",
                verp=True,
            )
        conn.close()
        config = DeliveryConfig.from_site(site, state)

        async def deliver() -> None:
            writer = db.Writer(state)
            worker = DeliveryWorker(writer, config, resolver_for(site))
            try:
                await worker.pass_once()
                await worker.drain(5)
            finally:
                writer.close()

        asyncio.run(deliver())
        assert config.signer is not None and config.signer.signatures == 1
        assert len(sink.transactions) == 300
        assert len({t.mail_from for t in sink.transactions}) == 300  # VERP: one envelope each
        assert len({t.message["DKIM-Signature"] for t in sink.transactions}) == 1
        lookup = functools.cache(dns_lookup(dns))
        assert all(verifies(t.content, lookup) for t in sink.transactions)


def deliver_once(
    site: Site, state: Path, content: bytes, recipients: list[str], **kwargs: object
) -> DeliveryConfig:
    """Queue *content* and run the real worker over it once; returns the config (and its signer)."""
    conn = db.connect(state)
    with db.transaction(conn):
        queue.enqueue(
            conn,
            kind=kwargs.pop("kind", "post"),  # type: ignore[arg-type]
            sender="bounces@myclub.org",
            recipients=recipients,
            content=content,
            now=time.time(),
            list_name="youth",
            **kwargs,  # type: ignore[arg-type]
        )
    conn.close()
    config = DeliveryConfig.from_site(site, state)

    async def deliver() -> None:
        writer = db.Writer(state)
        worker = DeliveryWorker(writer, config, resolver_for(site))
        try:
            await worker.pass_once()
            await worker.drain(5)
        finally:
            writer.close()

    asyncio.run(deliver())
    return config


def test_a_post_with_our_authentication_results_leaves_sealed(tmp_path: Path) -> None:
    state = tmp_path / "var" / "clublist.sqlite3"
    key = signing.generate_key(signing.key_path(state, "s3"), "rsa")
    results = b"Authentication-Results: myclub.org; dkim=pass header.d=example.org; dmarc=pass\r\n"
    with (
        RemoteMTA() as sink,
        DNSServer({("s3._domainkey.myclub.org", "TXT"): [signing.dns_record(key)]}) as dns,
    ):
        site = Site(
            delivery=DeliverySection(mode="smarthost", smarthost=f"127.0.0.1:{sink.port}"),
            dkim=DkimSection(selector="s3"),
        )
        config = deliver_once(site, state, results + POST, ["anna@example.org", "ben@example.org"])
        assert config.signer is not None and config.signer.seals == 1
        (copy,) = sink.transactions
        lookup = dns_lookup(dns)
        cv, sets, reason = dkim.arc_verify(copy.content, dnsfunc=lookup)
        assert cv == b"pass", reason
        assert [s["instance"] for s in sets] == [1]
        assert re.search(rb"ARC-Seal: i=1; cv=none;", copy.content)
        unfolded = b" ".join(copy.content.split())
        assert b"ARC-Authentication-Results: i=1; myclub.org; dkim=pass header.d=example.org" in unfolded
        assert verifies(copy.content, lookup)
        assert dkim.arc_verify(copy.content.replace(b"six", b"ten"), dnsfunc=lookup)[0] == b"fail"


def test_an_ed25519_selector_signs_beside_the_rsa_one(tmp_path: Path) -> None:
    state = tmp_path / "var" / "clublist.sqlite3"
    rsa_key = signing.generate_key(signing.key_path(state, "s4"), "rsa")
    ed_key = signing.generate_key(signing.key_path(state, "e4"), "ed25519")
    records = {
        ("s4._domainkey.myclub.org", "TXT"): [signing.dns_record(rsa_key)],
        ("e4._domainkey.myclub.org", "TXT"): [signing.dns_record(ed_key)],
    }
    with RemoteMTA() as sink, DNSServer(records) as dns:
        site = Site(
            delivery=DeliverySection(mode="smarthost", smarthost=f"127.0.0.1:{sink.port}"),
            dkim=DkimSection(selector="s4", ed25519_selector="e4"),
        )
        deliver_once(site, state, POST, ["anna@example.org"], kind="notice")
        (copy,) = sink.transactions
        algorithms = [
            dkim.util.parse_tag_value(v.encode().replace(b"\r\n", b""))[b"a"]
            for v in copy.message.get_all("DKIM-Signature")
        ]
        assert algorithms == [b"rsa-sha256", b"ed25519-sha256"]
        verifier, lookup = dkim.DKIM(copy.content), dns_lookup(dns)
        assert verifier.verify(0, dnsfunc=lookup) and verifier.verify(1, dnsfunc=lookup)


@pytest.mark.parametrize("chain", ["pass", "fail"])
def test_the_seal_continues_an_incoming_chain_with_its_validation(tmp_path: Path, chain: str) -> None:
    """RFC 8617: the next instance, cv=pass for a chain that validated at DATA, cv=fail otherwise."""
    state = tmp_path / "var" / "clublist.sqlite3"
    key = signing.generate_key(signing.key_path(state, "s5"), "rsa")
    forwarder = signing.SigningKey("fw", signing.generate_key(tmp_path / "fw.key", "rsa"))
    received = b"Authentication-Results: forwarder.example; dkim=pass header.d=example.org\r\n" + POST
    first = dkim.arc_sign(received, b"fw", b"forwarder.example", forwarder.pkcs1_pem(), b"forwarder.example")
    ours = f"Authentication-Results: myclub.org; dkim=none; arc={chain}\r\n".encode()
    records = {
        ("s5._domainkey.myclub.org", "TXT"): [signing.dns_record(key)],
        ("fw._domainkey.forwarder.example", "TXT"): [signing.dns_record(forwarder.key)],
    }
    with RemoteMTA() as sink, DNSServer(records) as dns:
        site = Site(
            delivery=DeliverySection(mode="smarthost", smarthost=f"127.0.0.1:{sink.port}"),
            dkim=DkimSection(selector="s5"),
        )
        deliver_once(site, state, ours + b"".join(first) + received, ["anna@example.org"])
        (copy,) = sink.transactions
        assert re.search(rb"ARC-Seal: i=2; cv=" + chain.encode() + b";", copy.content)
        cv, _sets, reason = dkim.arc_verify(copy.content, dnsfunc=dns_lookup(dns))
        # A chain sealed with cv=fail is ended: dkimpy reports it as terminated (None), never pass.
        assert cv == (b"pass" if chain == "pass" else None), reason


def test_run_refuses_to_start_when_the_selector_has_no_key(tmp_path: Path) -> None:
    directory, state = tmp_path / "lists.d", tmp_path / "var" / "clublist.sqlite3"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    clublist(directory, state, "config", "set", "dkim.selector", "gone")
    result = subprocess.run(
        [CLUBLIST, "--dir", str(directory), "--state", str(state), "run", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "clublist dkim keygen --selector gone" in result.stderr  # never sends unsigned by surprise
