"""The SMTP listener's handler: translates between SMTP and clublist's rules and queue.

It holds no policy of its own.  RCPT asks :func:`route` what a local address
is and :func:`rules.may_post` whether the sender may post there, so
strangers are refused during the dialogue; DATA runs the posting rules,
decorates, and commits the message with all its delivery rows in one
transaction before answering 250.  Anything unexpected answers
``451 4.3.0``: the sender keeps the message and tries again.

Sending servers do not present client certificates, so TLS here only
protects the transfer; who the sender is is the business of SPF, DKIM and
DMARC, not of the TLS session.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.utils import format_datetime
from typing import Any, Literal, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from clublist.club.model import MailingList, Member, address_key, parse_address
from clublist.club.store import Club
from clublist.dns import Resolver
from clublist.mail import decorate, moderation, replies, rules
from clublist.mail import enqueue as posting
from clublist.state import queue
from clublist.state.db import Writer

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
    a command), whose return value is a note for the log.
    """

    def refuse(self, club: Club, target: Target, sender: str) -> str | None: ...

    async def process(
        self, club: Club, target: Target, sender: str, message: bytes, now: float
    ) -> CommitJob: ...


@dataclass
class SessionLimits:
    """Open connections, counted across all sessions."""

    max_connections: int
    active: int = 0


