"""The SMTP listener's handler: translates between SMTP and clublist's rules and queue.

It holds no policy of its own.  RCPT asks :func:`route` what a local address
is and :func:`rules.may_post` whether the sender may post there, so
strangers are refused during the dialogue; DATA checks who wrote the post
(mail/authentication.py: SPF, DKIM, DMARC, for the client a trusted proxy
names by XFORWARD), runs the posting rules, decorates, and commits the
message with all its delivery rows in one transaction before answering 250.
Anything unexpected answers ``451 4.3.0``: the sender keeps the message and
tries again.

TLS protects the transfer.  With ``tls.client_certificates = "ask"`` a
client certificate is requested (never required) and a verified subject is
recorded in Received and Authentication-Results: it names the server that
connected, which says nothing about who wrote the post, and most senders
present none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.utils import format_datetime
from typing import Any, ClassVar, Literal, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from clublist.club.model import (
    MailingList,
    Member,
    address_key,
    is_plain_address,
    outbound_size_limit,
    parse_address,
)
from clublist.club.store import Club
from clublist.dns import Resolver
from clublist.mail import authentication, conversation, decorate, moderation, replies, rules
from clublist.mail import enqueue as posting
from clublist.state import queue
from clublist.state.db import Writer, is_transient

log = logging.getLogger(__name__)

TargetKind = Literal["post", "owner", "admin", "bot", "bounce"]


@dataclass(frozen=True)
class Target:
    """What a local recipient address is."""

    kind: TargetKind
    address: str
    mailing_list: MailingList | None = None


def route(club: Club, address: str) -> Target | str:
    """The target a recipient address names, or the SMTP reply refusing it.

    Only the site's own addresses are local; anything else, including
    source routes, ``%`` hacks, quoted local parts and address literals,
    is refused, so clublist is never an open relay.
    """
    try:
        parsed = parse_address(address)
    except Exception:
        return replies.RELAY_DENIED.format(address=_printable(address))
    local, _, domain = parsed.rpartition("@")
    if domain.lower() != club.site.domain:
        return replies.RELAY_DENIED.format(address=parsed)
    local = local.lower()
    site = club.site.site
    if local in ("postmaster", "abuse"):
        return Target("admin", parsed)
    if local in club.lists:
        return Target("post", parsed, club.lists[local])
    if local.endswith("-owner") and local.removesuffix("-owner") in club.lists:
        return Target("owner", parsed, club.lists[local.removesuffix("-owner")])
    if local == "bot" or (local.endswith("-request") and local.removesuffix("-request") in club.lists):
        mailing_list = club.lists.get(local.removesuffix("-request"))
        return Target("bot", parsed, mailing_list)
    if local == site.bounce_local_part or local.startswith(f"{site.bounce_local_part}+"):
        return Target("bounce", parsed)
    return replies.UNKNOWN_RECIPIENT.format(address=parsed)


MAX_HOPS = 30  # Received headers; RFC 5321 6.3 asks for a limit, Postfix uses 50


def _hops(raw: bytes) -> int:
    """How many Received headers the message carries: many means it is going round in a loop."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return sum(1 for line in head.splitlines() if line[:9].lower() == b"received:")


def _sender(envelope: Envelope) -> str:
    """The envelope sender, "" for the null sender."""
    return "" if envelope.mail_from in (None, "", "<>") else envelope.mail_from


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


CommitJob = Callable[[sqlite3.Connection], str]


class MailProcessor(Protocol):
    """What handles mail to bot@/LIST-request@ (the bot) or to the bounce addresses.

    ``refuse`` runs at RCPT; ``process`` runs at DATA and returns a job for
    the commit transaction (it may do its own work first, such as running
    a command), whose return value is a note for the log.  ``authenticated``
    says that From is the sender and its domain passed SPF or DKIM in
    alignment (or the client is in listen.trusted_networks).
    """

    def refuse(self, club: Club, target: Target, sender: str) -> str | None: ...

    async def process(
        self, club: Club, target: Target, sender: str, message: bytes, now: float, *, authenticated: bool
    ) -> CommitJob: ...


