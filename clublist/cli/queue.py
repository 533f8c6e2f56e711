"""``clublist queue``: look at the outbound queue and act on it, like mailq and postqueue.

Each command calls one action of :mod:`clublist.actions.queue` and prints its record.
"""

from __future__ import annotations

import time
from typing import Any

import click

from clublist.actions import queue as actions
from clublist.cli import render
from clublist.cli.app import App, by_mail, json_option, pass_app
from clublist.state.queue import STATUSES, MessageSummary, QueueRow

MESSAGE_COLUMNS = ["queue id", "list", "age", "waiting", "deferred", "failed", "next try", "last reply"]
RECIPIENT_COLUMNS = ["queue id", "age", "recipient", "status", "attempts", "next try", "last error"]


@click.group("queue")
def queue_group() -> None:
    """Show, retry, drop and flush outbound mail waiting for delivery.

    Example: clublist queue ls --status deferred
    """


def _next_try(next_attempt: float | None, sending: bool, now: float) -> str:
    if next_attempt is None:
        return ""
    if sending:
        return "sending"
    return f"in {render.span(next_attempt - now)}" if next_attempt > now else "now"


def _message_line(summary: MessageSummary, now: float) -> dict[str, Any]:
    return {
        "queue id": summary.queue_id,
        "list": summary.list_name or f"({summary.kind})",
        "age": render.span(now - summary.created),
        "waiting": summary.waiting,
        "deferred": summary.deferred,
        "failed": summary.failed,
        "next try": _next_try(summary.next_attempt, False, now),
        "last reply": summary.last_reply,
    }


def _message_json(summary: MessageSummary) -> dict[str, Any]:
    plain = render.to_plain(summary)
    plain.update(created=render.iso(summary.created), next_attempt=render.iso(summary.next_attempt))
    return plain


def _recipient_line(row: QueueRow, now: float) -> dict[str, Any]:
    return {
        "queue id": row.queue_id,
        "age": render.span(now - row.created),
        "recipient": row.recipient,
        "status": row.status,
        "attempts": row.attempts,
        "next try": _next_try(row.next_attempt, row.status == "inflight", now),
        "last error": "" if row.status == "sent" else row.last_reply,
    }


def _recipient_json(row: QueueRow) -> dict[str, Any]:
    plain = render.to_plain(row)
    plain.update(created=render.iso(row.created), next_attempt=render.iso(row.next_attempt))
    return plain


@by_mail("admin", changes=False)
@queue_group.command("ls")
@click.option(
    "--status",
    type=click.Choice([*STATUSES, "all"]),
    help="Only messages (or with --recipients, deliveries) in this state "
    "[default: waiting: pending, inflight, deferred].",
)
@click.option("--recipients", is_flag=True, help="One line per recipient instead of per message.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many lines, oldest first.")
@json_option
@pass_app
def ls(app: App, status: str | None, recipients: bool, limit: int | None, as_json: bool) -> None:
    """List queued messages, one line each: recipients waiting, deferred and failed.

    With --recipients, one line per recipient, like mailq.

    Example: clublist queue ls --status deferred --limit 20
    """
    empty = "the queue is empty" if status in (None, "all") else f"no {status} deliveries"
    now = time.time()
    if recipients:
        rows = actions.recipients(app.state_path, app.actor, status=status, limit=limit)
        if as_json:
            render.json_out(app, [_recipient_json(r) for r in rows])
        else:
            render.table(app, [_recipient_line(r, now) for r in rows], RECIPIENT_COLUMNS, empty=empty)
        return
    found = actions.messages(app.state_path, app.actor, status=status, limit=limit)
    if as_json:
        render.json_out(app, [_message_json(m) for m in found])
    else:
        render.table(app, [_message_line(m, now) for m in found], MESSAGE_COLUMNS, empty=empty)


@by_mail("admin", changes=False)
@queue_group.command("show")
@click.argument("queue_id")
@json_option
@pass_app
def show(app: App, queue_id: str, as_json: bool) -> None:
    """Show one message: envelope, each recipient's state, headers.

    Example: clublist queue show 3F2A9C01BE
    """
    detail = actions.show(app.state_path, app.actor, queue_id)
    info = detail.info
    message = {
        "queue_id": info.queue_id,
        "kind": info.kind,
        "list": info.list_name,
        "envelope_sender": info.sender,
        "subject": info.subject,
        "created": render.iso(info.created),
    }
    if as_json:
        render.json_out(
            app,
            {
                **message,
                "recipients": [_recipient_json(r) for r in detail.recipients],
                "headers": [{"name": n, "value": v} for n, v in detail.headers],
            },
        )
        return
    now = time.time()
    message.update(
        envelope_sender=info.sender or "<>",
        created=f"{message['created']} ({render.span(now - info.created)} ago)",
    )
    render.fields(app, message)
    app.stream.write("\n")
    render.table(
        app,
        [
            {**_recipient_line(r, now), "last reply": r.last_reply, "host": r.last_host}
            for r in detail.recipients
        ],
        ["recipient", "status", "attempts", "next try", "host", "last reply"],
        empty="no recipients left",
    )
    app.stream.write("\n")
    for name, value in detail.headers:
        app.stream.write(f"{name}: {value}\n")


def _daemon_line(pid: int | None, woken: bool) -> str:
    if woken:
        return f"the running daemon (pid {pid}) is delivering now"
    return "could not signal the running daemon; it looks at the queue within five minutes"


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
    result = actions.retry(app.state_path, app.actor, queue_id, time.time())
    app.stream.write(f"{result.count} {'delivery is' if result.count == 1 else 'deliveries are'} due now\n")
    if result.count and result.daemon_pid is not None:
        app.stream.write(_daemon_line(result.daemon_pid, result.woken) + "\n")


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
    ask = None if yes or app.by_mail else lambda question: click.confirm(question, abort=True)
    result = actions.drop(app.state_path, app.actor, queue_id, confirm=ask)
    app.stream.write(
        f"dropped {result.queue_id}; {result.waiting} waiting "
        f"{'delivery' if result.waiting == 1 else 'deliveries'} removed\n"
    )


@queue_group.command("flush")
@pass_app
def flush(app: App) -> None:
    """Try every waiting delivery now.

    With a daemon running, wake it; otherwise deliver in the foreground
    until nothing is due, then print what was sent, deferred and failed.

    Example: clublist queue flush
    """
    result = actions.flush(app.store, app.state_path, app.actor)
    if result.daemon_pid is not None:
        app.stream.write(_daemon_line(result.daemon_pid, result.woken) + "\n")
        return
    summary = f"{result.sent} sent, {result.deferred} deferred, {result.failed} failed"
    if result.untried:
        summary += f", {result.untried} not tried yet (run flush again)"
    app.stream.write(summary + "\n")
