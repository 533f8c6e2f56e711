"""The DNS check: what receivers look up before they trust the club's mail.

Every lookup goes through clublist's resolver (``delivery.dns_servers`` and
``delivery.dns_port``), so the check sees what the daemon sees.  The sending
IP is ``--public-ip`` or the address of ``listen.hostname``; SPF is evaluated
for it by the code that checks incoming mail (mail/authentication.py).  The
DKIM record of each selector in force is compared with the public half of its
private key (var/dkim/SELECTOR.key), as ``clublist dkim show`` renders it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable

from clublist.check import Finding, Target
from clublist.dns import DNSPermanentError, DNSTemporaryError, Resolver, dmarc_policy_of
from clublist.errors import ClublistError
from clublist.mail.authentication import check_spf


def run(target: Target) -> list[Finding]:
    return asyncio.run(_run(target))


async def _run(target: Target) -> list[Finding]:
    from clublist.dns import resolver_for

    assert target.site is not None
    resolver = resolver_for(target.site)
    domain = target.site.domain
    findings = [await _guarded("dns.mx", _mx(resolver, domain, target.hostname))]
    ip, found = await _sending_ip(resolver, target)
    findings += found
    if ip is not None:
        findings.append(await _guarded("dns.ptr", _ptr(resolver, ip, target.helo_name)))
        findings.append(await _guarded("dns.spf", _spf(resolver, ip, target)))
    findings += await _dkim(resolver, target)
    findings.append(await _guarded("dns.dmarc", _dmarc(resolver, domain, target)))
    findings.append(
        await _guarded(
            "dns.mta-sts", _info(resolver, "dns.mta-sts", f"_mta-sts.{domain}", "v=STSv1", "MTA-STS")
        )
    )
    findings.append(
        await _guarded(
            "dns.tls-rpt",
            _info(resolver, "dns.tls-rpt", f"_smtp._tls.{domain}", "v=TLSRPTv1", "TLS reporting"),
        )
    )
    return findings


async def _guarded(check: str, look: Awaitable[Finding]) -> Finding:
    """Run one lookup; DNS trouble is a warning (the answer is unknown, not wrong)."""
    try:
        finding = await look
    except (DNSTemporaryError, DNSPermanentError) as exc:
        return Finding(check, "warn", f"DNS lookup failed: {exc}", "check delivery.dns_servers and try again")
    return finding


async def _mx(resolver: Resolver, domain: str, hostname: str) -> Finding:
    records = sorted(
        (rr.preference, rr.exchange.to_text(omit_final_dot=True))
        for rr in await resolver.records(domain, "MX")
    )
    record = f"{domain}. IN MX 10 {hostname}."
    if not records:
        return Finding(
            "dns.mx",
            "fail",
            f"{domain} has no MX record: senders cannot find the club's server",
            f"publish {record}",
        )
    if all(host in ("", ".") for _, host in records):
        return Finding(
            "dns.mx", "fail", f"{domain} publishes a null MX (it accepts no mail)", f"replace it by {record}"
        )
    listed = ", ".join(f"{pref} {host}" for pref, host in records)
    return Finding("dns.mx", "ok", f"{domain} MX: {listed}")


async def _sending_ip(resolver: Resolver, target: Target) -> tuple[str | None, list[Finding]]:
    """The address receivers see the club's mail come from, or why it is not known."""
    assert target.site is not None
    if target.public_ip:
        return target.public_ip, []
    if target.site.delivery.mode == "smarthost" and target.site.delivery.smarthost:
        return None, [
            Finding(
                "dns.ptr",
                "info",
                f"mail leaves through the smarthost {target.site.delivery.smarthost}: its PTR and SPF are "
                "the relay's to pass",
                "run 'clublist check --public-ip IP' with the relay's address to check them",
            )
        ]
    host = target.hostname
    try:
        addresses = await resolver.addresses(host)
    except (DNSTemporaryError, DNSPermanentError) as exc:
        return None, [Finding("dns.ptr", "warn", f"DNS lookup failed: {exc}", "check delivery.dns_servers")]
    public = [a for a in addresses if ipaddress.ip_address(a).is_global]
    if not public:
        return None, [
            Finding(
                "dns.ptr",
                "fail",
                f"{host} has no public address (A/AAAA): the sending IP is unknown",
                f"publish {host}. IN A YOUR.IP, or run 'clublist check --public-ip IP'",
            )
        ]
    return public[0], []


async def _ptr(resolver: Resolver, ip: str, helo: str) -> Finding:
    reverse = _reverse_name(ip)
    names = await resolver.ptr(ip)
    if not names:
        return Finding(
            "dns.ptr",
            "fail",
            f"{ip} has no PTR record: many receivers refuse mail from it",
            f"ask the provider of {ip} to publish {reverse}. IN PTR {helo}.",
        )
    confirmed = [name for name in names if ip in {_canonical(a) for a in await resolver.addresses(name)}]
    if not confirmed:
        return Finding(
            "dns.ptr",
            "fail",
            f"{ip} has PTR {', '.join(names)}, which does not resolve back to it (no forward-confirmed DNS)",
            f"publish {names[0]}. IN {'AAAA' if ':' in ip else 'A'} {ip} or have the PTR set to {helo}",
        )
    if helo.lower() not in confirmed:
        return Finding(
            "dns.ptr",
            "warn",
            f"{ip} has PTR {confirmed[0]} (forward-confirmed), but clublist greets as {helo}",
            f"clublist config set delivery.helo_name {confirmed[0]}",
        )
    return Finding("dns.ptr", "ok", f"{ip} has PTR {helo}, which resolves back to it")


