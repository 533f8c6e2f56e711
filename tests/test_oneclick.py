"""RFC 8058 one-click unsubscribe through a real ``clublist run``: each member's copy carries its
own signed link, a POST to it takes exactly that member off exactly that list, nothing else does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
import trustme
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import RemoteMTA, Transaction
from test_signing import DnsFunc, clublist, dns_lookup, received

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.club.store import Store
from clublist.outbound import unsubscribe, verp

URL = "https://lists.myclub.org/u"
_HTTP_PORT = re.compile(r"one-click unsubscribe on http://\S+:(\d+)")


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("oneclick")
    directory, state = root / "lists.d", root / "var" / "clublist.sqlite3"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store, shell = Store(directory), Actor.shell()
    config_set(store, shell, "listen.trusted_networks", ["127.0.0.0/8"])  # posts from here count
    list_create(store, shell, "youth", prefix="[Youth]")
    list_create(store, shell, "board", owners=["admin@myclub.org"])
    member_add(store, shell, "anna@example.org", "Anna", ("youth", "board"))
    member_add(store, shell, "ben@example.org", "Ben", ("youth",))
    clublist(directory, state, "config", "set", "unsubscribe.url", URL)
    clublist(directory, state, "config", "set", "listen.http_port", "0")
    clublist(directory, state, "dkim", "keygen", "--selector", "s1")
    return directory, state


@pytest.fixture(scope="module")
def lookup(club: tuple[Path, Path]) -> Iterator[DnsFunc]:
    record = json.loads(clublist(*club, "dkim", "show", "--json"))
    with DNSServer({(record["name"], "TXT"): [record["record"]]}) as server:
        yield dns_lookup(server)


@pytest.fixture(scope="module")
def sink() -> Iterator[RemoteMTA]:
    with RemoteMTA() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(club: tuple[Path, Path], sink: RemoteMTA) -> Iterator[DaemonProcess]:
    with DaemonProcess(*club, smarthost=f"127.0.0.1:{sink.port}") as process:
        yield process


@pytest.fixture(scope="module")
def http_port(daemon: DaemonProcess) -> int:
    match = _HTTP_PORT.search(daemon.wait_for_log(lambda line: _HTTP_PORT.search(line) is not None))
    assert match
    return int(match[1])


@pytest.fixture(scope="module")
def copies(daemon: DaemonProcess, sink: RemoteMTA) -> dict[tuple[str, str], Transaction]:
    """(list, member) -> that member's copy of one post to each list."""
    found = {}
    for list_name in ("youth", "board"):
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            text = f"From: Anna <anna@example.org>\r\nSubject: News for {list_name}\r\n\r\nHello.\r\n"
            client.sendmail("anna@example.org", [f"{list_name}@myclub.org"], text)
    for list_name, member in (("youth", "anna"), ("youth", "ben"), ("board", "anna")):
        address = f"{member}@example.org"
        found[list_name, member] = received(
            sink,
            lambda t, n=list_name, a=address: (
                f"News for {n}" in str(t.message["Subject"]) and t.rcpt_tos == [a]
            ),
        )
    return found


def link(copy: Transaction) -> str:
    header = " ".join(str(copy.message["List-Unsubscribe"]).split())
    match = re.match(r"<(https://[^>]+)>, <mailto:[^>]+>$", header)
    assert match, header
    return match[1]


def request(port: int, method: str, url: str) -> tuple[int, str]:
    path = url.removeprefix("https://lists.myclub.org")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = "List-Unsubscribe=One-Click" if method == "POST" else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def lists_of(club: tuple[Path, Path], address: str) -> set[str]:
    return set(Store(club[0]).load().member(address).lists)


def test_each_copy_has_its_own_signed_one_click_link(
    copies: dict[tuple[str, str], Transaction], lookup: DnsFunc
) -> None:
    links = {key: link(copy) for key, copy in copies.items()}
    assert len(set(links.values())) == 3
    assert all(url.startswith(f"{URL}/") for url in links.values())
    for copy in copies.values():
        assert copy.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert dkim.verify(copy.content, dnsfunc=lookup)
        signature = dkim.util.parse_tag_value(copy.message["DKIM-Signature"].encode().replace(b"\r\n", b""))
        signed = [h.strip() for h in signature[b"h"].split(b":")]
        assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
        assert not dkim.verify(
            copy.content.replace(b"List-Unsubscribe: <https", b"List-Unsubscribe: <http"), dnsfunc=lookup
        )
        # The post was sealed once, before its copies got their own links: the seal holds for each.
        assert copy.message["ARC-Seal"] is not None
        assert dkim.arc_verify(copy.content, dnsfunc=lookup)[0] == b"pass"


