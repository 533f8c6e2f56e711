"""``clublist queue``: look at the outbound queue and act on it, like mailq and postqueue.

The commands read and change the state database through :mod:`clublist.state.queue`;
only ``flush`` loads the delivery worker (and aiosmtplib), and only when no
daemon is running to do the work.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.errors import PermissionDenied
from clublist.state import db as state
from clublist.state import queue

if TYPE_CHECKING:
    from clublist.dns import Resolver
    from clublist.outbound.worker import DeliveryConfig

MAX_FLUSH_PASSES = 100
LS_COLUMNS = ["queue id", "age", "recipient", "status", "attempts", "next try", "last error"]


@click.group("queue")
def queue_group() -> None:
    """Show, retry, drop and flush outbound mail waiting for delivery.

    Example: clublist queue ls --status deferred
    """


@contextlib.contextmanager
def open_state(app: App) -> Iterator[sqlite3.Connection]:
    """The state database for an administrator's queue command, closed afterwards."""
    if not app.actor.is_admin:
        raise PermissionDenied("only the club's administrator may look at or change the mail queue")
    conn = state.connect(app.state_path)
    try:
        yield conn
    finally:
        conn.close()


def iso(timestamp: float | None) -> str | None:
    """A stored Unix time as ISO 8601 in UTC, to the second."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def span(seconds: float) -> str:
    """A duration the way mailq users read it: 45s, 3m, 2h, 1d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _next_try(row: queue.QueueRow, now: float) -> str:
    if row.next_attempt is None:
        return ""
    if row.status == "inflight":
        return "sending"
    return f"in {span(row.next_attempt - now)}" if row.next_attempt > now else "now"


def _ls_row(row: queue.QueueRow, now: float) -> dict[str, Any]:
    return {
        "queue id": row.queue_id,
        "age": span(now - row.created),
        "recipient": row.recipient,
        "status": row.status,
        "attempts": row.attempts,
        "next try": _next_try(row, now),
        "last error": "" if row.status == "sent" else row.last_reply,
    }


def _json_row(row: queue.QueueRow) -> dict[str, Any]:
    plain = render.to_plain(row)
    plain.update(created=iso(row.created), next_attempt=iso(row.next_attempt))
    return plain


@by_mail("admin", changes=False)
@queue_group.command("ls")
@click.option(
    "--status",
    type=click.Choice([*queue.STATUSES, "all"]),
    help="Only deliveries in this state [default: the waiting ones: pending, inflight, deferred].",
)
@json_option
@pass_app
def ls(app: App, status: str | None, as_json: bool) -> None:
    """List deliveries, one line per recipient, like mailq.

    Example: clublist queue ls --status deferred
    """
    with open_state(app) as conn:
        found = queue.rows(conn, status)
    if as_json:
        render.json_out(app, [_json_row(r) for r in found])
        return
    now = time.time()
    empty = "the queue is empty" if status in (None, "all") else f"no {status} deliveries"
    render.table(app, [_ls_row(r, now) for r in found], LS_COLUMNS, empty=empty)


def _headers(content: bytes) -> list[tuple[str, str]]:
    """The message's header fields, encoded words decoded; the body is not read."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    return [(name, str(value)) for name, value in parsed.items()]


@by_mail("admin", changes=False)
@queue_group.command("show")
@click.argument("queue_id")
@json_option
@pass_app
def show(app: App, queue_id: str, as_json: bool) -> None:
    """Show one message: envelope, each recipient's state, headers.

    Example: clublist queue show 3F2A9C01BE
    """
    with open_state(app) as conn:
        message_id = queue.require_message(conn, queue_id)
        info = queue.message_info(conn, message_id)
        recipients = queue.rows(conn, "all", info.queue_id)
        headers = _headers(queue.content(conn, message_id))
    message = {
        "queue_id": info.queue_id,
        "kind": info.kind,
        "list": info.list_name,
        "envelope_sender": info.sender,
        "subject": info.subject,
        "created": iso(info.created),
    }
    if as_json:
        render.json_out(
            app,
            {
                **message,
                "recipients": [_json_row(r) for r in recipients],
                "headers": [{"name": n, "value": v} for n, v in headers],
            },
        )
        return
    now = time.time()
    message.update(
        envelope_sender=info.sender or "<>", created=f"{message['created']} ({span(now - info.created)} ago)"
    )
    render.fields(app, message)
    app.stream.write("\n")
    render.table(
        app,
        [{**_ls_row(r, now), "last reply": r.last_reply, "host": r.last_host} for r in recipients],
        ["recipient", "status", "attempts", "next try", "host", "last reply"],
        empty="no recipients left",
    )
    app.stream.write("\n")
    for name, value in headers:
        app.stream.write(f"{name}: {value}\n")


def _wake_daemon(lock: state.DaemonLock) -> str:
    """SIGUSR1 makes the daemon's worker look for due rows now; say what happened."""
    pid = lock.wake()
    if pid is None:
        return "could not signal the running daemon; it looks at the queue within five minutes"
    return f"the running daemon (pid {pid}) is delivering now"


