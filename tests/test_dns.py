"""clublist.dns against a real DNS responder on loopback (tests/dnsserver.py)."""

import asyncio

import dns.asyncresolver
import pytest
from dnsserver import DNSServer

from clublist.dns import DNSPermanentError, DNSTemporaryError, MailHost, Resolver

ZONE = {
    ("example.org", "MX"): ["20 mx2.example.org.", "10 mx1.example.org."],
    ("mx1.example.org", "A"): ["127.0.0.1"],
    ("mx2.example.org", "A"): ["127.0.0.2"],
    ("balanced.example", "MX"): ["10 a.balanced.example.", "10 b.balanced.example.", "30 c.x."],
    ("implicit.example", "A"): ["192.0.2.10"],
    ("implicit.example", "AAAA"): ["2001:db8::10"],
    ("v6only.example", "AAAA"): ["2001:db8::6"],
    ("nomail.example", "MX"): ["0 ."],
    ("nomail.example", "A"): ["192.0.2.11"],
    ("bare.example", "TXT"): ["hello"],
    ("_dmarc.reject.example", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@reject.example"],
    ("_dmarc.quarantine.example", "TXT"): ["v=DMARC1;p=Quarantine"],
    ("_dmarc.gmail.example", "TXT"): ["v=DMARC1; p=none; sp=quarantine"],
    ("_dmarc.testing.example", "TXT"): ["v=DMARC1; p=reject; pct=0"],
    ("_dmarc.half.example", "TXT"): ["v=DMARC1; p=reject; pct=50"],
    ("_dmarc.org.example", "TXT"): ["v=DMARC1; p=reject; sp=none"],
    ("_dmarc.strict.example", "TXT"): ["v=DMARC1; p=quarantine"],
    ("_dmarc.mixed.example", "TXT"): ["some-verification=abc", "v=DMARC1; p=reject"],
    ("_dmarc.two.example", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    ("_dmarc.badp.example", "TXT"): ["v=DMARC1; p=bogus"],
    ("_dmarc.badp-rua.example", "TXT"): ["v=DMARC1; p=bogus; rua=mailto:x@badp-rua.example"],
    ("_dmarc.split.example", "TXT"): ['"v=DMARC1; " "p=reject"'],
    ("www.org.example", "A"): ["192.0.2.12"],
}


@pytest.fixture(scope="module")
def server():
    with DNSServer(ZONE, servfail={"broken.example"}, hang={"slow.example"}) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server):
    return Resolver(["127.0.0.1"], port=server.port, timeout=0.5)


def run(coro):
    return asyncio.run(coro)


def test_mx_sorted_by_preference(resolver):
    assert run(resolver.mail_hosts("Example.ORG.")) == [
        MailHost("mx1.example.org", 10),
        MailHost("mx2.example.org", 20),
    ]


def test_equal_preferences_are_shuffled(resolver):
    async def orders():
        seen = set()
        for _ in range(200):
            hosts = await resolver.mail_hosts("balanced.example")
            assert hosts[-1] == MailHost("c.x", 30)
            assert {h.preference for h in hosts[:2]} == {10}
            seen.add(tuple(h.host for h in hosts[:2]))
            if len(seen) == 2:
                break
        return seen

    assert run(orders()) == {
        ("a.balanced.example", "b.balanced.example"),
        ("b.balanced.example", "a.balanced.example"),
    }


def test_no_mx_falls_back_to_the_domain_itself(resolver):
    assert run(resolver.mail_hosts("implicit.example")) == [MailHost("implicit.example", 0)]
    assert run(resolver.mail_hosts("v6only.example")) == [MailHost("v6only.example", 0)]


def test_no_mx_and_no_address_is_permanent(resolver):
    with pytest.raises(DNSPermanentError, match="no mail server"):
        run(resolver.mail_hosts("bare.example"))


def test_null_mx_is_permanent_without_fallback(resolver, server):
    with pytest.raises(DNSPermanentError, match="null MX"):
        run(resolver.mail_hosts("nomail.example"))
    assert server.count("nomail.example", "A") == 0


def test_nxdomain_is_permanent(resolver):
    with pytest.raises(DNSPermanentError, match="does not exist"):
        run(resolver.mail_hosts("nowhere.example"))


def test_invalid_name_is_permanent(resolver):
    with pytest.raises(DNSPermanentError, match="not a valid domain name"):
        run(resolver.mail_hosts("bad..example"))


def test_servfail_is_temporary(resolver):
    with pytest.raises(DNSTemporaryError):
        run(resolver.mail_hosts("broken.example"))
    with pytest.raises(DNSTemporaryError):
        run(resolver.addresses("mx.broken.example"))


def test_silent_server_is_temporary_within_the_timeout(resolver):
    """The resolver's own timeout (0.5 s) ends the wait: the outer bound only stops a hang."""
    with pytest.raises(DNSTemporaryError, match="timed out"):
        run(asyncio.wait_for(resolver.mail_hosts("slow.example"), timeout=30))


def test_addresses_ipv4_first(resolver):
    assert run(resolver.addresses("implicit.example")) == ["192.0.2.10", "2001:db8::10"]
    assert run(resolver.addresses("nowhere.example")) == []
    assert run(resolver.addresses("example.org")) == []


@pytest.mark.parametrize(
    ("domain", "policy"),
    [
        ("reject.example", "reject"),
        ("quarantine.example", "quarantine"),
        ("gmail.example", "none"),
        ("testing.example", "none"),  # pct=0: a request to test (Mailman issue 1004)
        ("half.example", "reject"),
        ("absent.example", None),
        ("mixed.example", "reject"),  # other TXT records beside it are ignored
        ("two.example", None),  # two DMARC records: neither applies (RFC 7489 6.6.3)
        ("badp.example", None),
        ("badp-rua.example", "none"),
        ("split.example", "reject"),  # one record in several strings
        ("REJECT.example.", "reject"),
        # Organizational-domain fallback, where sp= governs subdomains:
        ("mail.org.example", "none"),
        ("www.org.example", "none"),
        ("a.b.strict.example", "quarantine"),
        ("lists.gmail.example", "quarantine"),
        ("sub.absent.example", None),
    ],
)
def test_dmarc_policy(resolver, domain, policy):
    assert run(resolver.dmarc_policy(domain)) == policy


def test_dmarc_failure_is_temporary(resolver):
    with pytest.raises(DNSTemporaryError):
        run(resolver.dmarc_policy("broken.example"))
    with pytest.raises(DNSTemporaryError):
        run(resolver.dmarc_policy("slow.example"))


def test_dmarc_answers_are_cached_until_they_expire(server):
    now = [1000.0]
    resolver = Resolver(["127.0.0.1"], port=server.port, timeout=0.5, clock=lambda: now[0])
    before = server.count("_dmarc.reject.example")
    before_none = server.count("_dmarc.absent.example")
    for _ in range(3):
        assert run(resolver.dmarc_policy("reject.example")) == "reject"
        assert run(resolver.dmarc_policy("absent.example")) is None
    assert server.count("_dmarc.reject.example") == before + 1
    assert server.count("_dmarc.absent.example") == before_none + 1  # "no record" is cached too

    now[0] += 3601
    assert run(resolver.dmarc_policy("reject.example")) == "reject"
    assert server.count("_dmarc.reject.example") == before + 2


def test_dmarc_failures_are_not_cached(resolver, server):
    before = server.count("_dmarc.broken.example")
    for _ in range(2):
        with pytest.raises(DNSTemporaryError):
            run(resolver.dmarc_policy("broken.example"))
    assert server.count("_dmarc.broken.example") == before + 2


def test_org_domain_record_is_shared_through_the_cache(server):
    resolver = Resolver(["127.0.0.1"], port=server.port, timeout=0.5)
    before = server.count("_dmarc.org.example")
    for sub in ("a", "b", "c"):
        assert run(resolver.dmarc_policy(f"{sub}.org.example")) == "none"
    assert server.count("_dmarc.org.example") == before + 1


def test_server_answers_over_tcp(server):
    stub = dns.asyncresolver.Resolver(configure=False)
    stub.port = server.port
    stub.nameservers = ["127.0.0.1"]
    answer = run(stub.resolve("example.org", "MX", tcp=True))
    assert sorted(rr.preference for rr in answer) == [10, 20]
