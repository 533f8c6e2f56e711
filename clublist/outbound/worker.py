"""The delivery worker: due rows from the queue out to the world over SMTP.

It claims due deliveries, groups each message's recipients by destination
(a domain's MX hosts, or the one smarthost), and sends one transaction per
group of up to ``max_recipients_per_transaction`` RCPTs, reusing
connections and running transactions in parallel within a global and a
per-destination limit.  Each recipient's reply decides its row: 2xx sent,
4xx or a broken connection deferred (retried on the backoff schedule),
5xx failed.  Failures end in one RFC 3464 report per message to the
administrator.

Signing: with a DKIM key set up, every message is signed as it is loaded
from the queue, once per message (VERP changes only the envelope), and a
post that carries clublist's Authentication-Results is ARC-sealed first.
With one-click unsubscribe on, each member's copy of a post gets its own
List-Unsubscribe link, is sent in its own transaction and signed on its own.

TLS: STARTTLS whenever offered.  The default is opportunistic, as Postfix
does for MX delivery: no certificate check, and plaintext when the
handshake fails.  ``verify`` (site-wide, for the domains listed in
``tls_verify_domains``, or ``smarthost_tls = "required"``) demands STARTTLS
with a valid certificate and defers the mail otherwise.

A message with UTF-8 in its header (RFC 6532) goes with SMTPUTF8; to a
server that does not offer it, it fails for good (5.6.7) and the
administrator's report says why, rather than being mangled or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import aiosmtplib

from clublist.club.model import Site, parse_hostport
from clublist.dns import DNSPermanentError, DNSTemporaryError, Resolver
from clublist.errors import ClublistError
from clublist.outbound import reports, sender_refusals, signing, unsubscribe, verp
from clublist.outbound.envelope import mail_from, rcpt
from clublist.outbound.fairness import FairGate, Turn
from clublist.state import queue
from clublist.state.db import Writer, is_transient
from clublist.state.queue import Delivery, Outcome, RetryPolicy

log = logging.getLogger(__name__)

TLSMode = Literal["none", "opportunistic", "verify"]
NO_SMTPUTF8 = (
    "does not offer SMTPUTF8, and the message has UTF-8 in its headers (RFC 6532); "
    "it cannot be delivered there as it is"
)
NO_SMTPUTF8_ADDRESS = (
    "does not offer SMTPUTF8, and the address has UTF-8 before its @ (RFC 6531); it cannot be delivered there"
)
MESSAGES_PER_CONNECTION = 100
PLAINTEXT_SECONDS = 3600  # after a failed handshake, how long a server gets mail without TLS
IDLE_SECONDS = 10.0
CLAIM_BATCH = 2000
# Deliveries leased and in memory at once; more wait in the database (memory stays flat).
MAX_IN_FLIGHT = 10_000
# Tries to store a transaction's outcomes while the database is locked or the disk full: with the
# backoff (1, 2, 4 ... 60 s) about an hour, the claim's lease, after which the rows are due again.
RECORD_ATTEMPTS = 66


@dataclass(frozen=True)
class Endpoint:
    """One SMTP server to try: the address to connect to and the name to check TLS against."""

    address: str
    port: int
    name: str
    tls: TLSMode


@dataclass(frozen=True)
class DeliveryConfig:
    """The worker's settings, taken from club.toml once per (re)load."""

    domain: str
    admin: str
    bounce_local_part: str
    helo_name: str
    mode: Literal["direct", "smarthost"]
    smarthost: tuple[str, int] | None
    smarthost_tls: TLSMode
    username: str
    password: str
    tls: TLSMode
    tls_verify_domains: frozenset[str]
    ca_file: str
    smtp_port: int
    max_recipients: int
    concurrency: int
    per_destination: int
    timeout: float
    policy: RetryPolicy
    verp_secret: bytes = field(repr=False, default=b"")
    signer: signing.Signer | None = field(repr=False, default=None, compare=False)
    unsubscribe_url: str = ""

    @classmethod
    def from_site(cls, site: Site, state_path: Path, smarthost: str | None = None) -> DeliveryConfig:
        d = site.delivery
        target = smarthost or (d.smarthost if d.mode == "smarthost" else "")
        relay_tls: dict[str, TLSMode] = {"none": "none", "opportunistic": "opportunistic"}
        smarthost_tls = relay_tls.get(d.smarthost_tls, "verify")  # "required": a valid certificate
        return cls(
            domain=site.domain,
            admin=site.site.admin,
            bounce_local_part=site.site.bounce_local_part,
            helo_name=d.helo_name or site.listen.hostname or site.domain,
            mode="smarthost" if target else "direct",
            smarthost=parse_hostport(target, 25) if target else None,
            smarthost_tls=smarthost_tls,
            username=d.smarthost_username,
            password=_smarthost_password(d.smarthost_password_file),
            tls=d.tls,
            tls_verify_domains=frozenset(x.lower() for x in d.tls_verify_domains),
            ca_file=d.tls_ca_file,
            smtp_port=d.smtp_port,
            max_recipients=max(1, d.max_recipients_per_transaction),
            concurrency=max(1, d.concurrency),
            per_destination=max(1, d.per_destination_concurrency),
            timeout=float(d.timeout),
            policy=RetryPolicy.from_site(site),
            verp_secret=verp.load_secret(state_path),
            signer=signing.load_signer(site, state_path),
            unsubscribe_url=site.unsubscribe.url,
        )


