"""SPF, every DKIM signature and DMARC alignment, against the loopback DNS responder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from authkeys import DKIMKey, domain_records
from dnsserver import DNSServer

from clublist.dns import Resolver
from clublist.mail.authentication import Authentication, authenticate, remove_own_results, trusted_client

OUTSIDE = "198.51.100.7"  # in no domain's SPF record
INSIDE = "192.0.2.25"  # in example.org's and nodmarc.example's


@pytest.fixture(scope="module")
def key() -> DKIMKey:
    return DKIMKey.generate()


@pytest.fixture(scope="module")
def other_key() -> DKIMKey:
    return DKIMKey.generate()


@pytest.fixture(scope="module")
def server(key: DKIMKey) -> Iterator[DNSServer]:
    records = {
        **domain_records(
            "example.org", spf="v=spf1 ip4:192.0.2.0/24 -all", dmarc="v=DMARC1; p=reject", key=key
        ),
        **domain_records("mail.example.org", key=key),
        **domain_records("strict.example", spf="v=spf1 -all", dmarc="v=DMARC1; p=none; adkim=s", key=key),
        **domain_records("mail.strict.example", key=key),
        **domain_records("nodmarc.example", spf="v=spf1 ip4:192.0.2.0/24 -all"),
        **domain_records("testing.example", spf="v=spf1 -all", dmarc="v=DMARC1; p=reject; pct=0"),
        **domain_records("other.example", spf="v=spf1 -all", key=key),
        **domain_records("forwarder.example", key=key),
        **domain_records("sub.parent.example", spf="v=spf1 -all"),
        **domain_records("parent.example", dmarc="v=DMARC1; p=none; sp=quarantine"),
        ("broken.example", "TXT"): ["v=spf1 -all"],
        ("_dmarc.broken.example", "TXT"): ["v=DMARC1; p=reject"],
    }
    with DNSServer(records, servfail=["servfail.example"], hang=["hang.example"]) as dns_server:
        yield dns_server


def message(author: str = "anna@example.org", subject: str = "Training") -> bytes:
    return (
        f"From: Anna <{author}>\r\nTo: youth@myclub.org\r\nSubject: {subject}\r\n"
        "Message-ID: <1@example.org>\r\n\r\nBring shoes.\r\n"
    ).encode()


def check(
    server: DNSServer,
    raw: bytes,
    *,
    ip: str = OUTSIDE,
    mail_from: str = "anna@example.org",
    from_domain: str = "example.org",
    timeout: float = 2.0,
) -> Authentication:
    resolver = Resolver(["127.0.0.1"], port=server.port, timeout=timeout)
    return asyncio.run(
        authenticate(
            raw,
            client_ip=ip,
            helo="mail.sender.example",
            mail_from=mail_from,
            from_domain=from_domain,
            resolver=resolver,
        )
    )


def test_a_signed_post_from_outside_spf_passes_by_dkim(server: DNSServer, key: DKIMKey) -> None:
    result = check(server, key.sign(message(), "example.org"))
    assert result.spf == "fail"
    assert [s.result for s in result.dkim] == ["pass"] and result.dkim[0].domain == "example.org"
    assert result.dmarc == "pass" and result.dmarc_policy == "reject"
    assert result.authenticated and result.aligned == ("dkim",) and not result.temperror
    header = result.header_value("myclub.org")
    assert header.startswith("myclub.org;\r\n\tspf=fail")
    assert "dkim=pass header.d=example.org header.s=sel" in header
    assert "dmarc=pass (p=reject) header.from=example.org" in header


def test_an_unsigned_post_from_outside_spf_fails_a_reject_policy(server: DNSServer) -> None:
    result = check(server, message())
    assert result.spf == "fail" and result.dkim == () and result.dmarc == "fail"
    assert not result.authenticated and result.refused_by_policy and not result.temperror
    assert "dkim=none" in result.header_value("myclub.org")


def test_spf_pass_with_an_aligned_envelope_authenticates(server: DNSServer) -> None:
    result = check(server, message(), ip=INSIDE)
    assert result.spf == "pass" and result.aligned == ("spf",) and result.dmarc == "pass"


def test_batv_envelope_aligns_by_its_domain(server: DNSServer) -> None:
    result = check(server, message(), ip=INSIDE, mail_from="prvs=1234abcd=anna@example.org")
    assert result.authenticated and result.spf == "pass"


def test_without_a_dmarc_record_an_aligned_pass_still_authenticates(server: DNSServer) -> None:
    passed = check(
        server,
        message("anna@nodmarc.example"),
        ip=INSIDE,
        mail_from="anna@nodmarc.example",
        from_domain="nodmarc.example",
    )
    assert passed.authenticated and passed.dmarc == "none" and passed.dmarc_policy is None
    failed = check(
        server,
        message("anna@nodmarc.example"),
        mail_from="anna@nodmarc.example",
        from_domain="nodmarc.example",
    )
    assert failed.spf == "fail" and not failed.authenticated and failed.dmarc == "none"
    assert not failed.refused_by_policy and not failed.temperror


def test_every_signature_is_tried_and_the_second_may_pass(
    server: DNSServer, key: DKIMKey, other_key: DKIMKey
) -> None:
    # The good signature is made first, so the forged one (other_key, not example.org's) sits on top.
    raw = other_key.sign(key.sign(message(), "example.org"), "example.org")
    result = check(server, raw)
    assert [s.result for s in result.dkim] == ["fail", "pass"]
    assert result.dmarc == "pass" and result.authenticated


def test_a_signature_of_an_unrelated_domain_does_not_align(server: DNSServer, key: DKIMKey) -> None:
    result = check(server, key.sign(message(), "other.example"))
    assert [s.result for s in result.dkim] == ["pass"] and result.dmarc == "fail" and not result.authenticated


def test_a_missing_key_is_a_permanent_error(server: DNSServer, key: DKIMKey) -> None:
    result = check(server, key.sign(message(), "example.org", selector="gone"))
    assert [s.result for s in result.dkim] == ["permerror"]
    assert "no key" in result.dkim[0].reason


def test_relaxed_alignment_through_the_organizational_domain(server: DNSServer, key: DKIMKey) -> None:
    relaxed = check(server, key.sign(message(), "mail.example.org"))
    assert relaxed.authenticated and relaxed.dmarc == "pass"
    strict = check(
        server,
        key.sign(message("anna@strict.example"), "mail.strict.example"),
        mail_from="anna@strict.example",
        from_domain="strict.example",
    )
    assert strict.dkim[0].result == "pass" and strict.dmarc == "fail" and not strict.authenticated
    assert not strict.refused_by_policy  # p=none


def test_a_subdomain_follows_the_parent_record_and_its_sp(server: DNSServer) -> None:
    result = check(
        server,
        message("anna@sub.parent.example"),
        mail_from="anna@sub.parent.example",
        from_domain="sub.parent.example",
    )
    assert result.dmarc == "fail" and result.dmarc_policy == "quarantine" and result.refused_by_policy


def test_pct_zero_records_the_policy_without_enforcing_it(server: DNSServer) -> None:
    result = check(
        server,
        message("anna@testing.example"),
        mail_from="anna@testing.example",
        from_domain="testing.example",
    )
    assert result.dmarc == "fail" and result.dmarc_policy == "reject" and not result.refused_by_policy
    assert "(p=reject pct=0)" in result.header_value("myclub.org")


def test_servfail_is_a_temporary_error_not_a_failure(server: DNSServer) -> None:
    result = check(
        server,
        message("anna@servfail.example"),
        mail_from="anna@servfail.example",
        from_domain="servfail.example",
    )
    assert result.spf == "temperror" and result.dmarc == "temperror" and result.temperror
    assert not result.refused_by_policy


def test_a_silent_dns_server_gives_temperror_within_the_timeout(server: DNSServer, key: DKIMKey) -> None:
    raw = key.sign(message("anna@hang.example"), "hang.example")
    started = time.monotonic()
    result = check(server, raw, mail_from="anna@hang.example", from_domain="hang.example", timeout=0.5)
    elapsed = time.monotonic() - started
    assert result.temperror
    assert result.spf == "temperror" and [s.result for s in result.dkim] == ["temperror"]
    print(f"temperror after {elapsed:.2f} s with a 0.5 s resolver timeout")


def test_dns_answers_are_cached_between_posts(server: DNSServer, key: DKIMKey) -> None:
    resolver = Resolver(["127.0.0.1"], port=server.port, timeout=2.0)
    raw = key.sign(message(subject="cached"), "example.org")

    async def twice() -> None:
        for _ in range(2):
            result = await authenticate(
                raw,
                client_ip=OUTSIDE,
                helo="h.example",
                mail_from="anna@example.org",
                from_domain="example.org",
                resolver=resolver,
            )
            assert result.authenticated

    before = server.count("sel._domainkey.example.org", "TXT")
    asyncio.run(twice())
    assert server.count("sel._domainkey.example.org", "TXT") == before + 1


def test_null_sender_checks_the_helo_name(server: DNSServer) -> None:
    resolver = Resolver(["127.0.0.1"], port=server.port, timeout=2.0)
    result = asyncio.run(
        authenticate(
            message(),
            client_ip=INSIDE,
            helo="example.org",
            mail_from="",
            from_domain="example.org",
            resolver=resolver,
        )
    )
    assert result.spf == "pass" and result.spf_scope == "helo"
    assert "smtp.helo=example.org" in result.header_value("myclub.org")


def test_own_authentication_results_are_removed_others_kept() -> None:
    raw = (
        b"Authentication-Results: myclub.org; dkim=pass\r\n"
        b"Authentication-Results: mx.google.com;\r\n\tspf=pass\r\n"
        b"Authentication-Results: (forged) MyClub.org 1;\r\n\tdmarc=pass\r\n"
        b"From: a@example.org\r\nAuthentication-Results: myclub.org; dkim=pass\r\n\r\n"
        b"Authentication-Results: myclub.org; in the body\r\n"
    )
    cleaned = remove_own_results(raw, ["myclub.org"])
    assert cleaned == (
        b"Authentication-Results: mx.google.com;\r\n\tspf=pass\r\n"
        b"From: a@example.org\r\n\r\n"
        b"Authentication-Results: myclub.org; in the body\r\n"
    )
    plain = b"From: a@example.org\r\n\r\nbody\r\n"
    assert remove_own_results(plain, ["myclub.org"]) is plain


def test_trusted_networks() -> None:
    assert trusted_client("127.0.0.1", ["127.0.0.0/8"])
    assert trusted_client("::ffff:10.1.2.3", ["10.0.0.0/8"])
    assert not trusted_client("192.0.2.1", ["127.0.0.0/8", "::1"])
    assert not trusted_client("unix", ["127.0.0.0/8"])


def forwarded(key: DKIMKey) -> bytes:
    """A post as a forwarder that checked it and sealed it with ARC (instance 1) passes it on."""
    import dkim

    results = b"Authentication-Results: forwarder.example; dkim=pass header.d=example.org\r\n"
    original = results + message()
    arc_set = dkim.arc_sign(original, b"sel", b"forwarder.example", key.private_pem, b"forwarder.example")
    return b"".join(arc_set) + original


def test_an_intact_arc_chain_is_recorded_as_pass(server: DNSServer, key: DKIMKey) -> None:
    result = check(server, forwarded(key))
    assert result.arc == "pass"
    assert "\tarc=pass" in result.header_value("myclub.org")
    assert not result.authenticated  # ARC names the forwarder, never the author


def test_a_broken_arc_chain_is_recorded_as_fail(server: DNSServer, key: DKIMKey) -> None:
    result = check(server, forwarded(key).replace(b"Bring shoes.", b"Bring boots."))
    assert result.arc == "fail" and "\tarc=fail" in result.header_value("myclub.org")


def test_without_arc_nothing_is_said_of_it(server: DNSServer) -> None:
    result = check(server, message())
    assert result.arc == "none" and "\tarc=" not in result.header_value("myclub.org")
