"""Who wrote a post: SPF, every DKIM signature and DMARC alignment, checked at DATA before the 250.

:func:`authenticate` takes the bytes as received (a single re-folded header would break a
signature), the client's IP and HELO and the envelope sender, and returns an
:class:`Authentication`: each method's result, whether the From domain has an aligned pass
(SPF or DKIM for the From domain or, relaxed, its organizational domain: "authenticated",
with or without a DMARC record), and the Authentication-Results header (RFC 8601) for the
post.  The posting rules (rules.py) decide what the verdict means for the list.

dkimpy and pyspf are synchronous and do their own DNS lookups, so they run in threads (a pool
of their own, so that senders whose DNS hangs cannot take the threads every other check and the
bot need) and their lookups come back to the event loop through clublist's one
resolver (clublist/dns.py: the configured servers, a cache, a timeout), never to another
resolver.  A DNS server that fails or keeps silent makes the method ``temperror``; SPF, DKIM
and DMARC are looked up side by side, so a dead server costs one resolver timeout, and the
whole check never runs past two.  Choices:

- dkimpy's ``verify`` looks at one signature: every ``DKIM-Signature`` is verified in turn,
  and any one that passes counts.  A key that is not published is ``permerror``, a
  signature that does not verify ``fail``.
- ARC says who forwarded a message, not who wrote it: it never authenticates an author.
- ``pct=0`` in a DMARC record is a request to test: the policy is recorded, not enforced.
- When the DMARC record cannot be read, only a strictly aligned pass (the From domain
  itself) is certain; anything else is ``temperror``, so the sender retries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import dkim
import spf

from clublist import dns as clubdns

log = logging.getLogger(__name__)

SPFResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
DKIMResult = Literal["pass", "fail", "permerror", "temperror"]
DMARCResult = Literal["pass", "fail", "none", "temperror"]
ARCResult = Literal["pass", "fail", "none"]
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ARC_SEAL = re.compile(rb"^ARC-Seal[ \t]*:", re.IGNORECASE | re.MULTILINE)

_SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"})
# What may stand unquoted in an Authentication-Results value (RFC 2045 token); the rest is quoted.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
_UNSAFE = re.compile(r"[^\x21-\x7e]")
_AUTHSERV_ID = re.compile(rb"\s*(?:\([^)]*\)\s*)*([^\s;()]+)")
_HEADER_END = re.compile(rb"\r?\n(\r?\n)")  # group 1: the empty line that ends the header section


# Each check holds a thread for at most one resolver timeout per lookup; 32 let 16 posts whose
# DNS hangs wait side by side while others are checked.  Threads start only when needed.
_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="authentication")


class _TemporaryLookupError(Exception):
    """A DNS lookup for dkimpy failed for now; it must not read as "no key" (dkimpy's default)."""


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature and what verifying it gave."""

    result: DKIMResult
    domain: str  # d=, lower case; "" when the signature could not be read
    selector: str = ""
    b: str = ""  # the first characters of b=, which tell two signatures of one domain apart (RFC 6008)
    reason: str = ""


@dataclass(frozen=True)
class Authentication:
    """What SPF, DKIM and DMARC said about one message."""

    client_ip: str
    helo: str
    spf: SPFResult
    spf_domain: str  # the MAIL FROM domain, or the HELO name for the null sender
    spf_scope: Literal["mailfrom", "helo"]
    dkim: tuple[Signature, ...]
    from_domain: str  # "" unless From holds exactly one address
    dmarc: DMARCResult
    dmarc_policy: str | None = None  # what the From domain's record asks for; None without one
    dmarc_enforced: bool = True  # False for pct=0 (a test, not a request to refuse)
    aligned: tuple[str, ...] = ()  # which methods passed in alignment with From: "spf", "dkim"
    client_certificate: str = ""  # the verified subject of a TLS client certificate, "" for none
    # The ARC chain as received (RFC 8617): recorded for the seal clublist adds, never trusted here.
    arc: ARCResult = "none"
    notes: tuple[str, ...] = field(default=(), compare=False)  # why, for the log and the reasons

    @property
    def authenticated(self) -> bool:
        """An aligned pass: the From domain's own servers sent or signed the message."""
        return bool(self.aligned)

    @property
    def temperror(self) -> bool:
        """DNS trouble kept the answer from being known: the sender should retry (451)."""
        if self.authenticated:
            return False
        return (
            self.spf == "temperror"
            or self.dmarc == "temperror"
            or any(s.result == "temperror" for s in self.dkim)
        )

    @property
    def refused_by_policy(self) -> bool:
        """The From domain fails DMARC and asks receivers to reject or quarantine such mail."""
        return self.dmarc == "fail" and self.dmarc_enforced and self.dmarc_policy in ("quarantine", "reject")

    def summary(self) -> str:
        """One line for people: what failed and why."""
        signatures = [f"dkim={s.result} ({s.domain or '?'})" for s in self.dkim]
        dkim_text = ", ".join(signatures) or "no DKIM signature"
        policy = f"p={self.dmarc_policy}" if self.dmarc_policy else "no DMARC record"
        return (
            f"spf={self.spf} ({self.spf_domain or 'no domain'}), {dkim_text}, "
            f"dmarc={self.dmarc} ({self.from_domain or 'no single From address'}, {policy})"
        )

    def header_value(self, authserv_id: str) -> str:
        """The Authentication-Results value (RFC 8601), folded one method a line."""
        spf_property = "smtp.mailfrom" if self.spf_scope == "mailfrom" else "smtp.helo"
        client = f" (client-ip {self.client_ip})" if self.client_ip else ""
        lines = [f"spf={self.spf}{client} {spf_property}={_value(self.spf_domain or 'unknown')}"]
        if not self.dkim:
            lines.append("dkim=none")
        for s in self.dkim:
            text = f"dkim={s.result}"
            if s.domain:
                text += f" header.d={_value(s.domain)}"
            if s.selector:
                text += f" header.s={_value(s.selector)}"
            if s.b:
                text += f" header.b={_value(s.b)}"
            lines.append(text)
        dmarc = f"dmarc={self.dmarc}"
        if self.dmarc_policy:
            dmarc += f" (p={self.dmarc_policy}{'' if self.dmarc_enforced else ' pct=0'})"
        lines.append(f"{dmarc} header.from={_value(self.from_domain or 'unknown')}")
        if self.arc != "none":  # the chain validation the ARC seal carries on (cv=)
            lines.append(f"arc={self.arc}")
        if self.client_certificate:
            subject = self.client_certificate.replace("\\", "\\\\").replace(")", "\\)").replace("(", "\\(")
            lines.append(f"x-tls-client-cert=pass ({_UNSAFE.sub('?', subject)[:200]})")
        return f"{authserv_id};\r\n\t" + ";\r\n\t".join(lines)

    def header(self, authserv_id: str) -> bytes:
        """The whole header field, CRLF-terminated, to put at the top of the post."""
        return f"Authentication-Results: {self.header_value(authserv_id)}\r\n".encode("ascii", "replace")


def _value(text: str) -> str:
    """An RFC 8601 property value: a token as it is, anything else quoted, never a control character."""
    text = _UNSAFE.sub("?", text)[:255]
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the check ---------------------------------------------------------------


async def authenticate(
    raw: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    from_domain: str,
    resolver: clubdns.Resolver,
    client_certificate: str = "",
) -> Authentication:
    """Check SPF, every DKIM signature and DMARC for one message, side by side.

    *mail_from* is "" for the null sender; *from_domain* is the domain of the one From
    address ("" when there is not exactly one).  DNS goes through *resolver*; the whole
    check is bounded by two of its timeouts.
    """
    loop = asyncio.get_running_loop()
    lookup = _Lookup(resolver, loop)
    spf_domain = (mail_from.rpartition("@")[2] if mail_from else helo).rstrip(".").lower()
    spf_task = loop.run_in_executor(_THREADS, _check_spf, lookup, client_ip, mail_from, helo)
    dkim_task = loop.run_in_executor(_THREADS, _check_dkim, lookup, raw)
    dmarc_task = asyncio.ensure_future(_dmarc_record(resolver, from_domain))
    arc_task = asyncio.ensure_future(asyncio.to_thread(_check_arc, lookup, raw))
    tasks = (spf_task, dkim_task, dmarc_task, arc_task)
    _done, pending = await asyncio.wait(tasks, timeout=2 * resolver.timeout + 1)
    for task in pending:
        task.cancel()
    spf_result: SPFResult = "temperror" if spf_task in pending else spf_task.result()
    signatures: tuple[Signature, ...] = (
        (Signature("temperror", "", reason="DNS lookups took too long"),)
        if dkim_task in pending
        else dkim_task.result()
    )
    record: _Record = "temperror" if dmarc_task in pending else dmarc_task.result()
    arc: ARCResult = "fail" if arc_task in pending else arc_task.result()
    evaluated = _evaluate(
        client_ip=client_ip,
        helo=helo,
        spf_result=spf_result,
        spf_domain=spf_domain,
        spf_scope="mailfrom" if mail_from else "helo",
        signatures=signatures,
        from_domain=from_domain.rstrip(".").lower(),
        record=record,
        client_certificate=client_certificate,
    )
    return dataclasses.replace(evaluated, arc=arc)


_Record = tuple[dict[str, str], bool] | None | Literal["temperror"]


async def _dmarc_record(resolver: clubdns.Resolver, from_domain: str) -> _Record:
    if not from_domain:
        return None
    try:
        return await resolver.dmarc_record(from_domain)
    except clubdns.DNSTemporaryError as exc:
        log.info("DMARC record of %s: %s", from_domain, exc)
        return "temperror"
    except clubdns.DNSPermanentError:
        return None


def _evaluate(
    *,
    client_ip: str,
    helo: str,
    spf_result: SPFResult,
    spf_domain: str,
    spf_scope: Literal["mailfrom", "helo"],
    signatures: tuple[Signature, ...],
    from_domain: str,
    record: _Record,
    client_certificate: str,
) -> Authentication:
    """DMARC (RFC 7489 3.1, 6.6): an SPF or DKIM pass for a domain aligned with From."""

    def aligned() -> tuple[str, ...]:
        if record == "temperror":
            modes = {"aspf": "s", "adkim": "s"}  # the record's modes are unknown: only strict is certain
        else:
            modes = {key: (record[0].get(key, "r").lower() if record else "r") for key in ("aspf", "adkim")}
        found = []
        if spf_result == "pass" and _aligned(spf_domain, from_domain, modes["aspf"]):
            found.append("spf")
        if any(s.result == "pass" and _aligned(s.domain, from_domain, modes["adkim"]) for s in signatures):
            found.append("dkim")
        return tuple(found)

    passes = aligned() if from_domain else ()
    policy: str | None = None
    enforced = True
    if record == "temperror":
        dmarc: DMARCResult = "pass" if passes else "temperror"
    elif record is None:
        dmarc = "none"
    else:
        tags, subdomain = record
        policy = clubdns.dmarc_policy_of(tags, subdomain)
        enforced = tags.get("pct", "").strip() != "0"
        dmarc = "pass" if passes else "fail"
    return Authentication(
        client_ip=client_ip,
        helo=helo,
        spf=spf_result,
        spf_domain=spf_domain,
        spf_scope=spf_scope,
        dkim=signatures,
        from_domain=from_domain,
        dmarc=dmarc,
        dmarc_policy=policy,
        dmarc_enforced=enforced,
        aligned=passes,
        client_certificate=client_certificate,
    )


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    """Strict: the same domain; relaxed: the same organizational domain (RFC 7489 3.1)."""
    domain = domain.rstrip(".").lower()
    if not domain or not from_domain:
        return False
    if domain == from_domain:
        return True
    if mode == "s":
        return False
    return clubdns.organizational_domain(domain) == clubdns.organizational_domain(from_domain)


def trusted_client(client_ip: str, networks: Iterable[str]) -> bool:
    """Whether *client_ip* lies in one of *networks* (listen.trusted_networks and the like)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


# --- DNS for the synchronous libraries -----------------------------------------


class _Lookup:
    """clublist's resolver for code running in a worker thread: each lookup runs on the event loop."""

    def __init__(self, resolver: clubdns.Resolver, loop: asyncio.AbstractEventLoop) -> None:
        self.resolver = resolver
        self.loop = loop

    def records(self, name: str, rdtype: str) -> list[Any]:
        future = asyncio.run_coroutine_threadsafe(self.resolver.records(name, rdtype), self.loop)
        # The resolver's own timeout ends the lookup; the margin only guards against a stopped loop.
        return future.result(timeout=self.resolver.timeout + 5)


# pyspf calls the module-level spf.DNSLookup; it is pointed once at a function that finds the
# resolver of the check running in this thread (_check_spf sets it there).
_SPF_LOOKUP: contextvars.ContextVar[_Lookup] = contextvars.ContextVar("clublist_spf_lookup")


def _spf_dns(name: str, qtype: str, strict: object = True, timeout: object = None) -> list[tuple[Any, Any]]:
    """pyspf's DNSLookup on clublist's resolver: [((name, type), value), ...] or spf.TempError."""
    try:
        records = _SPF_LOOKUP.get().records(name, qtype)
    except (clubdns.DNSTemporaryError, TimeoutError) as exc:
        raise spf.TempError(f"DNS {exc}") from None
    key = (name, qtype)
    if qtype in ("A", "AAAA"):
        return [(key, rr.address) for rr in records]
    if qtype == "MX":
        return [(key, (rr.preference, rr.exchange.to_text(omit_final_dot=True))) for rr in records]
    if qtype == "PTR":
        return [(key, rr.target.to_text(omit_final_dot=True)) for rr in records]
    if qtype in ("TXT", "SPF"):
        return [(key, rr.strings) for rr in records]
    return []


spf.DNSLookup = _spf_dns


async def check_spf(resolver: clubdns.Resolver, client_ip: str, mail_from: str, helo: str) -> SPFResult:
    """SPF alone (RFC 7208): may *client_ip* send as *mail_from*?  For ``clublist check``."""
    lookup = _Lookup(resolver, asyncio.get_running_loop())
    return await asyncio.get_running_loop().run_in_executor(
        _THREADS, _check_spf, lookup, client_ip, mail_from, helo
    )


def _check_spf(lookup: _Lookup, client_ip: str, mail_from: str, helo: str) -> SPFResult:
    """RFC 7208 for the envelope sender (postmaster@HELO for the null sender); runs in a thread."""
    if not client_ip or not (mail_from or helo):
        return "none"
    _SPF_LOOKUP.set(lookup)
    try:
        result, _code, _explanation = spf.query(i=client_ip, s=mail_from, h=helo, timeout=60).check()
    except Exception as exc:  # pyspf raises on some malformed input rather than answering
        log.info("SPF check of %s from %s failed: %s", mail_from or helo, client_ip, exc)
        return "permerror"
    result = str(result).lower()
    return result if result in _SPF_RESULTS else "permerror"  # type: ignore[return-value]


def _check_dkim(lookup: _Lookup, raw: bytes) -> tuple[Signature, ...]:
    """Verify every DKIM-Signature of *raw*, in order; runs in a thread."""
    try:
        verifier = dkim.DKIM(raw, minkey=1024)
    except Exception as exc:  # a message dkimpy cannot read has no signature it could verify
        log.info("DKIM: cannot read the message: %s", exc)
        return ()
    count = sum(1 for name, _value in verifier.headers if name.lower() == b"dkim-signature")
    return tuple(_verify_one(verifier, index, lookup) for index in range(count))


def _verify_one(verifier: dkim.DKIM, index: int, lookup: _Lookup) -> Signature:
    missing: list[str] = []

    def txt(name: bytes | str, timeout: object = None) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = lookup.records(text, "TXT")
        except (clubdns.DNSTemporaryError, TimeoutError) as exc:
            raise _TemporaryLookupError(str(exc)) from None
        if not found:
            missing.append(text)
            return None
        return b"".join(found[0].strings)

    def describe(result: DKIMResult, reason: str = "") -> Signature:
        fields: dict[bytes, bytes] = getattr(verifier, "signature_fields", None) or {}
        return Signature(
            result,
            _text(fields.get(b"d", b"")).lower(),
            _text(fields.get(b"s", b"")),
            _text(fields.get(b"b", b""))[:8],
            reason,
        )

    verifier.signature_fields = {}
    try:
        ok = verifier.verify(idx=index, dnsfunc=txt)
    except _TemporaryLookupError as exc:
        return describe("temperror", str(exc))
    except dkim.DKIMException as exc:
        return describe("permerror", str(exc))
    except Exception as exc:  # dkimpy on input it did not expect: the signature proves nothing
        return describe("permerror", f"{type(exc).__name__}: {exc}")
    if ok:
        return describe("pass")
    if missing:
        return describe("permerror", f"no key published at {missing[0]}")
    return describe("fail", "signature did not verify")


def _check_arc(lookup: _Lookup, raw: bytes) -> ARCResult:
    """The message's ARC chain as received: none without one, else dkimpy's pass or fail; in a thread.

    Only the seal clublist adds uses it (its cv=), so a key that cannot be fetched counts as a
    failed chain: receivers then disregard the earlier sets, which is the safe side.
    """
    head = _HEADER_END.split(raw, 1)[0]
    if not _ARC_SEAL.search(head):
        return "none"

    def txt(name: bytes | str, timeout: object = None) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = lookup.records(text, "TXT")
        except (clubdns.DNSTemporaryError, TimeoutError):
            return None
        return b"".join(found[0].strings) if found else None

    try:
        result, _sets, reason = dkim.arc_verify(raw, dnsfunc=txt)
    except Exception as exc:  # dkimpy on input it did not expect: the chain proves nothing
        result, reason = b"fail", f"{type(exc).__name__}: {exc}"
    if result != b"pass":
        log.info("ARC chain did not validate: %s", reason)
    return "pass" if result == b"pass" else "fail"


def _text(value: bytes) -> str:
    return "".join(value.decode("ascii", "replace").split())


# --- Authentication-Results of others ------------------------------------------------


def remove_own_results(raw: bytes, authserv_ids: Iterable[str]) -> bytes:
    """*raw* without the Authentication-Results fields that claim one of *authserv_ids*.

    RFC 8601 5: only the receiver itself may speak for its authserv-id; such a field in an
    incoming message is a forgery (or a loop) and would make our own results ambiguous.
    Other fields, and every byte of the rest, are kept as they are.
    """
    end = _HEADER_END.search(raw)
    head_end = end.start(1) if end else len(raw)
    if b"authentication-results" not in raw[:head_end].lower():
        return raw
    ours = {i.lower().encode("ascii", "replace") for i in authserv_ids}
    lines = raw[:head_end].splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = False
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            match = _AUTHSERV_ID.match(value)
            dropping = match is not None and match[1].lower() in ours
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[head_end:]