def test_get_shows_a_button_and_unsubscribes_nobody(
    copies: dict[tuple[str, str], Transaction], http_port: int, club: tuple[Path, Path]
) -> None:
    status, page = request(http_port, "GET", link(copies["youth", "ben"]))
    assert status == 200 and '<form method="post">' in page
    assert request(http_port, "HEAD", link(copies["youth", "ben"])) == (200, "")
    assert lists_of(club, "ben@example.org") == {"youth"}


def test_altered_or_moved_tokens_do_nothing(
    copies: dict[tuple[str, str], Transaction], http_port: int, club: tuple[Path, Path]
) -> None:
    youth = link(copies["youth", "anna"])
    altered = youth[:-1] + ("0" if youth[-1] != "0" else "1")
    board_mac = link(copies["board", "anna"]).rpartition(".")[2]
    moved = f"{youth.rpartition('.')[0]}.{board_mac}"  # anna's board token on the youth link
    for url in (altered, moved):
        assert request(http_port, "POST", url)[0] == 404
    assert lists_of(club, "anna@example.org") == {"youth", "board"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # a connection that says nothing
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",  # a TLS hello on the plain port
        b"POST /u/x HTTP/1.1\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",  # a header past the line limit
        b"POST /u/x HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",  # too many header lines
        b"POST /u/x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",  # a huge body announced
        b"POST /u/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /u/x HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
    ],
    ids=["empty", "tls-hello", "long-header", "many-headers", "huge-body", "negative-length", "bad-length"],
)
def test_hostile_requests_get_400_and_change_nothing(
    raw: bytes, copies: dict[tuple[str, str], Transaction], http_port: int, club: tuple[Path, Path]
) -> None:
    with socket.create_connection(("127.0.0.1", http_port), timeout=30) as connection:
        with contextlib.suppress(OSError):  # the server may close before reading everything sent
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert lists_of(club, "ben@example.org") == {"youth"}
    assert request(http_port, "GET", link(copies["youth", "ben"]))[0] == 200  # still serving


def test_post_unsubscribes_exactly_that_member_from_that_list(
    copies: dict[tuple[str, str], Transaction], http_port: int, club: tuple[Path, Path], sink: RemoteMTA
) -> None:
    status, page = request(http_port, "POST", link(copies["youth", "anna"]))
    assert status == 200, page
    assert lists_of(club, "anna@example.org") == {"board"}
    assert lists_of(club, "ben@example.org") == {"youth"}
    notice = received(sink, lambda t: "left youth (one-click unsubscribe)" in str(t.message["Subject"]))
    assert notice.rcpt_tos == ["admin@myclub.org"]
    assert request(http_port, "POST", link(copies["youth", "anna"]))[0] == 404  # used up


def test_with_http_tls_the_page_is_served_over_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "cert.pem"
    ca.issue_cert("lists.myclub.org").private_key_and_cert_chain_pem.write_to_path(str(pem))
    directory, state = tmp_path / "lists.d", tmp_path / "var" / "clublist.sqlite3"
    init_club(directory, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store, shell = Store(directory), Actor.shell()
    list_create(store, shell, "youth")
    member_add(store, shell, "ben@example.org", "Ben", ("youth",))
    for key, value in (("unsubscribe.url", URL), ("listen.http_port", "0"), ("tls.cert", str(pem))):
        config_set(store, shell, key, value)
    config_set(store, shell, "listen.http_tls", "true")
    token = unsubscribe.token(verp.load_secret(state), "youth", "ben@example.org")
    with DaemonProcess(directory, state) as daemon:
        line = daemon.wait_for_log(lambda text: "one-click unsubscribe on https://" in text)
        port = int(line.rpartition(":")[2])
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.check_hostname = False  # the certificate names lists.myclub.org; we dial 127.0.0.1
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        try:
            connection.request("GET", f"/u/{token}")
            response = connection.getresponse()
            assert response.status == 200 and '<form method="post">' in response.read().decode()
        finally:
            connection.close()