async def _spf(resolver: Resolver, ip: str, target: Target) -> Finding:
    assert target.site is not None
    domain = target.site.domain
    sender = target.site.bounce_address
    result = await check_spf(resolver, ip, sender, target.helo_name)
    records = [t for t in await _txt(resolver, domain) if t.lower().startswith("v=spf1")]
    mechanism = f"ip{'6' if ':' in ip else '4'}:{ip}"
    if result == "pass":
        return Finding("dns.spf", "ok", f"SPF of {domain} passes for {ip}")
    if not records:
        return Finding(
            "dns.spf",
            "fail",
            f"{domain} publishes no SPF record",
            f'publish {domain}. IN TXT "v=spf1 {mechanism} -all"',
        )
    if result == "temperror":
        return Finding(
            "dns.spf", "warn", f"SPF of {domain} could not be evaluated (DNS trouble)", "try again"
        )
    record = records[0]
    head, _, tail = record.partition(" ")
    suggested = f"{head} {mechanism} {tail}".strip()
    return Finding(
        "dns.spf",
        "fail",
        f"SPF of {domain} gives {result} for {ip} ({record})",
        f'change the TXT record of {domain} to "{suggested}"',
    )


async def _dkim(resolver: Resolver, target: Target) -> list[Finding]:
    """Each selector in force: its key loads and SELECTOR._domainkey publishes its public half."""
    assert target.site is not None
    selectors = [s for s in (target.site.dkim.selector, target.site.dkim.ed25519_selector) if s]
    if not selectors:
        return [
            Finding(
                "dns.dkim",
                "warn",
                "no DKIM key (dkim.selector is empty): the club's mail leaves unsigned, and Gmail and Yahoo "
                "want bulk mail signed",
                "clublist dkim keygen, then publish the record it prints",
            )
        ]
    return [await _guarded("dns.dkim", _dkim_selector(resolver, target, s)) for s in selectors]


async def _dkim_selector(resolver: Resolver, target: Target, selector: str) -> Finding:
    from clublist.outbound import signing

    assert target.site is not None
    path = signing.key_path(target.state_path, selector)
    try:
        expected = signing.dns_record(signing.load_key(path))
    except ClublistError as exc:
        return Finding("dns.dkim", "fail", str(exc), f"clublist dkim keygen --selector {selector}")
    name = f"{selector}._domainkey.{target.site.domain}"
    publish = f"publish {name}. IN TXT \"{expected}\" ('clublist dkim show' prints it)"
    keys = [_dkim_tags(text).get("p") for text in await _txt(resolver, name)]
    keys = [key for key in keys if key is not None]
    if not keys:
        return Finding(
            "dns.dkim", "fail", f"no DKIM record at {name}: signatures cannot be verified", publish
        )
    wanted = _dkim_tags(expected)["p"]
    if wanted in keys:
        return Finding("dns.dkim", "ok", f"{name} publishes the public key of {path}")
    revoked = " (an empty p=, the key is revoked)" if keys == [""] else ""
    return Finding(
        "dns.dkim",
        "fail",
        f"the DKIM record at {name} holds another key than {path}{revoked}: every signature fails",
        publish,
    )


def _dkim_tags(text: str) -> dict[str, str]:
    """The tags of a DKIM key record (RFC 6376 3.6.1); whitespace inside values is folding."""
    pairs = (item.partition("=") for item in text.split(";"))
    return {key.strip(): "".join(value.split()) for key, sep, value in pairs if sep}


async def _dmarc(resolver: Resolver, domain: str, target: Target) -> Finding:
    assert target.site is not None
    name = f"_dmarc.{domain}"
    found = await resolver.dmarc_record(domain)
    record = f'{name}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:{target.site.site.admin}"'
    if found is None:
        return Finding(
            "dns.dmarc",
            "fail",
            f"{domain} publishes no DMARC record (or more than one): Gmail and Yahoo refuse bulk mail "
            "without one",
            f"publish {record}",
        )
    policy = dmarc_policy_of(*found)
    if policy == "none":
        return Finding(
            "dns.dmarc",
            "warn",
            f"the DMARC policy of {domain} is p=none: forged mail in the club's name is still delivered",
            f"once reports show the club's mail passes, publish {record}",
        )
    return Finding("dns.dmarc", "ok", f"{domain} publishes DMARC p={policy}")


async def _info(resolver: Resolver, check: str, name: str, version: str, what: str) -> Finding:
    records = [t for t in await _txt(resolver, name) if t.startswith(version)]
    if records:
        return Finding(check, "info", f"{what} published at {name}: {records[0]}")
    return Finding(check, "info", f"no {what} record at {name} (optional)")


def _reverse_name(ip: str) -> str:
    import dns.reversename

    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address))


async def _txt(resolver: Resolver, name: str) -> list[str]:
    return [text.decode("utf-8", "replace") for text in await resolver.txt(name)]
