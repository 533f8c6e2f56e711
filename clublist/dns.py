"""clublist's one resolver: where mail for a domain goes (MX, null MX, implicit MX), what DMARC
policy it publishes, and the cached records sender authentication asks for (TXT, A, MX, PTR).

Used by the delivery worker to pick hosts, by decoration to decide whether to rewrite From and
by mail/authentication.py for SPF, DKIM and DMARC; every lookup goes to the servers club.toml
names (``delivery.dns_servers``, ``delivery.dns_port``).  Only the daemon imports it, so
dnspython's import cost never reaches the store commands.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from clublist.club.model import Site

DMARC_POLICIES = ("none", "quarantine", "reject")
NEGATIVE_TTL = 300.0  # how long "no such records" is kept (RFC 2308 lets the zone say; this bounds it)
MAX_CACHED = 10_000  # records kept; the cache starts afresh beyond, so a flood of names cannot grow it


class DNSPermanentError(Exception):
    """The domain cannot receive mail (NXDOMAIN, null MX, no MX and no address): give up."""


class DNSTemporaryError(Exception):
    """DNS did not give a usable answer now (SERVFAIL, timeout, no server answered): retry later."""


@dataclass(frozen=True)
class MailHost:
    host: str  # lower case, without the trailing dot
    preference: int


class Resolver:
    """A dnspython async resolver with mail-specific answers and small caches.

    The caches are per instance, so a test or a config reload gets a fresh one.  ``timeout``
    bounds one whole lookup, retries included: a dead or silent server costs that long and
    then DNSTemporaryError, never more.
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        timeout: float = 5.0,
        *,
        cache_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not nameservers:  # None or [] (the site config's default): the system's resolvers
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.port = port
            self._resolver.nameservers = list(nameservers)
        # timeout bounds one try at one server, lifetime the whole lookup including retries.
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._cache_ttl = cache_ttl
        self._clock = clock
        self.timeout = timeout
        self._dmarc_cache: dict[str, tuple[float, dict[str, str] | None]] = {}
        self._records: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """One lookup; None when the name exists without records of this type.

        NXDOMAIN passes through as dnspython's exception so each caller decides what a
        missing name means; a malformed name is DNSPermanentError, any other failure
        DNSTemporaryError.
        """
        try:
            qname = dns.name.from_text(name)  # absolute: never apply the search list
        except dns.exception.DNSException as exc:
            raise DNSPermanentError(f"{name!r} is not a valid domain name") from exc
        try:
            return await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.Timeout as exc:
            raise DNSTemporaryError(f"DNS lookup of {name} ({rdtype}) timed out") from exc
        except dns.resolver.NoNameservers as exc:
            raise DNSTemporaryError(
                f"no DNS server answered for {name} ({rdtype}); they may be failing (SERVFAIL)"
            ) from exc
        except dns.exception.DNSException as exc:
            raise DNSTemporaryError(f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc

    async def records(self, name: str, rdtype: str) -> list[Any]:
        """The records of *rdtype* at *name* (dnspython rdata), [] when there are none or the
        name does not exist; cached for their TTL (at most cache_ttl), "none" for NEGATIVE_TTL.

        A failure raises DNSTemporaryError (also a name that is not a valid domain name:
        nothing can be said about it, and SPF and DKIM treat it as no record themselves).
        """
        key = (name.rstrip(".").lower(), rdtype)
        now = self._clock()
        cached = self._records.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await self._query(key[0], rdtype)
        except dns.resolver.NXDOMAIN:
            answer = None
        except DNSPermanentError as exc:
            raise DNSTemporaryError(str(exc)) from exc
        found = list(answer) if answer is not None else []
        ttl = min(float(answer.rrset.ttl), self._cache_ttl) if answer is not None and answer.rrset else 0.0
        if len(self._records) >= MAX_CACHED:
            self._records.clear()
        self._records[key] = (now + (ttl if found else min(NEGATIVE_TTL, self._cache_ttl)), found)
        return found

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record at *name*, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(rr.strings) for rr in await self.records(name, "TXT")]

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """The hosts to try for `domain`, in order (RFC 5321 section 5.1).

        Equal preferences are shuffled so load spreads as the domain's owner intended. A null
        MX ("0 .", RFC 7505) among real hosts is a misconfiguration; the real hosts are used.
        """
        domain = domain.rstrip(".").lower()
        try:
            answer = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN as exc:
            raise DNSPermanentError(f"the domain {domain} does not exist") from exc
        if answer is None:
            if await self.addresses(domain):
                return [MailHost(domain, 0)]
            raise DNSPermanentError(f"the domain {domain} has no mail server (no MX, A or AAAA)")
        records = sorted(
            (rr.preference, rr.exchange.to_text(omit_final_dot=True).lower())
            for rr in answer
            if rr.exchange != dns.name.root
        )
        if not records:
            raise DNSPermanentError(f"the domain {domain} does not accept mail (null MX)")
        hosts: list[MailHost] = []
        for preference, group in groupby(records, key=lambda record: record[0]):
            same = [MailHost(host, preference) for _, host in group]
            random.shuffle(same)
            hosts.extend(same)
        return hosts

    async def addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of `host`; [] when it has none or does not exist.

        If one family fails temporarily but the other gives addresses, those are returned:
        delivery can proceed. Only when nothing usable came back is the failure raised.
        """
        host = host.rstrip(".").lower()
        results = await asyncio.gather(
            self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True
        )
        found: list[str] = []
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, dns.resolver.NXDOMAIN) or result is None:
                continue
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            found.extend(rr.address for rr in result)
        if failure is not None and not found:
            raise failure
        return found

    async def ptr(self, address: str) -> list[str]:
        """The names the reverse zone gives for an IPv4 or IPv6 address, lower case, no final dot."""
        reverse = dns.reversename.from_address(address).to_text()
        return [rr.target.to_text(omit_final_dot=True).lower() for rr in await self.records(reverse, "PTR")]

    async def dmarc_policy(self, domain: str) -> str | None:
        """The DMARC policy for mail From `domain`: "none", "quarantine", "reject" or None.

        pct=0 asks receivers to test, not enforce, so it reads as "none" (Mailman issue 1004).
        Without a record at `domain`, the organizational domain's applies (Public Suffix List),
        its sp= if given.  Failures raise DNSTemporaryError (callers rewrite From); answers,
        also "no record", are cached for cache_ttl seconds, failures not at all.
        """
        found = await self.dmarc_record(domain)
        if found is None:
            return None
        record, subdomain = found
        if record.get("pct", "").strip() == "0":
            return "none"
        return dmarc_policy_of(record, subdomain)

    async def dmarc_record(self, domain: str) -> tuple[dict[str, str], bool] | None:
        """The DMARC record that governs mail From `domain` (RFC 7489 6.6.3), and whether it is
        the organizational domain's (then its sp= applies); None when neither publishes one."""
        domain = domain.rstrip(".").lower()
        record = await self._dmarc_record(domain)
        if record is not None:
            return record, False
        org_domain = organizational_domain(domain)
        if org_domain == domain:
            return None
        record = await self._dmarc_record(org_domain)
        return None if record is None else (record, True)

    async def _dmarc_record(self, domain: str) -> dict[str, str] | None:
        """The parsed tags of _dmarc.`domain` (p normalised to a valid policy), cached."""
        now = self._clock()
        cached = self._dmarc_cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await self._query(f"_dmarc.{domain}", "TXT")
        except dns.resolver.NXDOMAIN:
            answer = None
        texts = [b"".join(rr.strings).decode("ascii", "replace") for rr in answer or ()]
        records = [parse_dmarc(text) for text in texts]
        valid = [record for record in records if record is not None]
        # RFC 7489 6.6.3: more than one DMARC record means none applies.
        record = valid[0] if len(valid) == 1 else None
        self._dmarc_cache[domain] = (now + self._cache_ttl, record)
        return record