def _smarthost_password(path: str) -> str:
    """The smarthost secret lives in a file or CLUBLIST_SMARTHOST_PASSWORD, never in club.toml."""
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ClublistError(f"cannot read delivery.smarthost_password_file: {exc}") from None
    return os.environ.get("CLUBLIST_SMARTHOST_PASSWORD", "")


class TransientError(Exception):
    """This destination cannot be reached now; its recipients are deferred."""

    def __init__(self, text: str, host: str = "", code: int | None = None) -> None:
        super().__init__(text)
        self.host = host
        self.code = code


class PermanentError(Exception):
    """This destination will never take mail (null MX, no such domain); its recipients fail."""

    def __init__(self, text: str, status: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP
    endpoint: Endpoint
    messages: int = 0
    last_used: float = 0.0


class ConnectionPool:
    """Open SMTP connections by endpoint, handed out one transaction at a time."""

    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config
        self._idle: dict[Endpoint, list[_Connection]] = {}
        self._plaintext_since: dict[Endpoint, float] = {}

    async def acquire(self, endpoint: Endpoint) -> tuple[_Connection, bool]:
        """A connection to *endpoint* and whether it was reused."""
        idle = self._idle.get(endpoint, [])
        while idle:
            connection = idle.pop()
            if connection.smtp.is_connected and time.monotonic() - connection.last_used < IDLE_SECONDS:
                return connection, True
            await _quit(connection.smtp)
        return await self._open(endpoint), False

    def release(self, connection: _Connection) -> None:
        connection.messages += 1
        connection.last_used = time.monotonic()
        if connection.smtp.is_connected and connection.messages < MESSAGES_PER_CONNECTION:
            self._idle.setdefault(connection.endpoint, []).append(connection)
        else:
            asyncio.get_running_loop().create_task(_quit(connection.smtp))

    def discard(self, connection: _Connection) -> None:
        connection.smtp.close()

    async def close(self) -> None:
        idle = [c for conns in self._idle.values() for c in conns]
        self._idle.clear()
        await asyncio.gather(*(_quit(c.smtp) for c in idle))

    async def _open(self, endpoint: Endpoint) -> _Connection:
        since = self._plaintext_since.get(endpoint)
        tls = "none" if since is not None and time.monotonic() - since < PLAINTEXT_SECONDS else endpoint.tls
        try:
            return _Connection(await self._connect(endpoint, tls), endpoint)
        except ssl.SSLError as exc:
            if tls != "opportunistic":
                raise TransientError(f"TLS failed with {endpoint.name}: {exc}", endpoint.name) from None
            log.info("TLS handshake with %s failed (%s); retrying without TLS", endpoint.name, exc)
            self._plaintext_since[endpoint] = time.monotonic()
            return _Connection(await self._connect(endpoint, "none"), endpoint)

    async def _connect(self, endpoint: Endpoint, tls: TLSMode) -> aiosmtplib.SMTP:
        config = self.config
        smtp = aiosmtplib.SMTP(
            hostname=endpoint.address,
            port=endpoint.port,
            local_hostname=config.helo_name,
            timeout=config.timeout,
            start_tls=False,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
            if tls != "none" and smtp.supports_extension("starttls"):
                await smtp.starttls(server_hostname=endpoint.name, tls_context=self._tls_context(tls))
                # RFC 3207 4.2: what the server offered before TLS is forgotten; the first
                # transaction's options (8BITMIME, SMTPUTF8, DSN) need its new EHLO answer.
                await smtp.ehlo()
            elif tls == "verify":
                raise TransientError(
                    f"{endpoint.name} does not offer STARTTLS, which is required", endpoint.name, 530
                )
            if config.username and config.mode == "smarthost":
                await smtp.login(config.username, config.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _tls_context(self, tls: TLSMode) -> ssl.SSLContext:
        if tls == "verify":
            return ssl.create_default_context(cafile=self.config.ca_file or None)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        if smtp.is_connected:
            await asyncio.wait_for(smtp.quit(), 5)
    smtp.close()


class DeliveryWorker:
    """Claims due deliveries and sends them; one per daemon (or one ``queue flush``)."""

    def __init__(
        self,
        writer: Writer,
        config: DeliveryConfig,
        resolver: Resolver,
        *,
        clock: Callable[[], float] = time.time,
        on_failures: Callable[[list[queue.FailedDelivery]], Awaitable[None]] | None = None,
    ) -> None:
        self.writer = writer
        self.config = config
        self.resolver = resolver
        self.clock = clock
        self.on_failures = on_failures
        self.pool = ConnectionPool(config)
        self._wake = asyncio.Event()
        # Mail was queued that no claim has reached yet (claims take the oldest rows first).
        self._fresh = False
        self._global = FairGate(config.concurrency)
        self._per_destination: dict[str, FairGate] = {}
        # Room for transactions sending or storing their outcomes, per destination and in all
        # (see _transaction): what a crash could send twice.
        self._storing: dict[str, asyncio.Semaphore] = {}
        self._storing_all = asyncio.Semaphore(2 * config.concurrency)
        self._turns: dict[int, int] = {}  # per message in flight: transactions started (their rank)
        self._rows: dict[int, int] = {}  # per message in flight: deliveries not yet done
        # Messages in flight with no more rows than one transaction takes (fairness.py: small).
        self._small: set[int] = set()
        self._no_small = asyncio.Event()
        self._no_small.set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Each message's content, loaded once by the first transaction that needs it and kept
        # while a destination task holding a pin on the message lives.
        self._content: dict[int, asyncio.Future[bytes]] = {}
        self._content_users: dict[int, int] = {}
        self._in_flight = 0

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # rows it deferred have a due time the idle wait should see

    async def _woken(self) -> None:
        """Until the next wake; at once if new mail came since the caller read _fresh."""
        if not self._fresh:
            self._wake.clear()
        await self._wake.wait()

    def wake(self) -> None:
        """Something was queued: look for due rows now instead of at the next timer."""
        self._fresh = True
        self._wake.set()

    def reconfigure(self, config: DeliveryConfig) -> None:
        """A reload's settings, the connection limits included: the gates take their new size at
        once; transactions under way keep the room they took and give it back there."""
        old, self.config = self.config, config
        self.pool.config = config
        if config.concurrency != old.concurrency:
            self._global.resize(config.concurrency)
            self._storing_all = asyncio.Semaphore(2 * config.concurrency)
        if config.per_destination != old.per_destination:
            for gate in self._per_destination.values():
                gate.resize(config.per_destination)
            self._storing = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until *stop* is set; then let transactions in flight finish (see :meth:`drain`).

        The state database's passing trouble (locked by another process, disk full, I/O errors)
        is logged and waited out with a bounded backoff; only a bug ends this loop.
        """
        backoff = Backoff()
        recovered: int | None = None
        while not stop.is_set():
            try:
                if recovered is None:
                    recovered = await self.writer.run(lambda c: queue.recover(c, self.clock()))
                    if recovered:
                        log.info(
                            "%d deliveries were in flight when clublist last stopped; retrying", recovered
                        )
                handled = await self.pass_once(wait=False, stop=stop)
                next_due = None if handled else await self.writer.run(queue.next_due)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next()
                log.warning("state database: %s; the delivery worker tries again in %.0f s", exc, delay)
                await _wait_any([stop.wait()], delay)
                continue
            backoff.reset()
            if handled:
                continue
            timeout = 300.0 if next_due is None else min(300.0, max(0.05, next_due - self.clock()))
            await _wait_any([self._wake.wait(), stop.wait()], timeout)

    async def pass_once(self, *, wait: bool = True, stop: asyncio.Event | None = None) -> int:
        """Claim what is due and start sending it; with *wait*, return after it is all done.

        Once *stop* is set it claims nothing more and returns (the daemon is shutting down).
        """
        busy: frozenset[int] = frozenset()
        stopping = stop or asyncio.Event()
        while True:
            if stopping.is_set():
                return 0
            if self._fresh and self._content_users and self._in_flight < 2 * MAX_IN_FLIGHT:
                # New mail while messages are in flight: take the messages not yet in flight
                # first (a small post must not wait behind the next batches of a big one, which
                # are older and come first otherwise), up to a hard ceiling.
                busy = frozenset(self._content_users)
                break
            if self._small and len(self._small) < len(self._rows):
                # A small message in flight beside a big one: more rows for the big one wait for
                # it.  A claim of thousands keeps the state writer's thread busy, and the event
                # loop waits for the interpreter lock at every socket call the small one makes.
                await _wait_any([self._no_small.wait(), self._woken(), stopping.wait()], 300.0)
            elif self._in_flight >= MAX_IN_FLIGHT - CLAIM_BATCH and self._tasks:
                # Until a destination task ends (_task_done wakes the worker) or mail comes.  Not
                # asyncio.wait on the tasks: while a server hangs they are thousands, and each
                # pass would add and remove a callback on every one of them.
                await _wait_any([self._woken(), stopping.wait()], 300.0)
            else:
                break
        # Cleared just before the claim, not before the pass: mail queued while a claim runs
        # (a small post arriving as a big one is leased batch by batch) wakes the next pass.
        self._wake.clear()
        fresh, self._fresh = self._fresh, False
        now = self.clock()
        claimed = await self.writer.run(  # a lease need not wait for the disk: see Writer.run
            lambda c: queue.claim(c, now, limit=CLAIM_BATCH, lease=3600, skip_messages=busy), durable=False
        )
        if len(claimed) == CLAIM_BATCH:  # older rows filled the claim: the new mail may wait still
            self._fresh = self._fresh or fresh
        elif busy:  # the new mail is all in: the messages skipped may have more rows due
            self._wake.set()
        self._in_flight += len(claimed)
        for delivery in claimed:
            self._rows[delivery.message_id] = self._rows.get(delivery.message_id, 0) + 1
        for message_id in {d.message_id for d in claimed}:
            if self._rows[message_id] <= self.config.max_recipients:
                self._small.add(message_id)
                self._no_small.clear()
            else:
                self._small.discard(message_id)
        # No await from here on: each task pins its messages' content before anything else runs,
        # so a task that ends meanwhile cannot drop content that a new task still needs.
        for destination, deliveries in _group(claimed, self.config).items():
            for message_id in {d.message_id for d in deliveries}:
                self._content_users[message_id] = self._content_users.get(message_id, 0) + 1
            task = asyncio.get_running_loop().create_task(self._deliver_destination(destination, deliveries))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        # Start loading and signing what can be sent at once (see _load), and let the loads ask
        # the writer before the next claim does.
        for delivery in list({d.message_id: d for d in claimed}.values())[: self.config.concurrency]:
            self._load(delivery)
        if claimed:
            await asyncio.sleep(0)
        if wait:
            while self._tasks:
                await asyncio.gather(*list(self._tasks))
        return len(claimed)

    async def load_content(self, message_id: int) -> bytes:
        """A message's content from the queue (tests slow it down as a busy writer does)."""
        return await self.writer.read(lambda c: queue.content(c, message_id))

    async def _content_of(self, delivery: Delivery) -> bytes:
        """The message as it leaves, pinned by the calling task; one load serves every transaction."""
        return await asyncio.shield(self._load(delivery))  # one transaction cancelled must not cancel it

    def _load(self, delivery: Delivery) -> asyncio.Future[bytes]:
        """The shared load of a message's content, started now if it is not yet under way.

        The worker starts it at the claim for the messages it can send at once: started by
        their first transaction, it would wait in the state writer's line behind the next claim
        (thousands of rows of a big post) before signing could begin, and every connection with it.
        """
        load = self._content.get(delivery.message_id)
        if load is None:
            load = asyncio.ensure_future(self._load_signed(delivery))
            # Its transactions read a failure; one started ahead may have none left to read it.
            load.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._content[delivery.message_id] = load
        return load

    async def _load_signed(self, delivery: Delivery) -> bytes:
        content = await self.load_content(delivery.message_id)
        if self.config.signer is None:
            return content
        # Hashing a large body takes a while: in a thread, SMTP sessions keep their turns.
        return await asyncio.to_thread(self._signed, delivery, content)

    async def drain(self, timeout: float) -> None:
        """Let transactions in flight finish; after *timeout*, cancel them (their rows stay due)."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.pool.close()

    # --- one destination ---------------------------------------------------------------

    async def _deliver_destination(self, destination: str, deliveries: list[Delivery]) -> None:
        ids = [d.id for d in deliveries]
        try:
            try:
                endpoints = await self._endpoints(destination)
            except PermanentError as exc:
                await self._record([_fail(d, exc.status, str(exc)) for d in deliveries], deliveries)
                return
            except TransientError as exc:
                await self._record([_defer(d, str(exc), exc.host) for d in deliveries], deliveries)
                return
            gate = self._per_destination.setdefault(destination, FairGate(self.config.per_destination))
            if destination not in self._storing:
                self._storing[destination] = asyncio.Semaphore(2 * self.config.per_destination)
            room = self._storing[destination]
            results = await asyncio.gather(
                *(self._transaction(endpoints, batch, gate, room) for batch in self._batches(deliveries)),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, Exception):  # the outcomes could not be stored
                    log.error(
                        "could not record deliveries to %s (%s); they are tried again when their lease ends",
                        destination,
                        result,
                    )
        except asyncio.CancelledError:
            await asyncio.shield(self.writer.run(lambda c: queue.release(c, ids, self.clock())))
            raise
        except Exception:  # finding the destination's servers failed unexpectedly: nothing was sent
            log.exception("unexpected error looking up %s; deferring its deliveries", destination)
            await self._record([_defer(d, "internal error in clublist", "") for d in deliveries], deliveries)
        finally:
            self._in_flight -= len(deliveries)
            for delivery in deliveries:
                self._rows[delivery.message_id] -= 1
                if not self._rows[delivery.message_id]:
                    del self._rows[delivery.message_id]
                    self._small.discard(delivery.message_id)
            if not self._small:
                self._no_small.set()
            self._forget_content(deliveries)

    def _batches(self, deliveries: list[Delivery]) -> Iterable[list[Delivery]]:
        """One transaction per message and up to max_recipients; with VERP or one-click, one per recipient."""
        by_message: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            by_message.setdefault(delivery.message_id, []).append(delivery)
        for group in by_message.values():
            size = 1 if group[0].verp or self._personal(group[0]) else self.config.max_recipients
            for start in range(0, len(group), size):
                yield group[start : start + size]

    async def _endpoints(self, destination: str) -> list[Endpoint]:
        config = self.config
        if config.smarthost is not None:
            relay, port = config.smarthost
            return [Endpoint(relay, port, relay, config.smarthost_tls)]
        tls: TLSMode = (
            "verify"
            if config.tls == "verify" or destination in config.tls_verify_domains
            else ("opportunistic")
        )
        try:
            hosts = await self.resolver.mail_hosts(destination)
        except DNSPermanentError as exc:
            status = "5.1.10" if "null MX" in str(exc) else "5.1.2"
            raise PermanentError(str(exc), status) from None
        except DNSTemporaryError as exc:
            raise TransientError(f"DNS lookup for {destination} failed: {exc}") from None
        endpoints = []
        for host in hosts:  # one MX host that does not resolve must not sink the others
            try:
                addresses = await self.resolver.addresses(host.host)
            except (DNSTemporaryError, DNSPermanentError) as exc:
                log.info("mail server %s of %s: %s", host.host, destination, exc)
                continue
            endpoints += [Endpoint(address, config.smtp_port, host.host, tls) for address in addresses]
        if not endpoints:
            raise TransientError(f"no address found for the mail servers of {destination}")
        return endpoints

    async def _transaction(
        self, endpoints: Sequence[Endpoint], batch: list[Delivery], gate: FairGate, room: asyncio.Semaphore
    ) -> None:
        """One message to up to max_recipients; a surprise here defers this batch and no other.

        Its outcomes are stored after its slots are given back, so the next transaction need not
        wait for the state writer's commit.  A crash sends again what was sent and not yet
        stored, so a transaction takes room before it sends and gives it back once its outcomes
        are stored: *room* (twice the destination's connections) and the worker's room (twice
        its connections in all) bound how many transactions can be between the two.  The room
        is taken while the slots are held, so the order the fair gates chose stands, and a
        transaction waiting for room has sent nothing yet.
        """
        first = batch[0]
        # Ranked by the transactions of this message before it: posts take turns, the last free
        # connection is kept from the busiest message, and a message no bigger than one
        # transaction has the right of way on the wire (fairness.py).
        message, rank = first.message_id, self._turns.get(first.message_id, 0)
        self._turns[message] = rank + 1
        turn = Turn(gate, small=message in self._small)
        # The destination's slot first, then the global one: a transaction waiting for its
        # destination holds nothing another destination needs.
        outcomes: dict[int, Outcome] = {}
        await gate.acquire(message, rank, small=turn.small)
        try:
            await self._global.acquire(message, rank, small=turn.small)
        except BaseException:
            gate.release(message)
            raise
        roomed, gone, all_room = 0, False, self._storing_all
        try:
            await room.acquire()
            roomed = 1
            await all_room.acquire()
            roomed = 2
            try:
                try:
                    content = await self._content_of(first)
                except ClublistError:  # dropped with `queue drop` since the claim: its rows are gone
                    log.info("%s left the queue before it was sent", first.queue_id)
                    gone = True
                else:
                    await self._attempt(endpoints, batch, content, outcomes, turn)
            except Exception as exc:
                if is_transient(exc):  # the content could not be read now: try again later
                    log.warning("state database: %s; %s is tried again later", exc, first.queue_id)
                else:
                    log.exception("unexpected error sending %s; deferring its recipients", first.queue_id)
                for delivery in batch:  # what a server already answered stands
                    outcomes.setdefault(delivery.id, _defer(delivery, "internal error in clublist", ""))
        except BaseException:
            if roomed == 2:
                all_room.release()
            if roomed >= 1:
                room.release()
            raise
        finally:
            gate.release(message)
            self._global.release(message)
        try:
            if not gone:
                await self._record(list(outcomes.values()), batch)
        finally:
            all_room.release()
            room.release()

    async def _attempt(
        self,
        endpoints: Sequence[Endpoint],
        batch: list[Delivery],
        content: bytes,
        outcomes: dict[int, Outcome],
        turn: Turn,
    ) -> None:
        """Try the endpoints in turn until every recipient of *batch* has an outcome."""
        last_error = TransientError("no mail server could be reached")
        for endpoint in endpoints:
            try:
                await self._send_via(endpoint, batch, content, outcomes, turn)
                break
            except TransientError as exc:
                last_error = exc
            except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
                last_error = TransientError(_describe(exc), endpoint.name, getattr(exc, "code", None))
                if any(o.status != "deferred" for o in outcomes.values()):
                    break  # this server already answered for some recipients
            log.info("delivery via %s failed: %s", endpoint.name, last_error)
        for delivery in batch:
            if delivery.id not in outcomes:
                outcomes[delivery.id] = _defer(delivery, str(last_error), last_error.host, last_error.code)

    async def _send_via(
        self,
        endpoint: Endpoint,
        batch: list[Delivery],
        content: bytes,
        outcomes: dict[int, Outcome],
        turn: Turn,
    ) -> None:
        for attempt in (1, 2):
            connection, reused = await self.pool.acquire(endpoint)
            try:
                with turn.under_way():
                    await self._transmit(connection.smtp, endpoint.name, batch, content, outcomes, turn)
            except aiosmtplib.SMTPServerDisconnected:
                self.pool.discard(connection)
                if reused and attempt == 1 and not outcomes:
                    continue  # the server closed an idle connection: try a fresh one
                raise
            except BaseException:
                self.pool.discard(connection)
                raise
            self.pool.release(connection)
            return

    async def _transmit(
        self,
        smtp: aiosmtplib.SMTP,
        host: str,
        batch: list[Delivery],
        content: bytes,
        outcomes: dict[int, Outcome],
        turn: Turn,
    ) -> None:
        """MAIL, RCPT for each, DATA: each recipient's reply becomes its outcome."""
        first = batch[0]
        if self._personal(first):
            content = self._personal_copy(first, content)
        options = ["BODY=8BITMIME"] if smtp.supports_extension("8bitmime") and not content.isascii() else []
        sender = self._envelope_sender(first)
        addresses = {d.id: d.recipient for d in batch}
        if smtp.supports_extension("smtputf8"):
            if _needs_smtputf8(content) or not all(a.isascii() for a in addresses.values()):
                options.append("SMTPUTF8")
        elif _needs_smtputf8(content):
            for delivery in batch:
                outcomes[delivery.id] = _fail(delivery, "5.6.7", f"{host} {NO_SMTPUTF8}")
            return
        else:  # an international domain goes in its ASCII form; a UTF-8 mailbox name cannot go
            for delivery in batch:
                ascii_form = _ascii_address(delivery.recipient)
                if ascii_form is None:
                    outcomes[delivery.id] = _fail(delivery, "5.6.7", f"{host} {NO_SMTPUTF8_ADDRESS}")
                else:
                    addresses[delivery.id] = ascii_form
            batch = [d for d in batch if d.id not in outcomes]
            if not batch:
                return
        if sender and smtp.supports_extension("dsn"):
            # A bounce then quotes only the headers and names the queue id: see bounces/matching.py.
            options += ["RET=HDRS", f"ENVID={first.queue_id}"]
        try:
            await mail_from(smtp, sender, options)
        except aiosmtplib.SMTPSenderRefused as exc:  # before any recipient: never theirs to pay for
            refusal = sender_refusals.Refusal("MAIL FROM", host, exc.code, exc.message, sender)
            for delivery in batch:
                outcomes[delivery.id] = refusal.outcome(delivery.id)
            await _reset(smtp)
            return
        accepted = []
        for index, delivery in enumerate(batch):
            if index:
                await turn.between_recipients()
            try:
                await rcpt(smtp, addresses[delivery.id])
                accepted.append(delivery)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if sender_refusals.is_relay_or_auth_refusal(exc.code, exc.message):
                    refusal = sender_refusals.Refusal("RCPT", host, exc.code, exc.message, sender)
                    outcomes[delivery.id] = refusal.outcome(delivery.id)
                else:
                    outcomes[delivery.id] = _by_reply(delivery, exc.code, exc.message, host)
        if not accepted:
            await _reset(smtp)
            return
        try:
            response = await smtp.data(content)
        except aiosmtplib.SMTPDataError as exc:
            for delivery in accepted:
                outcomes[delivery.id] = _by_reply(delivery, exc.code, exc.message, host)
            return
        for delivery in accepted:
            outcomes[delivery.id] = Outcome(delivery.id, "sent", response.code, response.message, host)

    # --- signing ----------------------------------------------------------------------

    def _personal(self, delivery: Delivery) -> bool:
        """Whether each recipient gets their own copy: a list post, with one-click unsubscribe on."""
        return bool(self.config.unsubscribe_url and delivery.kind == "post" and delivery.list_name)

    def _signed(self, delivery: Delivery, content: bytes) -> bytes:
        """A message as it leaves, loaded once: sealed if a post, signed unless each copy is."""
        signer = self.config.signer
        if signer is None:
            return content
        try:
            if delivery.kind == "post":
                content = signer.seal(content)
            return content if self._personal(delivery) else signer.sign(content)
        except Exception:  # a message the signer cannot read still goes out, unsigned
            log.exception("message %s could not be signed; sending it unsigned", delivery.queue_id)
            return content

    def _personal_copy(self, delivery: Delivery, content: bytes) -> bytes:
        config = self.config
        token = unsubscribe.token(config.verp_secret, delivery.list_name or "", delivery.recipient)
        copy = unsubscribe.personal_copy(content, config.unsubscribe_url, token)
        if config.signer is None:
            return copy
        try:
            return config.signer.sign(copy)
        except Exception:
            log.exception("message %s could not be signed; sending it unsigned", delivery.queue_id)
            return copy

    def _envelope_sender(self, delivery: Delivery) -> str:
        if delivery.sender == "" or not delivery.verp:
            return delivery.sender
        config = self.config
        return verp.bounce_address(
            config.verp_secret,
            config.bounce_local_part,
            config.domain,
            delivery.list_name or "",
            delivery.recipient,
        )

    # --- outcomes and reports -------------------------------------------------------

    async def _record(self, outcomes: list[Outcome], deliveries: list[Delivery]) -> None:
        """Store outcomes (and log them); while the database cannot take them, wait and try again.

        The retries are bounded; giving up too early would leave a sent row leased and send it
        twice when the lease ends.
        """
        _log_outcomes(outcomes, deliveries)
        now, policy = self.clock(), self.config.policy
        refused = [o.refusal for o in outcomes if isinstance(o, sender_refusals.RefusedOutcome) and o.refusal]

        def store(conn: sqlite3.Connection) -> list[str]:
            queue.record(conn, outcomes, now, policy)
            domain, admin = self.config.domain, self.config.admin
            return sender_refusals.alert_once(conn, refused, domain=domain, admin=admin, now=now)

        backoff = Backoff()
        for attempt in range(RECORD_ATTEMPTS):
            try:
                alerted = await asyncio.shield(self.writer.run(store))
                break
            except Exception as exc:
                if not is_transient(exc) or attempt == RECORD_ATTEMPTS - 1:
                    raise
                delay = backoff.next()
                log.warning("state database: %s; storing outcomes again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
        for cause in alerted:
            log.warning("the club's own sending was refused (%s); the administrator is alerted", cause)
        if any(o.status != "sent" for o in outcomes):
            try:
                await self.report_failures()
            except Exception as exc:  # a report problem must never touch the deliveries themselves
                if not is_transient(exc):
                    log.exception("could not write the delivery reports")
                else:  # the failures stay unreported and are taken with the next ones
                    log.warning("state database: %s; the delivery reports are written later", exc)

    async def report_failures(self) -> None:
        """One RFC 3464 report per message for its new failures, to the administrator."""
        config, now = self.config, self.clock()

        def take_and_report(conn: object) -> list[queue.FailedDelivery]:
            failures = queue.take_unreported_failures(conn)  # type: ignore[arg-type]
            for message_id, rows in failures.items():
                info = queue.message_info(conn, message_id)  # type: ignore[arg-type]
                if info.sender == "" or info.kind == "report":
                    log.warning(
                        "report %s could not be delivered to %s", info.queue_id, [r.recipient for r in rows]
                    )
                    continue
                try:
                    report = _report(config, info, queue.content(conn, message_id), rows)  # type: ignore[arg-type]
                except Exception:
                    log.exception("no report for %s: it could not be built", info.queue_id)
                    continue
                queue.enqueue(
                    conn,  # type: ignore[arg-type]
                    kind="report",
                    sender="",
                    recipients=[config.admin],
                    content=bytes(report),
                    now=now,
                    subject=str(report["Subject"]),
                )
            return [row for rows in failures.values() for row in rows]

        failed = await asyncio.shield(self.writer.run(take_and_report))
        if failed:
            self.wake()
            if self.on_failures is not None:
                await self.on_failures(failed)

    def _forget_content(self, deliveries: list[Delivery]) -> None:
        """Drop a message's content from memory once no destination task needs it."""
        for message_id in {d.message_id for d in deliveries}:
            self._content_users[message_id] -= 1
            if not self._content_users[message_id]:
                del self._content_users[message_id]
                self._turns.pop(message_id, None)
                load = self._content.pop(message_id, None)
                if load is not None:
                    load.cancel()  # still loading for transactions that were cancelled


def _log_outcomes(outcomes: Sequence[Outcome], deliveries: Sequence[Delivery]) -> None:
    """One line per message of a transaction: queue id, list, recipients, what each reply did."""
    by_id = {o.delivery_id: o for o in outcomes}
    messages: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        messages.setdefault(delivery.queue_id, []).append(delivery)
    for queue_id, group in messages.items():
        replies: dict[tuple[str, str], int] = {}
        hosts = set()
        for delivery in group:
            outcome = by_id.get(delivery.id)
            if outcome is not None:
                reply = outcome.reply
                if outcome.code is not None and not reply.startswith(str(outcome.code)):
                    reply = f"{outcome.code} {reply}"
                replies[(outcome.status, reply)] = replies.get((outcome.status, reply), 0) + 1
                hosts.add(outcome.host)
        if not replies:
            continue
        first = group[0]
        about = f"list {first.list_name}" if first.list_name else first.kind
        via = f" via {', '.join(sorted(h for h in hosts if h))}" if any(hosts) else ""
        said = "; ".join(f"{count} {status}: {reply}" for (status, reply), count in replies.items())
        level = logging.INFO if all(status == "sent" for status, _ in replies) else logging.WARNING
        count = f"{len(group)} recipient{'s' if len(group) != 1 else ''}"
        log.log(level, "delivery %s (%s, %s)%s: %s", queue_id, about, count, via, said)


class Backoff:
    """Waits that double from ``first`` up to ``longest`` seconds while the trouble lasts."""

    def __init__(self, first: float = 1.0, longest: float = 60.0) -> None:
        self.first, self.longest = first, longest
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.longest)
        return delay

    def reset(self) -> None:
        self._next = self.first


async def _wait_any(waits: list[Awaitable[object]], timeout: float) -> None:
    """Until one of *waits* is done or *timeout* passes."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()


def _group(claimed: list[Delivery], config: DeliveryConfig) -> dict[str, list[Delivery]]:
    """Deliveries by destination: the recipient domain, or everything to the smarthost."""
    groups: dict[str, list[Delivery]] = {}
    for delivery in claimed:
        key = "smarthost" if config.smarthost is not None else delivery.domain
        groups.setdefault(key, []).append(delivery)
    items = list(groups.items())
    random.shuffle(items)  # no destination always goes first
    return dict(items)


def _ascii_address(address: str) -> str | None:
    """*address* as it may go without SMTPUTF8: its domain in IDNA form; None when the part
    before the @ is UTF-8, which has no ASCII form."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return None


def _needs_smtputf8(content: bytes) -> bool:
    """UTF-8 in the header (RFC 6532) travels only with SMTPUTF8; 8-bit bodies need just 8BITMIME."""
    end = content.find(b"\r\n\r\n")
    return not content[: end if end >= 0 else len(content)].isascii()


def _by_reply(delivery: Delivery, code: int, text: str, host: str) -> Outcome:
    reply = " ".join(f"{code} {text}".split())
    if 200 <= code < 300:
        return Outcome(delivery.id, "sent", code, reply, host)
    return Outcome(delivery.id, "failed" if code >= 500 else "deferred", code, reply, host)


def _defer(delivery: Delivery, text: str, host: str, code: int | None = None) -> Outcome:
    return Outcome(delivery.id, "deferred", code, text, host)


def _fail(delivery: Delivery, status: str, text: str) -> Outcome:
    return Outcome(delivery.id, "failed", None, f"{status} {text}", "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return f"connection lost: {exc}" if str(exc) else "connection lost"
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return "timed out waiting for the server"
    return str(exc) or type(exc).__name__


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException):
        await smtp.rset()


def _report(
    config: DeliveryConfig, info: queue.MessageInfo, content: bytes, rows: list[queue.FailedDelivery]
) -> reports.EmailMessage:
    headers = content.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    failures = [_failed_recipient(row) for row in rows]
    return reports.delivery_report(
        reporting_mta=config.helo_name,
        report_from=f"MAILER-DAEMON@{config.domain}",
        report_to=config.admin,
        original_headers=headers,
        arrival=datetime.fromtimestamp(info.created, UTC),
        failures=failures,
        message_id_domain=config.domain,
    )


def _failed_recipient(row: queue.FailedDelivery) -> reports.FailedRecipient:
    """A failed row as an RFC 3464 block: the server's reply, or clublist's own reason."""
    when = datetime.fromtimestamp(row.updated, UTC)
    reply = queue.last_server_reply(row.reply)
    if row.code is not None:
        text = reply.removeprefix(f"{row.code} ")
        return reports.FailedRecipient.from_smtp_reply(
            row.recipient, "failed", row.code, text, row.host or None, when
        )
    status, _, text = reply.partition(" ")
    if not (status[:1] in ("4", "5") and status.count(".") == 2):
        status, text = "4.4.7", reply  # gave up: the destination never answered
    return reports.FailedRecipient(
        row.recipient, "failed", status, row.host or None, f"X-Clublist; {text}", when
    )