@dataclass
class SessionLimits:
    """Open connections, counted across all sessions and per client address, and the sessions
    themselves, which a shutdown closes (``closing``)."""

    max_connections: int
    max_per_client: int = 10
    active: int = 0
    per_client: dict[str, int] = field(default_factory=dict)
    sessions: set[Listener] = field(default_factory=set)
    closing: bool = False

    def close_idle(self) -> None:
        """Start a shutdown: every session between commands is answered 421 and closed now,
        the others when their command (a DATA being received or committed) has been answered."""
        self.closing = True
        for session in list(self.sessions):
            if not session.in_command:
                session.close_for_shutdown()

    def busy(self) -> bool:
        return any(session.in_command for session in self.sessions)

    def close_all(self) -> None:
        for session in list(self.sessions):
            session.close_for_shutdown()


@dataclass(frozen=True)
class Client:
    """The machine that sent the message: the peer, or the one a trusted proxy named by XFORWARD."""

    address: str  # an IP address as text; "" when unknown
    name: str = ""  # its reverse DNS name as the proxy found it; "" when unknown
    helo: str = ""
    protocol: str = ""  # "SMTP"/"ESMTP" as the proxy saw it; "" for our own session's
    proxy: str = ""  # the proxy's address when XFORWARD named the client


_XFORWARD_ATTRIBUTES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})
_XFORWARD_USED = "NAME ADDR PROTO HELO"
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


