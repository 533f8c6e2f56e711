"""``clublist run``: the listener, the delivery worker and the lists.d watcher as one unit.

Start-up, the main loop and shutdown are separate steps.  Signals only set
flags: SIGTERM/SIGINT stop accepting, let transactions in flight finish
within a timeout and leave the rest due (a second one exits at once),
SIGHUP reloads lists.d and the TLS certificate (any reload that finds the tls
settings changed loads the certificate too), SIGUSR1 wakes the worker
(``clublist queue flush`` sends it).  With ``unsubscribe.url`` set it also
serves one-click unsubscribe over HTTP (:mod:`clublist.oneclick`; a change
of that URL or its port takes a restart), and with ``listen.policy_port``
Postfix's policy service (:mod:`clublist.mail.policy`).

Every command that writes lists.d sends SIGHUP and waits for the reload to
be confirmed (:meth:`DaemonLock.reload`), so the next post follows the
change.  Reloads parse in a thread and run one at a time in one task, each
reading files at least as new as the last: an older reading can never
replace a newer one, and SMTP sessions never wait for a parse.

It writes the Maildir files of new archive entries (:mod:`clublist.mail.archive`)
once the posts pause (a burst is filed after it, in batches), at start-up and
every minute, and hourly prunes them by each list's ``archive_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import signal
import sqlite3
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clublist.actions.cron import periodic_work
from clublist.bounces import processor as bounces
from clublist.club.changes import membership_changes
from clublist.club.model import Site, inbound_size_limit
from clublist.club.store import Club, Store
from clublist.dns import resolver_for
from clublist.errors import ClublistError
from clublist.mail import archive, rules
from clublist.mail import enqueue as posting
from clublist.mail.handler import InboundHandler, Listener, MailProcessor, SessionLimits
from clublist.mail.policy import PolicyService
from clublist.outbound import verp
from clublist.outbound import worker as delivery
from clublist.state import db as state
from clublist.state import queue

if TYPE_CHECKING:
    from clublist.oneclick import OneClickServer

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
PERIODIC_INTERVAL = 60.0  # seconds between rounds of held-post expiry and owner summaries
SHUTDOWN_TIMEOUT = 30.0
PURGE_AFTER = 30 * 24 * 3600
ARCHIVE_RETRY = 60.0
# New archive entries are filed once no post has come for ARCHIVE_QUIET seconds, or ARCHIVE_LONGEST
# after the first of them at the latest: a file costs about as much CPU as accepting a post, and
# during a burst the listener needs it.  Their bytes are safe in the state database meanwhile.
ARCHIVE_QUIET = 0.5
ARCHIVE_LONGEST = 10.0
ARCHIVE_BATCH = 200  # entries read and filed at a time: the memory a burst of big posts takes


@dataclass(frozen=True)
class Overrides:
    """What ``clublist run`` options change for this run only."""

    listen: tuple[str, int] | None = None
    smarthost: str | None = None


class Daemon:
    def __init__(
        self,
        directory: Path,
        state_path: Path,
        overrides: Overrides = Overrides(),
        *,
        rules_in_force: Sequence[rules.Rule] = rules.RULES,
        clock: Callable[[], float] = time.time,
        on_ready: Callable[[Daemon], None] | None = None,
    ) -> None:
        # The daemon's own writes (members disabled by bounces) take effect at once, too.
        self.store = Store(directory, cache_dir=state_path.parent, on_change=self._lists_d_changed)
        self.state_path = state_path
        self.overrides = overrides
        self.rules = rules_in_force
        self.clock = clock
        self.on_ready = on_ready
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self.port = 0
        self._reload_tls = False
        self._reload_wanted = asyncio.Event()

    # --- life --------------------------------------------------------------------------

    async def serve(self) -> None:
        self._lock = state.DaemonLock(self.state_path)
        self._lock.acquire()
        try:
            await self.startup()
            try:
                await self.main_loop()
            finally:
                await self.shutdown()
        finally:
            self._lock.release()

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        read_since = time.monotonic_ns()
        self.club = self.store.load()
        for warning in self.club.warnings:
            log.warning("%s", warning)
        self._fingerprint = self.store.fingerprint()
        self.tls_context = self._tls_context(self.club.site)  # before anything starts: it may refuse
        self.writer = state.Writer(self.state_path)
        self.reader = state.connect(self.state_path)
        site = self.club.site
        self.resolver = resolver_for(site)
        self.bounces = bounces.BounceProcessor(
            writer=self.writer,
            store=self.store,
            club=lambda: self.club,
            secret=verp.load_secret(self.state_path),
            on_queued=lambda: self.worker.wake(),
            clock=self.clock,
        )
        self.worker = delivery.DeliveryWorker(
            self.writer,
            self._delivery_config(site),
            self.resolver,
            clock=self.clock,
            on_failures=self.bounces.delivery_failed,
        )
        self.limits = SessionLimits(site.listen.max_connections, site.listen.max_connections_per_client)
        self.handler = InboundHandler(
            club=lambda: self.club,
            writer=self.writer,
            reader=self.reader,
            resolver=self.resolver,
            on_queued=self._queued,
            hostname=self._hostname(site),
            rules_in_force=self.rules,
            processors=self._processors(),
            clock=self.clock,
        )
        host, port = self.overrides.listen or (site.listen.host, site.listen.port)
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self._session, host, port)
        except OSError as exc:
            raise ClublistError(cannot_listen(host, port, exc, "listen.host/listen.port")) from None
        self.port = self.server.sockets[0].getsockname()[1]
        self._lock.announce(host, self.port)
        self.oneclick = await self._start_oneclick(site, host)
        self.policy = await self._start_policy(site, host)
        self._worker_stop = asyncio.Event()
        self._worker_task = loop.create_task(self.worker.run(self._worker_stop))
        self._reloader_task = loop.create_task(self._reloader())
        self._lock.confirm_reload(read_since)  # commands may now ask this daemon to reload
        self._archive_due = asyncio.Event()
        self._archive_due.set()  # entries a crash left unfiled
        self._archive_task = loop.create_task(self._archive_loop())
        self.bounces.start()
        self._install_signal_handlers(loop)
        mode = f"smarthost {self.worker.config.smarthost}" if self.worker.config.smarthost else "direct MX"
        log.info("clublist listening on %s:%d for %s; delivery: %s", host, self.port, site.domain, mode)
        if self.on_ready is not None:
            self.on_ready(self)

    async def main_loop(self) -> None:
        last_purge = last_periodic = 0.0
        last_filing = time.monotonic()
        while not self.should_exit.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.should_exit.wait(), WATCH_INTERVAL)
            if self._worker_task.done():  # only a bug ends the worker: log it and stop (exit 1)
                if (bug := self._worker_task.exception()) is not None:
                    log.critical("the delivery worker stopped on a bug; clublist exits", exc_info=bug)
                self._worker_task.result()
            if self._reloader_task.done():
                self._reloader_task.result()
            if self.store.fingerprint() != self._fingerprint:  # edited by hand
                self._reload_wanted.set()
            if time.monotonic() - last_filing > ARCHIVE_RETRY:
                last_filing = time.monotonic()
                self._archive_due.set()  # what a failed write or another process left unfiled
            if self.clock() - last_purge > 3600:
                last_purge = self.clock()
                try:
                    await self.writer.run(self._purge)
                except Exception as exc:
                    if not state.is_transient(exc):
                        raise
                    log.warning("state database: %s; old queue entries are purged next hour", exc)
                await self._prune_archives()
            if self.clock() - last_periodic > PERIODIC_INTERVAL:
                last_periodic = self.clock()
                await self._periodic_work()

    async def _periodic_work(self) -> None:
        """Expire old held posts and send daily owner summaries (``clublist remind`` does too)."""
        club, now = self.club, self.clock()
        try:
            expired, summaries = await self.writer.run(lambda c: periodic_work(c, club, now))
        except Exception as exc:  # a locked database, a full disk, a broken template: try next round
            if not (state.is_transient(exc) or isinstance(exc, ClublistError)):
                raise
            log.warning("held-post expiry and owner summaries put off: %s", exc)
            return
        if expired or summaries:
            log.info("expired %d held posts, queued %d owner summaries", expired, summaries)
            self.worker.wake()

    async def shutdown(self) -> None:
        """As uvicorn does: stop accepting; answer 421 4.3.2 to sessions between commands;
        let a command under way finish within SHUTDOWN_TIMEOUT (a DATA being received is
        read to its end and answered 421, one already complete is committed and answered
        250, then 421), then close what is left; a second signal skips the waiting."""
        log.info("shutting down: no new connections; finishing what is in flight")
        self.server.close()
        self.limits.close_idle()
        self._reloader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reloader_task
        if self.oneclick is not None:
            await self.oneclick.close()
        if self.policy is not None:
            self.policy.close()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        while (
            (self.handler.in_progress or self.limits.busy())
            and time.monotonic() < deadline
            and not self.force_exit
        ):
            await asyncio.sleep(0.05)
        self.limits.close_all()
        self._worker_stop.set()
        with contextlib.suppress(Exception):
            await self._worker_task
        self._archive_task.cancel()
        with contextlib.suppress(BaseException):
            await self._archive_task
        with contextlib.suppress(Exception):
            await self.file_archive()
        await self.worker.drain(0 if self.force_exit else max(0.0, deadline - time.monotonic()))
        await self.bounces.drain(0 if self.force_exit else max(0.0, deadline - time.monotonic()))
        self.writer.close()
        self.reader.close()
        log.info("stopped")

    def _purge(self, conn: sqlite3.Connection) -> None:
        now = self.clock()
        queue.purge(conn, now - PURGE_AFTER)
        posting.forget(conn, now)

    # --- the archive ----------------------------------------------------------------

    def _queued(self) -> None:
        """After a commit that queued mail: deliver it, and write any new archive entries."""
        self.worker.wake()
        self._archive_due.set()

    async def _archive_loop(self) -> None:
        while True:
            await self._archive_due.wait()
            await self._archive_pause()
            try:
                await self.file_archive()
            except Exception as exc:  # the entries keep their bytes in the database: tried again
                if state.is_transient(exc):
                    log.warning("archive: Maildir files not written (%s); trying again in a minute", exc)
                else:
                    log.exception("archive: could not write Maildir files; trying again in a minute")

    async def _archive_pause(self) -> None:
        """Wait until no commit has asked for filing for ARCHIVE_QUIET s (ARCHIVE_LONGEST at most)."""
        deadline = time.monotonic() + ARCHIVE_LONGEST
        while (left := deadline - time.monotonic()) > 0:
            self._archive_due.clear()
            try:
                await asyncio.wait_for(self._archive_due.wait(), min(ARCHIVE_QUIET, left))
            except TimeoutError:
                break
        self._archive_due.clear()

    async def file_archive(self) -> None:
        """Write the Maildir files of archive entries committed but not yet filed (mail.archive)."""
        root = archive.root_of(self.state_path)
        while pending := await self.writer.read(functools.partial(archive.unfiled, limit=ARCHIVE_BATCH)):
            filed = await asyncio.to_thread(archive.write_files, root, pending)
            await self.writer.run(functools.partial(archive.mark_filed, root=root, filed=filed))
            log.debug("archive: filed %d entries", len(filed))
            if len(pending) < ARCHIVE_BATCH:
                return

    async def _prune_archives(self) -> None:
        """Each list's archive_days, applied hourly (``clublist archive prune`` does it by hand)."""
        lists = [(ml.name, ml.archive_days) for ml in self.club.lists.values() if ml.archive_days]
        if not lists:
            return

        def prune() -> dict[str, int]:
            conn = state.connect(self.state_path)
            try:
                return archive.prune_expired(conn, lists, self.clock())
            finally:
                conn.close()

        try:
            removed = await asyncio.to_thread(prune)
        except Exception:
            log.exception("archive: pruning failed")
            return
        for name, count in removed.items():
            if count:
                log.info("archive: pruned %d entries of %s", count, name)

    # --- signals and reloads ----------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, self.request_exit)
            loop.add_signal_handler(signal.SIGINT, self.request_exit)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGUSR1, self.worker.wake)

    def request_exit(self) -> None:
        if self.should_exit.is_set():
            self.force_exit = True
        self.should_exit.set()

    def request_reload(self) -> None:
        """SIGHUP: lists.d (and the TLS certificate) again, now."""
        self._reload_tls = True
        self._reload_wanted.set()

    def _lists_d_changed(self) -> None:
        self.loop.call_soon_threadsafe(self._reload_wanted.set)  # from the loop or a worker thread

    async def _reloader(self) -> None:
        """The one task that reloads: requests arriving during a reload start another after it."""
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    async def reload(self) -> None:
        """Load lists.d again in a thread and swap it in; a file that does not parse leaves the
        last good version in force.  Confirmed either way, so no command waits in vain."""
        tls, self._reload_tls = self._reload_tls, False
        started = time.monotonic_ns()
        self._fingerprint = self.store.fingerprint()
        try:
            club, config = await asyncio.to_thread(self._read_lists_d)
        except Exception as exc:  # a reload problem must never stop the daemon
            if isinstance(exc, ClublistError):
                log.error("lists.d not reloaded, the last good version stays in force: %s", exc)
            else:
                log.exception("lists.d not reloaded, the last good version stays in force")
            self._lock.confirm_reload(started)
            return
        for warning in club.warnings:
            log.warning("%s", warning)
        for line in await asyncio.to_thread(membership_changes, self.club.members, club.members):
            log.info("%s", line)
        tls = tls or club.site.tls != self.club.site.tls  # a new tls.cert needs no SIGHUP of its own
        self.club = club  # one assignment: each SMTP transaction takes one snapshot
        self.worker.reconfigure(config)
        if tls:
            try:
                self.tls_context = self._tls_context(club.site)
            except ClublistError as exc:
                log.error("TLS certificate not reloaded: %s", exc)
        self._lock.confirm_reload(started)  # after the certificate: the command waits for both
        self.bounces.start()  # disablings a broken members.toml held up can go ahead now
        log.info("reloaded lists.d: %d lists, %d members", len(club.lists), len(club.members))

    # --- pieces ----------------------------------------------------------------------

    def _session(self) -> Listener:
        site = self.club.site
        return Listener(
            self.handler,
            limits=self.limits,
            trusted_proxies=site.listen.trusted_proxies,
            hostname=self._hostname(site),
            ident="clublist",
            data_size_limit=inbound_size_limit(site),
            # Postfix in front passes SMTPUTF8 on; without it, UTF-8 mail would bounce (5.6.7).
            enable_SMTPUTF8=True,
            tls_context=self.tls_context,
            require_starttls=site.tls.require and self.tls_context is not None,
            timeout=site.listen.timeout,
            idle_timeout=min(site.listen.idle_timeout, site.listen.timeout),
            # Per session; a relay such as Postfix sends many messages on one connection.
            command_call_limit={"MAIL": 10_000, "RCPT": 100_000, "DATA": 10_000, "RSET": 10_000, "*": 200},
            decode_data=False,
        )

    async def _start_policy(self, site: Site, host: str) -> asyncio.Server | None:
        """Postfix's policy service, when listen.policy_port asks for it."""
        if not site.listen.policy_port:
            return None
        service = PolicyService(self.handler.rcpt_refusal)
        server = await asyncio.start_server(service.serve, host, site.listen.policy_port)
        log.info("policy service for Postfix on %s:%d", host, site.listen.policy_port)
        return server

    async def _start_oneclick(self, site: Site, host: str) -> OneClickServer | None:
        """The one-click unsubscribe server, when unsubscribe.url asks for it."""
        if not site.unsubscribe.url:
            return None
        from clublist.oneclick import OneClickServer

        # Its own context: a browser must never be asked for a certificate (tls.client_certificates).
        tls = self._tls_context(site, ask_clients=False) if site.listen.http_tls else None
        if site.listen.http_tls and tls is None:
            raise ClublistError("listen.http_tls = true needs tls.cert (and tls.key)")
        server = OneClickServer(
            store=self.store,
            club=lambda: self.club,
            writer=self.writer,
            secret=verp.load_secret(self.state_path),
            on_queued=self.worker.wake,
            clock=self.clock,
        )
        try:
            port = await server.start(host, site.listen.http_port, tls)
        except OSError as exc:
            raise ClublistError(cannot_listen(host, site.listen.http_port, exc, "listen.http_port")) from None
        log.info("one-click unsubscribe on %s://%s:%d", "https" if tls else "http", host, port)
        return server

    def _processors(self) -> dict[str, MailProcessor]:
        """Who handles mail to the bot's and the bounce addresses."""
        from clublist.bot import BotProcessor
        from clublist.cli import main as command_group

        return {
            "bot": BotProcessor(command_group, self.store.directory, self.state_path, self.writer.run),
            "bounce": self.bounces,
        }

    def _read_lists_d(self) -> tuple[Club, delivery.DeliveryConfig]:
        club = self.store.load()
        return club, self._delivery_config(club.site)

    def _delivery_config(self, site: Site) -> delivery.DeliveryConfig:
        return delivery.DeliveryConfig.from_site(site, self.state_path, self.overrides.smarthost)

    @staticmethod
    def _hostname(site: Site) -> str:
        return site.listen.hostname or site.domain

    @staticmethod
    def _tls_context(site: Site, *, ask_clients: bool = True) -> ssl.SSLContext | None:
        """The STARTTLS context; with tls.client_certificates = "ask" it requests a client
        certificate and verifies it against the system CAs (a sender that presents one which
        does not verify fails the handshake, as with any server that asks)."""
        if not site.tls.cert:
            if site.tls.require:
                raise ClublistError(
                    "tls.require is true but tls.cert is empty: clublist would run without TLS; "
                    "set tls.cert and tls.key, or 'clublist config set tls.require false'"
                )
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(site.tls.cert, site.tls.key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ClublistError(f"cannot load tls.cert/tls.key: {exc}") from None
        if ask_clients and site.tls.client_certificates == "ask":
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return context


def cannot_listen(host: str, port: int, exc: OSError, settings: str) -> str:
    """Why a port cannot be had, and what to change: one line for the person starting clublist."""
    why = {
        errno.EADDRINUSE: "another program uses it (is clublist already running?)",
        errno.EADDRNOTAVAIL: "this machine has no such address",
        errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot listen on {host}:{port}: {why}; change {settings} in club.toml or pass --listen HOST:PORT"


def run(directory: Path, state_path: Path, overrides: Overrides) -> None:
    """Run the daemon in the foreground until a signal stops it."""
    daemon = Daemon(directory, state_path, overrides)
    asyncio.run(daemon.serve())
