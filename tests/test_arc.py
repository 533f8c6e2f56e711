"""ARC through a real ``clublist run``: a post DKIM-signed by its author's domain leaves sealed.

The author's domain (example.org: its key, SPF and DMARC) and the club's key are served by the
loopback DNS responder, which the daemon uses for every lookup (``delivery.dns_servers``).
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from authkeys import DKIMKey, domain_records
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import RemoteMTA
from test_signing import clublist, dns_lookup, received

from clublist.actions import Actor
from clublist.actions.config import init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.club.store import Store


@pytest.fixture(scope="module")
def author_key() -> DKIMKey:
    return DKIMKey.generate()


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, author_key: DKIMKey
) -> Iterator[tuple[Path, Path, DNSServer]]:
    root = tmp_path_factory.mktemp("arc")
    directory, state = root / "lists.d", root / "var" / "clublist.sqlite3"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store, shell = Store(directory), Actor.shell()
    list_create(store, shell, "youth", prefix="[Youth]")
    member_add(store, shell, "anna@example.org", "Anna", ("youth",))
    member_add(store, shell, "ben@example.net", "Ben", ("youth",))
    clublist(directory, state, "dkim", "keygen", "--selector", "s1")
    record = json.loads(clublist(directory, state, "dkim", "show", "--json"))
    records = {
        **domain_records(
            "example.org", spf="v=spf1 ip4:192.0.2.0/24 -all", dmarc="v=DMARC1; p=reject", key=author_key
        ),
        (record["name"], "TXT"): [record["record"]],
    }
    with DNSServer(records) as server:
        clublist(directory, state, "config", "set", "delivery.dns_servers", "127.0.0.1")
        clublist(directory, state, "config", "set", "delivery.dns_port", str(server.port))
        yield directory, state, server


@pytest.fixture(scope="module")
def sink() -> Iterator[RemoteMTA]:
    with RemoteMTA() as server:
        yield server


def test_a_post_signed_by_its_authors_domain_leaves_with_a_valid_arc_set(
    setup: tuple[Path, Path, DNSServer], sink: RemoteMTA, author_key: DKIMKey
) -> None:
    directory, state, server = setup
    post = (
        b"From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: Training\r\n"
        b"Message-ID: <arc1@example.org>\r\n\r\nAt six.\r\n"
    )
    with DaemonProcess(directory, state, smarthost=f"127.0.0.1:{sink.port}") as daemon:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            signed = author_key.sign(post, "example.org")
            assert client.sendmail("anna@example.org", ["youth@myclub.org"], signed) == {}
        copy = received(sink, lambda t: "ben@example.net" in t.rcpt_tos)
    lookup = dns_lookup(server)
    cv, sets, reason = dkim.arc_verify(copy.content, dnsfunc=lookup)
    assert cv == b"pass", reason
    assert [s["instance"] for s in sets] == [1]
    unfolded = b" ".join(copy.content.split())
    assert b"ARC-Seal: i=1; cv=none;" in unfolded
    assert b"dkim=pass header.d=example.org" in unfolded.split(b"ARC-Authentication-Results:")[1]
    assert dkim.verify(copy.content, dnsfunc=lookup)  # and the club's own DKIM signature
