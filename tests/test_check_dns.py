"""``clublist check --only dns`` against the loopback DNS responder: a good zone and broken ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from dnsserver import DNSServer

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.cli import main
from clublist.cli.app import default_state_path
from clublist.club.store import Store
from clublist.outbound import signing

IP = "192.0.2.10"
GOOD: dict[tuple[str, str], list[str]] = {
    ("myclub.org", "MX"): ["10 mail.myclub.org."],
    ("mail.myclub.org", "A"): [IP],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["mail.myclub.org."],
    ("myclub.org", "TXT"): ["v=spf1 ip4:192.0.2.10 -all"],
    ("_dmarc.myclub.org", "TXT"): ["v=DMARC1; p=reject; rua=mailto:admin@myclub.org"],
    ("_mta-sts.myclub.org", "TXT"): ["v=STSv1; id=20261201"],
    ("other.example.net", "A"): ["198.51.100.7"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[DNSServer]:
    with DNSServer() as dns_server:
        yield dns_server


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two DKIM private keys (PEM), made once: the club's and a stranger's."""
    directory = tmp_path_factory.mktemp("dkim")
    for name in ("club", "other"):
        signing.generate_key(directory / f"{name}.key", "rsa", 1024)
    return {name: (directory / f"{name}.key").read_bytes() for name in ("club", "other")}


def dkim_record(pem: bytes) -> str:
    return signing.dns_record(serialization.load_pem_private_key(pem, password=None))  # type: ignore[arg-type]


@pytest.fixture
def club(store: Store, server: DNSServer, keys: dict[str, bytes]) -> Store:
    admin = Actor.shell()
    for key, value in {
        "listen.hostname": "mail.myclub.org",
        "delivery.dns_servers": "127.0.0.1",
        "delivery.dns_port": str(server.port),
        "delivery.timeout": "2",
        "dkim.selector": "s2026",
    }.items():
        config_set(store, admin, key, value)
    key_path = signing.key_path(default_state_path(store.directory), "s2026")
    key_path.parent.mkdir(parents=True)
    key_path.write_bytes(keys["club"])
    # One key for the whole module, so the good zone can carry its record.
    GOOD[("s2026._domainkey.myclub.org", "TXT")] = signing.txt_strings(dkim_record(keys["club"]))
    return store


def check(
    club: Store, server: DNSServer, zone: dict[tuple[str, str], list[str]]
) -> tuple[int, dict[str, Any]]:
    """Serve *zone*, run the dns checks; the exit code and the findings by check name."""
    server.records = {(name.lower(), rdtype): values for (name, rdtype), values in zone.items()}
    args = ["--dir", str(club.directory), "check", "--only", "dns", "--public-ip", IP, "--json"]
    result = CliRunner().invoke(main, args)
    findings = json.loads(result.stdout)
    assert all(set(f) == {"check", "status", "detail", "fix"} for f in findings)
    return result.exit_code, {f["check"]: f for f in findings}


def without(*keys: tuple[str, str]) -> dict[tuple[str, str], list[str]]:
    return {k: v for k, v in GOOD.items() if k not in keys}


def test_a_good_zone_is_all_ok(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, GOOD)
    assert code == 0
    assert {name: f["status"] for name, f in found.items()} == {
        "dns.mx": "ok",
        "dns.ptr": "ok",
        "dns.spf": "ok",
        "dns.dkim": "ok",
        "dns.dmarc": "ok",
        "dns.mta-sts": "info",
        "dns.tls-rpt": "info",
    }
    assert "v=STSv1" in found["dns.mta-sts"]["detail"]


def test_no_mx_fails_naming_the_record(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, without(("myclub.org", "MX")))
    assert code == 1
    assert found["dns.mx"]["status"] == "fail"
    assert found["dns.mx"]["fix"] == "publish myclub.org. IN MX 10 mail.myclub.org."


def test_ptr_that_does_not_resolve_back_fails(club: Store, server: DNSServer) -> None:
    zone = {**GOOD, ("10.2.0.192.in-addr.arpa", "PTR"): ["other.example.net."]}
    code, found = check(club, server, zone)
    assert code == 1
    ptr = found["dns.ptr"]
    assert ptr["status"] == "fail" and "does not resolve back" in ptr["detail"]
    assert "other.example.net. IN A 192.0.2.10" in ptr["fix"]


def test_missing_ptr_fails_naming_the_reverse_record(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, without(("10.2.0.192.in-addr.arpa", "PTR")))
    assert code == 1
    assert found["dns.ptr"]["status"] == "fail"
    assert "10.2.0.192.in-addr.arpa. IN PTR mail.myclub.org." in found["dns.ptr"]["fix"]


def test_ptr_naming_another_host_than_helo_warns(club: Store, server: DNSServer) -> None:
    zone = {
        **GOOD,
        ("10.2.0.192.in-addr.arpa", "PTR"): ["other.example.net."],
        ("other.example.net", "A"): [IP],
    }
    code, found = check(club, server, zone)
    assert code == 0
    assert found["dns.ptr"]["status"] == "warn"
    assert found["dns.ptr"]["fix"] == "clublist config set delivery.helo_name other.example.net"


