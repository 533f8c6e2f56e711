"""The listener's TLS promises: no AUTH after STARTTLS, client certificates when asked, no TLS-less start."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import CLUBLIST
from daemon import DaemonProcess
from dnsserver import DNSServer
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.members import member_add
from clublist.club.store import Store

POST = (
    "From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: {subject}\r\n"
    "Message-ID: <{subject}@example.org>\r\n\r\nBring shoes.\r\n"
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_daemon(
    store: Store, club_dir: Path, tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DaemonProcess, RemoteMTA]]:
    """Client certificates asked for and checked against "the system CAs": here the test CA."""
    admin = Actor.shell()
    ca.issue_cert("myclub.org").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    with DNSServer() as dns, RemoteMTA() as sink:
        for key, value in [
            ("tls.cert", str(tmp_path / "cert.pem")),
            ("tls.client_certificates", "ask"),
            ("listen.trusted_networks", []),
            ("posting.unauthenticated", "accept"),
            ("delivery.dns_servers", ["127.0.0.1"]),
            ("delivery.dns_port", dns.port),
        ]:
            config_set(store, admin, key, value)
        with DaemonProcess(
            club_dir, tmp_path / "state.sqlite3", smarthost=f"127.0.0.1:{sink.port}"
        ) as daemon:
            yield daemon, sink


def client_context(ca: trustme.CA, certificate: trustme.LeafCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    if certificate is not None:
        certificate.configure_cert(context)
    return context


def test_starttls_announces_no_auth_and_records_a_verified_client_certificate(
    tls_daemon: tuple[DaemonProcess, RemoteMTA], ca: trustme.CA
) -> None:
    daemon, sink = tls_daemon
    sender_cert = ca.issue_cert("mx.sender.example")
    for subject, certificate in (("with-cert", sender_cert), ("without-cert", None)):
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.ehlo("mx.sender.example")
            assert not client.has_extn("auth")
            client.starttls(context=client_context(ca, certificate))
            client.ehlo("mx.sender.example")
            assert client.has_extn("size") and not client.has_extn("auth")
            client.sendmail("anna@example.org", ["youth@myclub.org"], POST.format(subject=subject))
    assert sink.wait_for(lambda s: len(s.transactions) == 2)
    by_subject = {t.message["Subject"]: t.message for t in sink.transactions}
    with_cert, without_cert = by_subject["[Youth] with-cert"], by_subject["[Youth] without-cert"]
    received = " ".join(with_cert["Received"].split())
    results = " ".join(str(with_cert["Authentication-Results"]).split())
    assert "(client certificate: O=trustme" in received and "DNS:mx.sender.example)" in received
    assert "x-tls-client-cert=pass (O=trustme" in results and "DNS:mx.sender.example)" in results
    assert "client certificate: none" in " ".join(without_cert["Received"].split())
    assert "x-tls-client-cert" not in str(without_cert["Authentication-Results"])


def test_a_new_tls_cert_in_club_toml_is_served_after_the_reload_that_reads_it(
    tls_daemon: tuple[DaemonProcess, RemoteMTA], ca: trustme.CA, club_dir: Path, tmp_path: Path
) -> None:
    """Whichever reload reads the new path loads the certificate: the file watcher's, with no SIGHUP."""
    daemon, _sink = tls_daemon
    renewed = tmp_path / "renewed.pem"
    ca.issue_cert("myclub.org", "renewed.myclub.org").private_key_and_cert_chain_pem.write_to_path(
        str(renewed)
    )
    club_toml = club_dir / "club.toml"
    old = str(tmp_path / "cert.pem")
    assert old in club_toml.read_text()
    mark = len(daemon.lines)
    club_toml.write_text(club_toml.read_text().replace(old, str(renewed)))
    daemon.wait_for_log(lambda line: "reloaded lists.d" in line, start=mark)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.starttls(context=client_context(ca, None))
        names = [value for _kind, value in client.sock.getpeercert()["subjectAltName"]]  # type: ignore[union-attr]
    assert names == ["myclub.org", "renewed.myclub.org"]


def test_tls_require_without_a_certificate_refuses_to_start(
    store: Store, club_dir: Path, tmp_path: Path
) -> None:
    config_set(store, Actor.shell(), "tls.require", True)
    result = subprocess.run(
        [
            CLUBLIST,
            "--dir",
            str(club_dir),
            "--state",
            str(tmp_path / "state.sqlite3"),
            "run",
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "tls.require is true but tls.cert is empty" in result.stderr
    assert "Traceback" not in result.stderr