@by_mail("admin")
@queue_group.command("retry")
@click.argument("queue_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Every waiting delivery, not one message's.")
@pass_app
def retry(app: App, queue_id: str | None, retry_all: bool) -> None:
    """Make waiting deliveries of one message (or all) due now.

    Example: clublist queue retry 3F2A9C01BE
    """
    if (queue_id is None) == (not retry_all):
        raise click.UsageError("give a QUEUE_ID or --all (not both)")
    with open_state(app) as conn, state.transaction(conn):
        count = queue.retry(conn, time.time(), queue_id)
    app.stream.write(f"{count} {'delivery is' if count == 1 else 'deliveries are'} due now\n")
    lock = state.DaemonLock(app.state_path)
    if count and lock.holder() is not None:
        app.stream.write(_wake_daemon(lock) + "\n")


@by_mail("admin")
@queue_group.command("drop")
@click.argument("queue_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def drop(app: App, queue_id: str, yes: bool) -> None:
    """Delete a message and all its deliveries.

    Recipients still waiting never get it; asks first unless --yes.

    Example: clublist queue drop 3F2A9C01BE --yes
    """
    with open_state(app) as conn:
        info = queue.message_info(conn, queue.require_message(conn, queue_id))
        if not yes and not app.by_mail:
            click.confirm(
                f"Drop {info.queue_id} ({info.subject or 'no subject'}) from the queue?", abort=True
            )
        with state.transaction(conn):
            waiting = queue.drop(conn, info.queue_id)
    app.stream.write(
        f"dropped {info.queue_id}; {waiting} waiting {'delivery' if waiting == 1 else 'deliveries'} removed\n"
    )


@queue_group.command("flush")
@pass_app
def flush(app: App) -> None:
    """Try every waiting delivery now.

    With a daemon running, wake it; otherwise deliver in the foreground
    until nothing is due, then print what was sent, deferred and failed.

    Example: clublist queue flush
    """
    lock = state.DaemonLock(app.state_path)
    with open_state(app) as conn:
        if lock.holder() is not None:
            with state.transaction(conn):
                queue.retry(conn, time.time())
            app.stream.write(_wake_daemon(lock) + "\n")
            return
        waiting = {r.id for r in queue.rows(conn)}
    deliver_now(app, lock, retry_deferred=True)
    with open_state(app) as conn:
        after = [r for r in queue.rows(conn, "all") if r.id in waiting]
    tally = {s: sum(r.status == s for r in after) for s in ("sent", "deferred", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in tally.items())
    unsent = sum(r.status in ("pending", "inflight") for r in after)
    app.stream.write(summary + (f", {unsent} not tried yet (run flush again)" if unsent else "") + "\n")


def deliver_now(app: App, lock: state.DaemonLock, *, retry_deferred: bool) -> None:
    """Deliver in the foreground (no daemon runs): one worker under the daemon lock, so
    ``clublist run`` cannot start and resend what it sends.  *retry_deferred* also makes
    deferred rows due (``queue flush``); without it their backoff is kept (``remind --send``)."""
    import asyncio

    from clublist.dns import resolver_for
    from clublist.outbound import worker as delivery

    site = app.store.load().site
    config = delivery.DeliveryConfig.from_site(site, app.state_path)
    # Holding the lock, this process passes for the daemon: another retry or flush may signal it.
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        lock.acquire()
        try:
            asyncio.run(_passes(app, config, resolver_for(site), retry_deferred))
        finally:
            lock.release()
    finally:
        signal.signal(signal.SIGUSR1, previous)


async def _passes(app: App, config: DeliveryConfig, resolver: Resolver, retry_deferred: bool) -> None:
    """Pass after pass until nothing is due; failures count toward bounce scores as in the daemon."""
    from clublist.bounces import processor as bounces
    from clublist.outbound import verp
    from clublist.outbound import worker as delivery

    writer = state.Writer(app.state_path)
    try:

        def prepare(conn: sqlite3.Connection) -> None:
            now = time.time()
            queue.recover(conn, now)  # we hold the lock: rows left in flight belong to a dead process
            if retry_deferred:
                queue.retry(conn, now)

        await writer.run(prepare)
        club = app.store.load()
        scores = bounces.BounceProcessor(
            writer=writer,
            store=app.store,
            club=lambda: club,
            secret=verp.load_secret(app.state_path),
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