def test_spf_without_the_ip_fails_with_the_record_to_publish(club: Store, server: DNSServer) -> None:
    zone = {**GOOD, ("myclub.org", "TXT"): ["v=spf1 ip4:198.51.100.0/24 -all"]}
    code, found = check(club, server, zone)
    assert code == 1
    spf = found["dns.spf"]
    assert spf["status"] == "fail" and "gives fail for 192.0.2.10" in spf["detail"]
    assert (
        spf["fix"]
        == 'change the TXT record of myclub.org to "v=spf1 ip4:192.0.2.10 ip4:198.51.100.0/24 -all"'
    )


def test_spf_through_include_and_mx_is_followed_on_the_same_resolver(club: Store, server: DNSServer) -> None:
    zone = {
        **GOOD,
        ("myclub.org", "TXT"): ["v=spf1 include:_spf.myclub.org -all"],
        ("_spf.myclub.org", "TXT"): ["v=spf1 mx:myclub.org -all"],
    }
    code, found = check(club, server, zone)
    assert code == 0 and found["dns.spf"]["status"] == "ok"
    assert server.count("_spf.myclub.org", "TXT") >= 1 and server.count("mail.myclub.org", "A") >= 1


def test_no_spf_record_fails(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, without(("myclub.org", "TXT")))
    assert code == 1
    assert found["dns.spf"]["fix"] == 'publish myclub.org. IN TXT "v=spf1 ip4:192.0.2.10 -all"'


def test_dkim_record_with_another_key_fails_naming_the_record(
    club: Store, server: DNSServer, keys: dict[str, bytes]
) -> None:
    zone = {**GOOD, ("s2026._domainkey.myclub.org", "TXT"): signing.txt_strings(dkim_record(keys["other"]))}
    code, found = check(club, server, zone)
    assert code == 1
    dkim = found["dns.dkim"]
    assert dkim["status"] == "fail" and "holds another key than" in dkim["detail"]
    assert dkim["fix"].startswith(
        f'publish s2026._domainkey.myclub.org. IN TXT "{dkim_record(keys["club"])}"'
    )


def test_missing_dkim_record_or_key_fails(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, without(("s2026._domainkey.myclub.org", "TXT")))
    assert code == 1
    assert (
        found["dns.dkim"]["status"] == "fail"
        and "no DKIM record at s2026._domainkey" in found["dns.dkim"]["detail"]
    )
    signing.key_path(default_state_path(club.directory), "s2026").unlink()
    code, found = check(club, server, GOOD)
    assert code == 1
    assert found["dns.dkim"]["fix"] == "clublist dkim keygen --selector s2026"


def test_no_dkim_selector_warns(club: Store, server: DNSServer) -> None:
    config_set(club, Actor.shell(), "dkim.selector", "")
    code, found = check(club, server, GOOD)
    assert code == 0
    assert found["dns.dkim"]["status"] == "warn" and found["dns.dkim"]["fix"].startswith(
        "clublist dkim keygen"
    )


def test_no_dmarc_fails_and_p_none_warns(club: Store, server: DNSServer) -> None:
    code, found = check(club, server, without(("_dmarc.myclub.org", "TXT")))
    assert code == 1
    assert found["dns.dmarc"]["status"] == "fail"
    assert found["dns.dmarc"]["fix"] == (
        'publish _dmarc.myclub.org. IN TXT "v=DMARC1; p=quarantine; rua=mailto:admin@myclub.org"'
    )
    code, found = check(club, server, {**GOOD, ("_dmarc.myclub.org", "TXT"): ["v=DMARC1; p=none"]})
    assert code == 0
    assert found["dns.dmarc"]["status"] == "warn" and "p=none" in found["dns.dmarc"]["detail"]
    assert "_dmarc.myclub.org. IN TXT" in found["dns.dmarc"]["fix"]


def test_dns_failure_is_a_warning_not_a_verdict(club: Store, server: DNSServer) -> None:
    server.servfail = {"_dmarc.myclub.org"}
    try:
        code, found = check(club, server, GOOD)
    finally:
        server.servfail = set()
    assert found["dns.dmarc"]["status"] == "warn" and "DNS lookup failed" in found["dns.dmarc"]["detail"]
    assert code == 0


def test_sending_ip_comes_from_listen_hostname(club: Store, server: DNSServer, tmp_path: Path) -> None:
    server.records = {(n, t): v for (n, t), v in GOOD.items()}
    args = ["--dir", str(club.directory), "check", "--only", "dns", "--json"]
    found = {f["check"]: f for f in json.loads(CliRunner().invoke(main, args).stdout)}
    # 192.0.2.10 is a documentation address, not a public one: the check says it cannot tell.
    assert found["dns.ptr"]["status"] == "fail" and "no public address" in found["dns.ptr"]["detail"]
    assert "--public-ip" in found["dns.ptr"]["fix"]
