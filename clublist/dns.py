"""Where mail for a domain goes (MX, null MX, implicit MX) and what DMARC policy it publishes.

Used by the delivery worker to pick hosts and by decoration to decide whether to rewrite From;
only the daemon imports it, so dnspython's import cost never reaches the store commands.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

DMARC_POLICIES = ("none", "quarantine", "reject")


class DNSPermanentError(Exception):
    """The domain cannot receive mail (NXDOMAIN, null MX, no MX and no address): give up."""


class DNSTemporaryError(Exception):
    """DNS did not give a usable answer now (SERVFAIL, timeout, no server answered): retry later."""


@dataclass(frozen=True)
class MailHost:
    host: str  # lower case, without the trailing dot
    preference: int


class Resolver:
    """A dnspython async resolver with mail-specific answers and a small DMARC cache.

    The cache is per instance, so a test or a config reload gets a fresh one.
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
        self._dmarc_cache: dict[str, tuple[float, dict[str, str] | None]] = {}

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

    async def dmarc_policy(self, domain: str) -> str | None:
        """The DMARC policy for mail From `domain`: "none", "quarantine", "reject" or None.

        pct=0 asks receivers to test, not enforce, so it reads as "none" (Mailman issue 1004).
        Without a record at `domain`, the organizational domain's applies, its sp= if given.
        That domain is taken to be the last two labels, a simplification of the Public Suffix
        List: under "co.uk"-like suffixes the fallback finds nothing, and callers then rewrite
        From anyway. Failures raise DNSTemporaryError (callers rewrite From); answers, also
        "no record", are cached for cache_ttl seconds, failures not at all.
        """
        domain = domain.rstrip(".").lower()
        record = await self._dmarc_record(domain)
        subdomain = False
        if record is None:
            org_domain = ".".join(domain.split(".")[-2:])
            if org_domain == domain:
                return None
            record = await self._dmarc_record(org_domain)
            if record is None:
                return None
            subdomain = True
        policy = record.get("p")
        if subdomain and record.get("sp") in DMARC_POLICIES:
            policy = record["sp"]
        if record.get("pct", "").strip() == "0":
            return "none"
        return policy

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