def parse_dmarc(text: str) -> dict[str, str] | None:
    """Tags of one TXT string if it is a DMARC record (v=DMARC1 first), "p" always valid.

    RFC 7489 6.6.3: a record with a missing or unknown p counts as p=none when it asks for
    reports (rua), and is ignored otherwise.
    """
    pairs = [item.partition("=") for item in text.split(";")]
    tags = {key.strip().lower(): value.strip() for key, sep, value in reversed(pairs) if sep}
    first_key, _, first_value = pairs[0]
    if first_key.strip() != "v" or first_value.strip() != "DMARC1":
        return None
    policy = tags.get("p", "").lower()
    if policy not in DMARC_POLICIES:
        if not tags.get("rua"):
            return None
        policy = "none"
    tags["p"] = policy
    if "sp" in tags:
        tags["sp"] = tags["sp"].lower()
    return tags


def dmarc_policy_of(record: dict[str, str], subdomain: bool) -> str:
    """The policy a record asks for: its sp= for a subdomain of the domain that publishes it."""
    if subdomain and record.get("sp") in DMARC_POLICIES:
        return record["sp"]
    return record["p"]


@functools.cache
def _public_suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList  # ships its list; loaded once, when first needed

    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registered domain under its public suffix (RFC 7489 3.2): ``example.co.uk`` for
    ``mail.example.co.uk``; a name that is itself a public suffix stands for itself."""
    domain = domain.rstrip(".").lower()
    return _public_suffixes().privatesuffix(domain) or domain


def resolver_for(site: Site) -> Resolver:
    """The resolver club.toml asks for: the system's, or the servers it names (tests use loopback)."""
    d = site.delivery
    return Resolver(nameservers=list(d.dns_servers) or None, port=d.dns_port, timeout=d.dns_timeout)