class Listener(SMTP):
    """aiosmtpd's SMTP with a connection limit (aiosmtpd has none of its own)."""

    def __init__(self, handler: Any, *, limits: SessionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._counted = True
            self._limits.active += 1
            if self._limits.active > self._limits.max_connections:
                transport.write(f"{replies.TOO_MANY_CONNECTIONS}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._limits.active -= 1
        super().connection_lost(error)


@dataclass(frozen=True)
class Incoming:
    """A message as DATA received it, read once for all its targets."""

    raw: bytes
    message: decorate.ReceivedMessage  # header values as received; the rules and decoration read it
    from_address: Address | None  # the one address of its From header, None unless exactly one
    subject: str  # decoded, cut to 200 characters for the queue and the log
    received: bytes  # our Received trace header, CRLF-terminated

    @classmethod
    def read(cls, raw: bytes, received: bytes) -> Incoming:
        message = decorate.parse(raw)
        subject = decorate.header_text(message.get("Subject", ""))[:200]
        return cls(raw, message, decorate.sole_address(message, "From"), subject, received)


@dataclass
class Accepted:
    """What DATA decided for one target, ready to commit."""

    kind: str
    target: Target
    recipients: list[str] = field(default_factory=list)
    content: bytes = b""
    held_reason: str = ""
    author: str = ""
    subject: str = ""
    job: CommitJob | None = None
    ready: posting.ReadyPost | None = None


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

    # aiosmtpd calls this for exceptions our wrappers did not catch.
    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error in the SMTP session", exc_info=error)
        return replies.TEMPORARY_FAILURE

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
            envelope.clublist_club = self.club()  # type: ignore[attr-defined]  # one snapshot per transaction
            envelope.clublist_targets = []  # type: ignore[attr-defined]
            return replies.SENDER_OK
        except Exception:
            log.exception("internal error at MAIL FROM")
            return replies.TEMPORARY_FAILURE

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            club: Club = envelope.clublist_club  # type: ignore[attr-defined]
            targets: list[Target] = envelope.clublist_targets  # type: ignore[attr-defined]
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
            targets.append(target)
            return replies.RECIPIENT_OK
        except Exception:
            log.exception("internal error at RCPT TO")
            return replies.TEMPORARY_FAILURE

    def _refuse_sender(self, club: Club, target: Target, sender: str) -> str | None:
        """The reply refusing *sender* for *target*, or None to accept (more checks at DATA)."""
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
        return rules.refusal_reply(club, target.mailing_list, sender)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_progress += 1
        try:
            return await self._data(session, envelope)
        except RecursionError:
            log.warning("refused message from %s: MIME nested too deeply", envelope.mail_from)
            return replies.TOO_DEEPLY_NESTED
        except Exception:
            log.exception("internal error at DATA from %s", envelope.mail_from)
            return replies.TEMPORARY_FAILURE
        finally:
            self.in_progress -= 1

    async def _data(self, session: Session, envelope: Envelope) -> str:
        club: Club = envelope.clublist_club  # type: ignore[attr-defined]
        targets: list[Target] = envelope.clublist_targets  # type: ignore[attr-defined]
        raw = envelope.original_content or b""
        hops = _hops(raw)
        if hops > MAX_HOPS:
            log.warning("refused message from %s: %d Received headers, a mail loop", envelope.mail_from, hops)
            return replies.TOO_MANY_HOPS
        incoming = Incoming.read(raw, self._received(session, envelope))
        accepted: list[Accepted] = []
        covered: set[str] = set()
        # Posts first: a refusal must come before the bot has acted on the same message.
        for target in sorted(targets, key=lambda t: t.kind != "post"):
            if target.kind == "post":
                result = await self._post(club, target, envelope, incoming, covered)
                if isinstance(result, str):
                    log.info("refused post to %s from %s: %s", target.address, envelope.mail_from, result)
                    return result
                if result is not None:
                    accepted.append(result)
            elif target.kind in self.processors:
                processor = self.processors[target.kind]
                job = await processor.process(club, target, _sender(envelope), raw, self.clock())
                accepted.append(Accepted(target.kind, target, job=job))
            else:
                accepted.append(self._forward(club, target, incoming))
        if not accepted:
            log.info("discarded message from %s to %s", envelope.mail_from, ", ".join(envelope.rcpt_tos))
            return replies.DISCARDED
        queue_ids = await self._commit(club, envelope, accepted)
        outcome = [
            f"{a.target.address}: {a.kind} {q or '(no recipients)'}"
            for a, q in zip(accepted, queue_ids, strict=True)
        ]
        log.info("accepted message from %s: %s", envelope.mail_from, "; ".join(outcome))
        self.on_queued()
        return replies.OK_QUEUED.format(queue_id=",".join(q for q in queue_ids if q))

    async def _post(
        self,
        club: Club,
        target: Target,
        envelope: Envelope,
        incoming: Incoming,
        covered: set[str],
    ) -> Accepted | str | None:
        """Rules then decoration for one list: an Accepted, a refusal reply, or None (discarded)."""
        mailing_list = target.mailing_list
        assert mailing_list is not None
        author = _author(club, incoming.from_address, _sender(envelope))
        post = rules.Post(
            message=incoming.message,
            size=len(incoming.raw),
            envelope_sender=_sender(envelope),
            mailing_list=mailing_list,
            club=club,
            author=author,
            posts_today=self._posts_today(club, author),
            from_address=incoming.from_address,
        )
        verdict = rules.evaluate(post, self.rules)
        log.debug("rule %s: %s (%s)", verdict.rule, verdict.action, verdict.reason)
        if verdict.action == "reject":
            return verdict.reply
        if verdict.action == "discard":
            log.info("discarded post to %s: %s", mailing_list.name, verdict.reason)
            return None
        author_key = author.key if author else address_key(_sender(envelope))
        if verdict.action == "hold":
            return Accepted(
                "held",
                target,
                content=incoming.received + incoming.raw,
                held_reason=verdict.reason,
                author=author_key,
                subject=incoming.subject,
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
            trace=incoming.received,
        )
        return Accepted("post", target, ready.recipients, ready.content, ready=ready)

    def _forward(self, club: Club, target: Target, incoming: Incoming) -> Accepted:
        """Owner and postmaster mail goes on unchanged (so its DKIM signature still holds)."""
        if target.kind == "owner" and target.mailing_list is not None and target.mailing_list.owners:
            recipients = list(target.mailing_list.owners)
        else:
            recipients = [club.site.site.admin]
        content = incoming.received + incoming.raw
        return Accepted("forward", target, recipients, content, subject=incoming.subject)

    def _posts_today(self, club: Club, author: Member | None) -> int:
        """The author's posts today, read only when a daily limit applies (a query on the event loop)."""
        if author is None or rules.daily_limit(club, author) == 0:
            return 0
        return posting.posts_today(self.reader, author.key, self.clock())

    async def _commit(self, club: Club, envelope: Envelope, accepted: list[Accepted]) -> list[str]:
        """One transaction for everything the message became; shielded so a hang-up cannot cut it."""
        now = self.clock()

        def job(conn: sqlite3.Connection) -> list[str]:
            ids = []
            for item in accepted:
                mailing_list = item.target.mailing_list
                if item.job is not None:
                    ids.append(item.job(conn))
                elif item.kind == "held":
                    assert mailing_list is not None
                    held_id = moderation.hold(
                        conn,
                        club,
                        mailing_list,
                        sender=_sender(envelope),
                        author=item.author,
                        subject=item.subject,
                        reason=item.held_reason,
                        content=item.content,
                        now=now,
                    )
                    ids.append(f"held:{held_id}")
                elif not item.recipients:
                    ids.append("")
                elif item.kind == "post":
                    assert mailing_list is not None
                    assert item.ready is not None
                    ids.append(posting.enqueue_post(conn, club, item.ready, now))
                else:
                    ids.append(
                        queue.enqueue(
                            conn,
                            kind="forward",
                            sender=club.site.bounce_address,
                            recipients=item.recipients,
                            content=item.content,
                            now=now,
                            subject=item.subject,
                        )
                    )
            return ids

        return await asyncio.shield(self.writer.run(job))

    def _received(self, session: Session, envelope: Envelope) -> bytes:
        """Our Received trace header (RFC 5321 4.4), with the TLS version and cipher when used."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        helo = _printable(session.host_name or "unknown")
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        tls = ""
        if session.ssl:
            cipher = session.ssl.get("cipher")
            if cipher:
                protocol += "S"
                tls = f" ({cipher[1]} cipher {cipher[0]})"
        stamp = _date(int(self.clock()))
        header = (
            f"Received: from {helo} ([{peer}])\r\n\tby {self.hostname} (clublist) with {protocol}{tls};\r\n"
            f"\t{stamp}\r\n"
        )
        return header.encode("ascii", "replace")


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
