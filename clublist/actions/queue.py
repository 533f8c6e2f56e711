"""Queue actions: what waits for delivery, and retrying, dropping and flushing it, like mailq and postqueue.

The administrator alone may look at or change the queue.  Each action opens
the state database itself and returns a record; only :func:`flush` (and
:func:`deliver_now`) load the delivery worker, and only when no daemon runs
to do the work.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clublist.actions import Actor, require_admin
from clublist.club.store import Store
from clublist.state import db as state
from clublist.state import queue
from clublist.state.queue import MessageInfo, MessageSummary, QueueRow

if TYPE_CHECKING:
    from clublist.dns import Resolver
    from clublist.outbound.worker import DeliveryConfig

MAX_FLUSH_PASSES = 100


@contextlib.contextmanager
def _open(state_path: Path, actor: Actor) -> Iterator[sqlite3.Connection]:
    require_admin(actor, "look at or change the mail queue")
    conn = state.connect(state_path)
    try:
        yield conn
    finally:
        conn.close()


def messages(
    state_path: Path, actor: Actor, *, status: str | None = None, limit: int | None = None
) -> list[MessageSummary]:
    """One record per message with a delivery in *status* (default: waiting), oldest first."""
    with _open(state_path, actor) as conn:
        return queue.messages(conn, status, limit)


def recipients(
    state_path: Path, actor: Actor, *, status: str | None = None, limit: int | None = None
) -> list[QueueRow]:
    """One record per delivery in *status* (default: waiting), oldest message first."""
    with _open(state_path, actor) as conn:
        return queue.rows(conn, status, limit=limit)


@dataclass(frozen=True)
class MessageDetail:
    """One queued message: its envelope, every recipient's state, and its header fields."""

    info: MessageInfo
    recipients: list[QueueRow]
    headers: list[tuple[str, str]]


def show(state_path: Path, actor: Actor, queue_id: str) -> MessageDetail:
    """A message's envelope, recipients and headers (encoded words decoded; the body is not read)."""
    import email.parser
    import email.policy

    with _open(state_path, actor) as conn:
        message_id = queue.require_message(conn, queue_id)
        info = queue.message_info(conn, message_id)
        rows = queue.rows(conn, "all", info.queue_id)
        content = queue.content(conn, message_id)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    return MessageDetail(info, rows, [(name, str(value)) for name, value in parsed.items()])


@dataclass(frozen=True)
class Retried:
    """How many deliveries are due now, and the daemon told so (its pid; None when none runs)."""

    count: int
    daemon_pid: int | None
    woken: bool


def retry(state_path: Path, actor: Actor, queue_id: str | None, now: float) -> Retried:
    """Make the waiting deliveries of one message (or all, with None) due now; wake the daemon."""
    with _open(state_path, actor) as conn, state.transaction(conn):
        count = queue.retry(conn, now, queue_id)
    lock = state.DaemonLock(state_path)
    pid = lock.holder()
    woken = bool(count) and pid is not None and lock.wake() is not None
    return Retried(count, pid, woken)


@dataclass(frozen=True)
class Dropped:
    queue_id: str
    subject: str
    waiting: int


def drop(
    state_path: Path, actor: Actor, queue_id: str, *, confirm: Callable[[str], object] | None = None
) -> Dropped:
    """Delete a message and every delivery of it.

    *confirm* is asked a question naming the message first (the CLI's prompt,
    which aborts on "no"); without it the message is dropped at once.
    """
    with _open(state_path, actor) as conn:
        info = queue.message_info(conn, queue.require_message(conn, queue_id))
        if confirm is not None:
            confirm(f"Drop {info.queue_id} ({info.subject or 'no subject'}) from the queue?")
        with state.transaction(conn):
            waiting = queue.drop(conn, info.queue_id)
    return Dropped(info.queue_id, info.subject, waiting)


@dataclass(frozen=True)
class Flushed:
    """What a flush did: woke a running daemon, or delivered here and counted the outcomes."""

    daemon_pid: int | None
    woken: bool
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    untried: int = 0


def flush(store: Store, state_path: Path, actor: Actor) -> Flushed:
    """Try every waiting delivery now: by the running daemon, or in this process until nothing is due."""
    lock = state.DaemonLock(state_path)
    with _open(state_path, actor) as conn:
        pid = lock.holder()
        if pid is not None:
            with state.transaction(conn):
                queue.retry(conn, time.time())
            return Flushed(pid, lock.wake() is not None)
        waiting = {r.id for r in queue.rows(conn)}
    deliver_now(store, state_path, lock, retry_deferred=True)
    with _open(state_path, actor) as conn:
        after = [r for r in queue.rows(conn, "all") if r.id in waiting]
    return Flushed(
        None,
        False,
        sent=sum(r.status == "sent" for r in after),
        deferred=sum(r.status == "deferred" for r in after),
        failed=sum(r.status == "failed" for r in after),
        untried=sum(r.status in ("pending", "inflight") for r in after),
    )


def deliver_now(store: Store, state_path: Path, lock: state.DaemonLock, *, retry_deferred: bool) -> None:
    """Deliver in the foreground (no daemon runs): one worker under the daemon lock, so
    ``clublist run`` cannot start and resend what it sends.  *retry_deferred* also makes
    deferred rows due (``queue flush``); without it their backoff is kept (``remind --send``)."""
    import asyncio

    from clublist.dns import resolver_for
    from clublist.outbound import worker as delivery

    site = store.load().site
    config = delivery.DeliveryConfig.from_site(site, state_path)
    # Holding the lock, this process passes for the daemon: another retry or flush may wake it
    # (SIGUSR1), and a change to lists.d is signalled only to a daemon that confirmed its reloads,
    # but a stale confirmation with this pid must not hang it up either (SIGHUP).
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGUSR1, signal.SIGHUP)}
    try:
        lock.acquire()
        try:
            asyncio.run(_passes(store, state_path, config, resolver_for(site), retry_deferred))
        finally:
            lock.release()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _passes(
    store: Store, state_path: Path, config: DeliveryConfig, resolver: Resolver, retry_deferred: bool
) -> None:
    """Pass after pass until nothing is due; failures count toward bounce scores as in the daemon."""
    from clublist.bounces import processor as bounces
    from clublist.outbound import verp
    from clublist.outbound import worker as delivery

    writer = state.Writer(state_path)
    try:

        def prepare(conn: sqlite3.Connection) -> None:
            now = time.time()
            queue.recover(conn, now)  # we hold the lock: rows left in flight belong to a dead process
            if retry_deferred:
                queue.retry(conn, now)

        await writer.run(prepare)
        club = store.load()
        scores = bounces.BounceProcessor(
            writer=writer,
            store=store,
            club=lambda: club,
            secret=verp.load_secret(state_path),
            on_queued=lambda: None,
            clock=time.time,
        )
        worker = delivery.DeliveryWorker(writer, config, resolver, on_failures=scores.delivery_failed)
        try:
            for _ in range(MAX_FLUSH_PASSES):
                if not await worker.pass_once(wait=True):
                    break
        finally:
            await worker.drain(30)
            await scores.drain(30)
    finally:
        writer.close()