class Listener(SMTP):
    """aiosmtpd's SMTP with connection limits (aiosmtpd has none of its own: in all and per
    client address, peers in ``trusted_proxies`` not counted), a shorter ``idle_timeout``
    outside a mail transaction, a graceful shutdown (421 4.3.2 between commands), Postfix's
    XFORWARD for the peers in ``trusted_proxies``, and no AUTH: clublist takes mail from mail
    servers, which do not log in, so it offers nothing a client could try and fail."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: SessionLimits,
        trusted_proxies: Sequence[str] = (),
        idle_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._idle_timeout = idle_timeout
        super().__init__(handler, **kwargs)
        self._limits = limits
        self._counted = False
        self._client_key = ""
        self._trusted_proxies = tuple(trusted_proxies)
        self._forwarded: dict[str, str] = {}
        self.in_command = False
        self._last_reply = ""
        self._smtp_methods = {name: self._tracked(method) for name, method in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        self._forwarded = {}  # STARTTLS starts the session afresh (RFC 3207 4.2), XFORWARD too
        if first:
            refusal = self._count()
            if refusal:
                log.info("refused connection from %s: %s", self.peer_address, refusal)
                transport.write(f"{refusal}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()

    def _count(self) -> str | None:
        """Count this session in; the reply refusing it, if it is one too many."""
        limits = self._limits
        self._counted = True
        limits.active += 1
        limits.sessions.add(self)
        client = _plain_ip(self.peer_address)
        if not authentication.trusted_client(client, self._trusted_proxies):
            self._client_key = client
            limits.per_client[client] = limits.per_client.get(client, 0) + 1
        if limits.closing:
            return replies.SHUTTING_DOWN
        if limits.active > limits.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._client_key and limits.per_client[client] > limits.max_per_client:
            return replies.render(replies.TOO_MANY_CONNECTIONS_FROM_CLIENT, address=client)
        return None

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            limits = self._limits
            limits.active -= 1
            limits.sessions.discard(self)
            if self._client_key:
                left = limits.per_client.pop(self._client_key) - 1
                if left:
                    limits.per_client[self._client_key] = left
        super().connection_lost(error)

    # --- timeouts and shutdown -----------------------------------------------------------

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Outside a mail transaction the session gets ``idle_timeout``, inside it ``timeout``."""
        if duration is None and self._idle_timeout is not None and not self._in_transaction():
            duration = self._idle_timeout
        super()._reset_timeout(duration)

    def _in_transaction(self) -> bool:
        envelope = getattr(self, "envelope", None)
        return envelope is not None and bool(envelope.mail_from)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self._in_transaction() and not self.transport.is_closing():
            self.transport.write(f"{replies.IDLE_TIMEOUT}\r\n".encode())  # type: ignore[attr-defined]
        super()._timeout_cb()

    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(arg)
        self._reset_timeout()  # a transaction has begun: the longer timeout from here

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL FROM or RCPT TO path and what follows it, as aiosmtpd reads them.

        aiosmtpd defines a typing.Protocol class on every call and parses with email's header
        parser, a tenth of the event loop's time for a post.  A path ``<local@host>`` in plain
        dot-atom form, which that parser gives back as it is, is read here; any other goes to it.
        """
        path = arg.lstrip()
        end = path.find(">")
        if path.startswith("<") and end > 0:
            address, rest = path[1:end], path[end + 1 :].lstrip()  # the parser eats the blanks too
            local = address.rpartition("@")[0]
            long = self.local_part_limit and len(local) > self.local_part_limit
            if is_plain_address(address) and not long and not rest.startswith("("):  # a comment
                return address, rest
        return super()._getaddr(arg)

    async def push(self, status: str) -> None:  # type: ignore[override]
        self._last_reply = status
        await super().push(status)

    def _tracked(self, method: Callable[[str], Any]) -> Callable[[str], Any]:
        """*method* (an ``smtp_*`` command) marking the session busy while it runs; in a
        shutdown the session is answered 421 and closed once the command has been answered."""

        @functools.wraps(method)
        async def run(arg: str) -> None:
            self.in_command = True
            try:
                await method(arg)
            finally:
                self.in_command = False
            if self._limits.closing:
                self.close_for_shutdown()

        return run

    @property
    def closing(self) -> bool:
        return self._limits.closing

    def close_for_shutdown(self) -> None:
        """421 4.3.2 (unless that was just said) and close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._last_reply.startswith("421"):
            transport.write(f"{replies.SHUTTING_DOWN}\r\n".encode())  # type: ignore[attr-defined]
            self._last_reply = replies.SHUTTING_DOWN
        transport.close()

    @property
    def peer_address(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else ""

    @property
    def xforward_allowed(self) -> bool:
        """Whether this peer may name the real client (aiosmtpd's HELP asks too)."""
        return bool(self._trusted_proxies) and authentication.trusted_client(
            self.peer_address, self._trusted_proxies
        )

    def client(self) -> Client:
        """The client as XFORWARD named it, else the peer itself."""
        helo = self.session.host_name if self.session is not None else ""
        forwarded = self._forwarded
        if not forwarded:
            return Client(_plain_ip(self.peer_address), helo=str(helo or ""))
        return Client(
            _plain_ip(forwarded.get("ADDR", "")),
            forwarded.get("NAME", ""),
            forwarded.get("HELO", ""),
            forwarded.get("PROTO", ""),
            proxy=self.peer_address,
        )

    @syntax("XFORWARD attribute=value ...", when="xforward_allowed")
    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD (XFORWARD_README): the real client's NAME, ADDR, PROTO and HELO.

        Allowed between transactions only; what it names holds for the session's next
        transactions, until another XFORWARD changes it or STARTTLS starts the session anew.
        """
        if not self.xforward_allowed:
            await self.push(replies.XFORWARD_REFUSED)
            return
        if self.envelope is not None and self.envelope.mail_from:
            await self.push(replies.XFORWARD_IN_TRANSACTION)
            return
        attributes: dict[str, str] = {}
        for item in arg.split():
            name, equals, value = item.partition("=")
            if not equals or name.upper() not in _XFORWARD_ATTRIBUTES:
                await self.push(replies.render(replies.XFORWARD_BAD_ATTRIBUTE, attribute=name))
                return
            value = _XTEXT.sub(lambda m: chr(int(m[1], 16)), value)
            attributes[name.upper()] = "" if value.upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else value
        if not attributes:
            await self.push(replies.XFORWARD_SYNTAX)
            return
        self._forwarded.update(attributes)
        await self.push(replies.XFORWARD_OK)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(replies.AUTH_NOT_OFFERED)


def _plain_ip(address: str) -> str:
    """``192.0.2.1`` from ``::ffff:192.0.2.1`` and ``2001:db8::1`` from XFORWARD's ``IPV6:2001:db8::1``;
    "" for what is no IP address (a Unix socket, [UNAVAILABLE])."""
    if address[:5].upper() == "IPV6:":
        address = address[5:]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True)
class Incoming:
    """A message as DATA received it (our own Authentication-Results removed), read once for all
    its targets."""

    raw: bytes
    message: decorate.ReceivedMessage  # header values as received; the rules and decoration read it
    from_address: Address | None  # the one address of its From header, None unless exactly one
    subject: str  # decoded, cut to 200 characters for the queue and the log

    @classmethod
    def read(cls, raw: bytes) -> Incoming:
        message = decorate.parse(raw)
        subject = decorate.header_text(message.get("Subject", ""))[:200]
        return cls(raw, message, decorate.sole_address(message, "From"), subject)


@dataclass
class Transaction:
    """What the handler keeps for one mail transaction (MAIL FROM to the end of DATA)."""

    club: Club  # one lists.d snapshot for the whole transaction
    targets: list[Target] = field(default_factory=list)


# --- what DATA decided for one target, ready to commit ------------------------------


@dataclass(frozen=True)
class Posted:
    """A post to a list, decorated, with its recipients."""

    kind: ClassVar[str] = "post"
    target: Target
    ready: posting.ReadyPost  # decorated, with its recipients: what the queue takes
    author: Member | None  # whose limits it counts against (ready.author_key is the key)
    poster: str  # the address the post comes from, for the limit replies


@dataclass(frozen=True)
class Held:
    """A post kept for the list's owners, as received (with our trace headers)."""

    kind: ClassVar[str] = "held"
    target: Target
    content: bytes
    reason: str
    sender: str
    author: str
    subject: str
    notice_once: str = ""  # moderation.hold: tell the owners once a day of holds on this topic


@dataclass(frozen=True)
class Forwarded:
    """Mail to a list's owners or to postmaster@/abuse@, passed on unchanged."""

    kind: ClassVar[str] = "forward"
    target: Target
    recipients: tuple[str, ...]
    content: bytes
    subject: str


@dataclass(frozen=True)
class Processed:
    """Mail the bot or the bounce processor read; its job runs in the commit."""

    kind: ClassVar[str] = "processed"
    target: Target
    job: CommitJob


Outcome = Posted | Held | Forwarded | Processed


class LimitReached(Exception):
    """The commit found the author over a limit: nothing of the message is committed."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class InboundHandler:
    """The aiosmtpd handler.  ``club`` returns the lists.d snapshot in force."""

    def __init__(
        self,
        *,
        club: Callable[[], Club],
        writer: Writer,
        reader: sqlite3.Connection,
        resolver: Resolver,
        on_queued: Callable[[], None],
        hostname: str,
        rules_in_force: Sequence[rules.Rule] = rules.RULES,
        processors: dict[str, MailProcessor] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.club = club
        self.writer = writer
        self.reader = reader
        self.resolver = resolver
        self.on_queued = on_queued
        self.hostname = hostname
        self.rules = rules_in_force
        self.processors = processors or {}
        self.clock = clock
        self.in_progress = 0  # messages between end of DATA and their reply
        # aiosmtpd makes a new Envelope for every transaction; the entry goes with it.
        self._transactions: weakref.WeakKeyDictionary[Envelope, Transaction] = weakref.WeakKeyDictionary()

    # aiosmtpd calls this for exceptions our wrappers did not catch.
    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error in the SMTP session", exc_info=error)
        return replies.TEMPORARY_FAILURE

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """No AUTH (mail servers do not log in); XFORWARD only for a trusted proxy."""
        session.host_name = hostname
        kept = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        if isinstance(server, Listener) and server.xforward_allowed:
            kept.insert(len(kept) - 1, f"250-XFORWARD {_XFORWARD_USED}")
        return kept

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        try:
            sender = "" if address in ("", "<>") else address
            if sender:
                try:
                    parse_address(sender)
                except Exception:
                    return replies.BAD_SENDER_SYNTAX.format(sender=_printable(sender))
            envelope.mail_from = sender or "<>"  # aiosmtpd takes an empty one for "no MAIL yet"
            envelope.mail_options.extend(mail_options)
            self._transactions[envelope] = Transaction(self.club())
            return replies.SENDER_OK
        except Exception:
            log.exception("internal error at MAIL FROM")
            return replies.TEMPORARY_FAILURE

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            transaction = self._transactions[envelope]
            club = transaction.club
            if len(envelope.rcpt_tos) >= club.site.listen.max_recipients:
                return replies.TOO_MANY_RECIPIENTS
            target = route(club, address)
            if isinstance(target, str):
                log.info("refused RCPT %s from %s: %s", _printable(address), envelope.mail_from, target)
                return target
            refusal = self._refuse_sender(club, target, _sender(envelope))
            if refusal:
                log.info("refused RCPT %s from %s: %s", target.address, envelope.mail_from, refusal)
                return refusal
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            transaction.targets.append(target)
            return replies.RECIPIENT_OK
        except Exception:
            log.exception("internal error at RCPT TO")
            return replies.TEMPORARY_FAILURE

    def rcpt_refusal(self, address: str, sender: str) -> str | None:
        """What RCPT TO *address* from *sender* ("" for <>) would be refused with, or None;
        Postfix's policy service (mail/policy.py) asks it before the message is sent."""
        club = self.club()
        target = route(club, address)
        refusal = target if isinstance(target, str) else self._refuse_sender(club, target, sender)
        if refusal:
            shown = _printable(address)
            log.info("policy service refused RCPT %s from %s: %s", shown, sender or "<>", refusal)
        return refusal

    def _refuse_sender(self, club: Club, target: Target, sender: str) -> str | None:
        """The reply refusing *sender* for *target*, or None to accept (more checks at DATA).

        For a list, the envelope sender must be someone who may post there, after unwrapping
        BATV and SRS (rules.envelope_address); who wrote the post is decided at DATA, by From.
        """
        if target.kind in ("admin", "owner"):
            return None  # postmaster@ and the owners must always be reachable
        if target.kind in ("bot", "bounce"):
            processor = self.processors.get(target.kind)
            if processor is None:
                return replies.UNKNOWN_RECIPIENT.format(address=target.address)
            return processor.refuse(club, target, sender)
        if not sender:
            return replies.NULL_SENDER_NOT_ALLOWED
        assert target.mailing_list is not None
        return rules.rcpt_refusal(club, target.mailing_list, sender)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if isinstance(server, Listener) and server.closing:
            # The end of DATA came after the shutdown began: nothing is committed, the sender
            # keeps the message and retries (only a DATA complete before it is committed).
            log.info("refused message from %s: shutting down", envelope.mail_from)
            return replies.SHUTTING_DOWN
        self.in_progress += 1
        try:
            return await self._data(server, session, envelope)
        except RecursionError:
            log.warning("refused message from %s: MIME nested too deeply", envelope.mail_from)
            return replies.TOO_DEEPLY_NESTED
        except Exception as exc:
            if is_transient(exc):  # locked or full: nothing to debug, the sender retries
                log.warning("state database: %s; answered 451 to %s", exc, envelope.mail_from)
            else:
                log.exception("internal error at DATA from %s", envelope.mail_from)
            return replies.TEMPORARY_FAILURE
        finally:
            self.in_progress -= 1

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transaction = self._transactions.pop(envelope)
        club, targets = transaction.club, transaction.targets
        original = envelope.original_content or b""
        if b"\x00" in original:
            log.warning("refused message from %s: it contains NUL bytes", envelope.mail_from)
            return replies.NUL_IN_MESSAGE
        hops = _hops(original)
        if hops > MAX_HOPS:
            log.warning("refused message from %s: %d Received headers, a mail loop", envelope.mail_from, hops)
            return replies.TOO_MANY_HOPS
        client = server.client() if isinstance(server, Listener) else Client(_peer_address(session))
        certificate = _client_certificate(session) if club.site.tls.client_certificates == "ask" else None
        incoming = Incoming.read(authentication.remove_own_results(original, self._authserv_ids(club)))
        verdict, trusted = await self._authenticate(club, targets, client, envelope, incoming, certificate)
        trace = self._received(session, client, certificate) + self._results(club, client, verdict, trusted)
        outcomes: list[Outcome] = []
        covered: set[str] = set()
        # Posts first: a refusal must come before the bot has acted on the same message.
        for target in sorted(targets, key=lambda t: t.kind != "post"):
            if target.kind == "post":
                result = await self._post(club, target, envelope, incoming, trace, verdict, covered)
                if isinstance(result, str):
                    log.info("refused post to %s from %s: %s", target.address, envelope.mail_from, result)
                    return result
                if result is not None:
                    outcomes.append(result)
            elif target.kind in self.processors:
                processor = self.processors[target.kind]
                authenticated = trusted or self._author_authenticated(incoming, envelope, verdict)
                job = await processor.process(
                    club, target, _sender(envelope), incoming.raw, self.clock(), authenticated=authenticated
                )
                outcomes.append(Processed(target, job))
            else:
                outcomes.append(self._forward(club, target, incoming, trace))
        if not outcomes:
            log.info("discarded message from %s to %s", envelope.mail_from, ", ".join(envelope.rcpt_tos))
            return replies.DISCARDED
        try:
            queue_ids = await self._commit(club, outcomes)
        except LimitReached as refused:
            log.info("refused message from %s: %s", envelope.mail_from, refused.reply)
            return refused.reply
        summary = [
            f"{o.target.address}: {o.kind} {q or '(no recipients)'}"
            + (f" ({len(o.ready.recipients)} recipients)" if isinstance(o, Posted) and q else "")
            for o, q in zip(outcomes, queue_ids, strict=True)
        ]
        message_id = (
            _printable(decorate.header_text(incoming.message.get("Message-ID", ""))) or "(no Message-ID)"
        )
        log.info(
            "accepted message %s from %s [%s]: %s",
            message_id,
            envelope.mail_from,
            client.address or "unknown",
            "; ".join(summary),
        )
        self.on_queued()
        reply = replies.HELD if all(isinstance(o, Held) for o in outcomes) else replies.OK_QUEUED
        return reply.format(queue_id=",".join(q for q in queue_ids if q))

    async def _authenticate(
        self,
        club: Club,
        targets: list[Target],
        client: Client,
        envelope: Envelope,
        incoming: Incoming,
        certificate: str | None,
    ) -> tuple[authentication.Authentication | None, bool]:
        """SPF, DKIM and DMARC for a message to a list or the bot (the only ones that ask who
        wrote it), and whether the client is trusted (listen.trusted_networks: no check)."""
        if authentication.trusted_client(client.address, club.site.listen.trusted_networks):
            return None, True
        if not any(t.kind in ("post", "bot") for t in targets):
            return None, False
        from_domain = incoming.from_address.domain if incoming.from_address else ""
        verdict = await authentication.authenticate(
            envelope.original_content or b"",
            client_ip=client.address,
            helo=client.helo,
            mail_from=_sender(envelope),
            from_domain=from_domain,
            resolver=self.resolver,
            client_certificate=certificate or "",
        )
        log.info("authentication of %s from %s: %s", envelope.mail_from, client.address, verdict.summary())
        return verdict, False

    @staticmethod
    def _author_authenticated(
        incoming: Incoming, envelope: Envelope, verdict: authentication.Authentication | None
    ) -> bool:
        """For the bot: From's domain passed, and From is the envelope sender the bot answers."""
        author = incoming.from_address
        if verdict is None or not verdict.authenticated or author is None:
            return False
        return address_key(author.addr_spec) == address_key(rules.envelope_address(_sender(envelope)))

    def _authserv_ids(self, club: Club) -> tuple[str, ...]:
        """The names our Authentication-Results speak for; an incoming one that claims them is forged."""
        return (self.hostname, club.site.domain)

    def _results(
        self, club: Club, client: Client, verdict: authentication.Authentication | None, trusted: bool
    ) -> bytes:
        """Our Authentication-Results header (RFC 8601), or nothing when no check ran."""
        if verdict is not None:
            return verdict.header(self.hostname)
        if trusted:
            note = f"{client.address} is in listen.trusted_networks"
            return f"Authentication-Results: {self.hostname}; none ({note})\r\n".encode("ascii", "replace")
        return b""

    async def _post(
        self,
        club: Club,
        target: Target,
        envelope: Envelope,
        incoming: Incoming,
        trace: bytes,
        verdict: authentication.Authentication | None,
        covered: set[str],
    ) -> Posted | Held | str | None:
        """Rules then decoration for one list: a post, a hold, a refusal reply, or None (discarded)."""
        mailing_list = target.mailing_list
        assert mailing_list is not None
        author = _author(club, incoming.from_address, _sender(envelope))
        author_key = author.key if author else address_key(_sender(envelope))
        now, site = self.clock(), club.site
        replying = posting.recent_post_of(
            self.reader,
            mailing_list.name,
            conversation.referenced_ids(incoming.message),
            now - rules.AUTO_REPLY_WINDOW,
        )
        new_text = conversation.new_text(incoming.raw) if replying else None
        digest = conversation.text_digest(new_text or "")
        post = rules.Post(
            message=incoming.message,
            size=len(incoming.raw),
            envelope_sender=_sender(envelope),
            mailing_list=mailing_list,
            club=club,
            author=author,
            posts_today=self._posts_today(club, author),
            from_address=incoming.from_address,
            authentication=verdict,
            posts_last_hour=posting.posts_last_hour(self.reader, author_key, now, site.posting.hourly_limit),
            replies_to_recent_post=replying,
            new_text=new_text,
            repeats_recent_text=posting.posted_text_before(self.reader, author_key, digest, now - 3600),
        )
        decision = rules.evaluate(post, self.rules)
        log.debug("rule %s: %s (%s)", decision.rule, decision.action, decision.reason)
        if decision.action == "reject":
            return decision.reply
        if decision.action == "discard":
            log.info("discarded post to %s: %s", mailing_list.name, decision.reason)
            return None
        if decision.action == "hold":
            return Held(
                target,
                trace + incoming.raw,
                decision.reason,
                _sender(envelope),
                author_key,
                incoming.subject,
                f"{decision.rule}:{mailing_list.name}:{author_key}" if decision.once_a_day else "",
            )
        from_address = incoming.from_address
        rewrite = await posting.rewrite_from(self.resolver, mailing_list, incoming.message, from_address)
        ready = posting.prepare_post(
            incoming.message,
            mailing_list,
            club,
            author,
            rewrite_from=rewrite,
            subject=incoming.subject,
            from_address=from_address,
            author_key=author_key,
            covered=covered,
            trace=trace,
        )
        if len(ready.content) > outbound_size_limit(club.site):  # the next hop would refuse it for everyone
            return replies.render(replies.TOO_LARGE_DECORATED, limit=outbound_size_limit(club.site))
        poster = from_address.addr_spec if from_address is not None else _sender(envelope)
        return Posted(target, dataclasses.replace(ready, text_digest=digest), author, poster)

    def _forward(self, club: Club, target: Target, incoming: Incoming, trace: bytes) -> Forwarded:
        """Owner and postmaster mail goes on unchanged (so its DKIM signature still holds)."""
        if target.kind == "owner" and target.mailing_list is not None and target.mailing_list.owners:
            recipients: tuple[str, ...] = target.mailing_list.owners
        else:
            recipients = (club.site.site.admin,)
        return Forwarded(target, recipients, trace + incoming.raw, incoming.subject)

    def _posts_today(self, club: Club, author: Member | None) -> int:
        """The author's posts today, read only when a daily limit applies (a query on the event loop)."""
        if author is None or rules.daily_limit(club, author) == 0:
            return 0
        return posting.posts_today(self.reader, author.key, self.clock())

    async def _commit(self, club: Club, outcomes: list[Outcome]) -> list[str]:
        """One transaction for everything the message became; shielded so a hang-up cannot cut it."""
        now = self.clock()

        def commit_one(conn: sqlite3.Connection, outcome: Outcome) -> str:
            mailing_list = outcome.target.mailing_list
            if isinstance(outcome, Processed):
                return outcome.job(conn)
            if isinstance(outcome, Held):
                assert mailing_list is not None
                held_id = moderation.hold(
                    conn,
                    club,
                    mailing_list,
                    sender=outcome.sender,
                    author=outcome.author,
                    subject=outcome.subject,
                    reason=outcome.reason,
                    content=outcome.content,
                    now=now,
                    notice_once=outcome.notice_once,
                )
                return f"held:{held_id}"
            if isinstance(outcome, Posted):
                return posting.enqueue_post(conn, club, outcome.ready, now)
            if not outcome.recipients:
                return ""
            return queue.enqueue(
                conn,
                kind="forward",
                sender=club.site.bounce_address,
                recipients=list(outcome.recipients),
                content=outcome.content,
                now=now,
                subject=outcome.subject,
            )

        def job(conn: sqlite3.Connection) -> list[str]:
            post = next((o for o in outcomes if isinstance(o, Posted)), None)
            if post is not None and post.ready.author_key:
                self._check_limits(conn, club, post, now)
            return [commit_one(conn, outcome) for outcome in outcomes]

        return await asyncio.shield(self.writer.run(job))

    @staticmethod
    def _check_limits(conn: sqlite3.Connection, club: Club, post: Posted, now: float) -> None:
        """The limits again, on counts read in the commit's own transaction: posts that passed
        the rules together cannot all be counted past the limit (the writer is one thread)."""
        key = post.ready.author_key
        assert key
        today = posting.posts_today(conn, key, now) if post.author is not None else 0
        last_hour = posting.posts_last_hour(conn, key, now, club.site.posting.hourly_limit)
        verdict = rules.limit_verdict(club, post.author, post.poster, today, last_hour)
        if verdict is not None:
            raise LimitReached(verdict.reply)

    def _received(self, session: Session, client: Client, certificate: str | None) -> bytes:
        """Our Received trace header (RFC 5321 4.4): the client (as XFORWARD named it, through
        which proxy), the TLS version and cipher, and the client certificate when asked for."""
        helo = _printable(client.helo or "unknown")
        name = f"{_printable(client.name)} " if client.name else ""
        peer = f"({name}[{client.address or 'unknown'}])"
        if client.proxy:
            peer += f"\r\n\t(via proxy [{client.proxy}])"
        protocol = (
            _printable(client.protocol) if client.protocol else ("ESMTP" if session.extended_smtp else "SMTP")
        )
        tls = ""
        if session.ssl:
            cipher = session.ssl.get("cipher")
            if cipher:
                protocol += "S" if not protocol.endswith("S") else ""
                tls = f" ({cipher[1]} cipher {cipher[0]})"
            if certificate is not None:
                tls += f"\r\n\t(client certificate: {_printable(certificate) or 'none'})"
        stamp = _date(int(self.clock()))
        header = (
            f"Received: from {helo} {peer}\r\n\tby {self.hostname} (clublist) with {protocol}{tls};\r\n"
            f"\t{stamp}\r\n"
        )
        return header.encode("ascii", "replace")


def _peer_address(session: Session) -> str:
    return _plain_ip(str(session.peer[0])) if isinstance(session.peer, tuple) else ""


def _client_certificate(session: Session) -> str:
    """The subject (and DNS names) of the client's certificate if it verified against the
    system CAs, else "" (aiosmtpd keeps what the TLS handshake found in ``session.ssl``)."""
    certificate = session.ssl.get("peercert") if session.ssl else None
    if not certificate:
        return ""
    subject = ",".join(
        f"{_SUBJECT_NAMES.get(key, key)}={value}"
        for rdn in certificate.get("subject", ())
        for key, value in rdn
    )
    names = [f"DNS:{value}" for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"][:3]
    return " ".join([subject, *names]).strip()


_SUBJECT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "countryName": "C",
    "organizationalUnitName": "OU",
}


@functools.lru_cache(maxsize=1)
def _date(second: int) -> str:
    """The RFC 5322 date of a second: the posts of one second share it, so it is formatted once."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def _author(club: Club, from_address: Address | None, envelope_sender: str) -> Member | None:
    """The member the header From names; the envelope sender's without a single From address
    (the member rule refuses such a post, so then the author only labels it)."""
    if from_address is not None:
        return club.member(from_address.addr_spec)
    return club.member(envelope_sender) if envelope_sender else None
