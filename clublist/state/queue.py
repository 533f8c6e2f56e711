"""The outbound queue: a message stored once, one delivery row per recipient.

Every producer (list posts, bot replies, reminders, reports) calls
:func:`enqueue`, which writes the message and all its rows in the caller's
transaction.  The worker :func:`claim` s due rows with a lease and records
each recipient's outcome; a row is never deleted on dequeue, so a crash
leaves it due again (at least once, never lost).  Functions take a
connection and run inside the caller's transaction.

A post to 10,000 members writes, leases and settles 10,000 rows, the first of them before its
250: rows go in and change state as sets (one statement over a JSON array of values, not one
statement per row), which costs SQLite's own work per row and little of Python's.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from clublist.club.model import Site, address_key
from clublist.errors import ClublistError

Status = Literal["pending", "inflight", "deferred", "sent", "failed"]
STATUSES: tuple[str, ...] = ("pending", "inflight", "deferred", "sent", "failed")
Kind = Literal["post", "reply", "report", "notice", "reminder", "forward", "digest"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a deferred delivery again, and when to give up (from club.toml's [retry])."""

    schedule: tuple[int, ...] = (300, 600, 1200, 2400, 3600)
    give_up_after: float = 5 * 24 * 3600

    @classmethod
    def from_site(cls, site: Site) -> RetryPolicy:
        return cls(tuple(site.retry.schedule) or (300,), site.retry.give_up_after)

    def delay(self, attempts: int) -> int:
        """Seconds to wait after the *attempts*-th failed try; the last step repeats."""
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]


def new_queue_id() -> str:
    """A short id for people and logs, like Postfix's queue ids."""
    return secrets.token_hex(5).upper()


def enqueue(
    conn: sqlite3.Connection,
    *,
    kind: Kind,
    sender: str,
    recipients: Iterable[str],
    content: bytes,
    now: float,
    list_name: str | None = None,
    verp: bool = False,
    subject: str = "",
) -> str:
    """Store a message and one pending delivery per distinct recipient; returns its queue id.

    *sender* is the envelope sender ("" for the null sender); with *verp*
    the worker derives a per-recipient bounce address from it.
    """
    unique = list({address_key(r): r for r in recipients}.values())
    queue_id = new_queue_id()
    cursor = conn.execute(
        "INSERT INTO messages (queue_id, kind, list_name, sender, verp, subject, content, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (queue_id, kind, list_name, sender, int(verp), subject[:200], content, now),
    )
    message_id = cursor.lastrowid
    rows = json.dumps([[r, r.rpartition("@")[2].lower()] for r in unique], ensure_ascii=False)
    conn.execute(  # json_each reads the array in order: ids follow the recipients' order
        "INSERT INTO deliveries (message_id, recipient, domain, status, next_attempt, created, updated)"
        " SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), 'pending', ?2, ?2, ?2"
        " FROM json_each(?3)",
        (message_id, now, rows),
    )
    return queue_id


class Delivery(NamedTuple):
    """A claimed delivery: one recipient of one message, with what the worker needs to send it.

    A named tuple rather than a frozen dataclass: as immutable, and a quarter of the cost to
    make, which counts when a claim makes thousands.
    """

    id: int
    message_id: int
    queue_id: str
    recipient: str
    domain: str
    attempts: int
    sender: str
    verp: bool
    list_name: str | None
    kind: str
    message_created: float


def claim(
    conn: sqlite3.Connection,
    now: float,
    *,
    limit: int,
    lease: float,
    skip_messages: Collection[int] = (),
) -> list[Delivery]:
    """Take up to *limit* due rows (oldest first) and lease them to this worker until now + *lease*.

    *skip_messages*: messages whose rows are not wanted now (the worker's own, already in flight:
    thousands while a smarthost hangs, so they go as one JSON value, not as SQL text).
    """
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a Row per claimed row costs more than the query
    rows = cursor.execute(
        "SELECT id, message_id, recipient, domain, attempts FROM deliveries"
        " WHERE status IN ('pending', 'deferred', 'inflight') AND next_attempt <= ?1"
        " AND (status != 'inflight' OR lease_until <= ?1)"
        + (" AND message_id NOT IN (SELECT value FROM json_each(?3))" if skip_messages else "")
        + " ORDER BY next_attempt, id LIMIT ?2",
        (now, limit, json.dumps(list(skip_messages))) if skip_messages else (now, limit),
    ).fetchall()
    _set_where_ids(
        conn, "status = 'inflight', lease_until = ?1, next_attempt = ?1", (now + lease,), [r[0] for r in rows]
    )
    heads = {}  # read once per message: its queue id, and the fields after a row's own
    for message_id in {row[1] for row in rows}:
        queue_id, sender, verp, *rest = cursor.execute(
            "SELECT queue_id, sender, verp, list_name, kind, created FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        heads[message_id] = (queue_id, (sender, bool(verp), *rest))
    claimed = []
    for delivery_id, message_id, recipient, domain, attempts in rows:
        queue_id, tail = heads[message_id]
        claimed.append(Delivery(delivery_id, message_id, queue_id, recipient, domain, attempts, *tail))
    return claimed


def _set_where_ids(
    conn: sqlite3.Connection, assignments: str, values: tuple[object, ...], ids: list[int], where: str = ""
) -> None:
    """``UPDATE deliveries SET assignments WHERE id IN ids [AND where]`` in one statement.

    *assignments* and *where* use ?1, ?2 ... for *values*; the ids come last, as a JSON array.
    """
    if ids:
        condition = f"id IN (SELECT value FROM json_each(?{len(values) + 1}))"
        condition += f" AND {where}" if where else ""
        conn.execute(f"UPDATE deliveries SET {assignments} WHERE {condition}", (*values, json.dumps(ids)))


def content(conn: sqlite3.Connection, message_id: int) -> bytes:
    row = conn.execute("SELECT content FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise ClublistError(f"message {message_id} is no longer in the queue")
    return bytes(row[0])


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient in one try."""

    delivery_id: int
    status: Literal["sent", "deferred", "failed"]
    code: int | None
    reply: str
    host: str = ""


def record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: float, policy: RetryPolicy) -> None:
    """Store outcomes; a deferral past the message's give-up time becomes a failure.

    A row already sent or failed keeps its outcome, so a later error path
    that defers a whole group can never make a delivered row go out again.
    """
    # A transaction's recipients mostly share one reply (the 250 to DATA): one statement each.
    final: dict[tuple[str, int | None, str, str], list[int]] = {}
    for outcome in outcomes:
        if outcome.status == "deferred":
            _defer(conn, outcome, now, policy)
        else:
            key = (outcome.status, outcome.code, outcome.reply, outcome.host)
            final.setdefault(key, []).append(outcome.delivery_id)
    for (status, code, reply, host), ids in final.items():
        _set_where_ids(
            conn,
            "status = ?1, attempts = attempts + 1, last_code = ?2, last_reply = ?3, last_host = ?4,"
            " updated = ?5, lease_until = NULL",
            (status, code, reply, host, now),
            ids,
            where="status NOT IN ('sent', 'failed')",
        )


_GAVE_UP = "gave up after {attempts} tries; last: "
_GAVE_UP_RE = re.compile(r"gave up after \d+ tries; last: ")


def last_server_reply(reply: str) -> str:
    """The reply a give-up note quotes (or the reply itself)."""
    return _GAVE_UP_RE.sub("", reply, count=1)


def _defer(conn: sqlite3.Connection, outcome: Outcome, now: float, policy: RetryPolicy) -> None:
    row = conn.execute(
        "SELECT d.attempts, m.created FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.id = ? AND d.status NOT IN ('sent', 'failed')",
        (outcome.delivery_id,),
    ).fetchone()
    if row is None:
        return  # gone, or already final: an outcome never undoes a sent or failed row
    attempts = row[0] + 1
    next_attempt = now + policy.delay(attempts)
    if next_attempt > row[1] + policy.give_up_after:
        conn.execute(
            "UPDATE deliveries SET status = 'failed', attempts = ?, last_code = ?, last_reply = ?,"
            " last_host = ?, updated = ?, lease_until = NULL WHERE id = ?",
            (
                attempts,
                outcome.code,
                f"{_GAVE_UP.format(attempts=attempts)}{outcome.reply}",
                outcome.host,
                now,
                outcome.delivery_id,
            ),
        )
        return
    conn.execute(
        "UPDATE deliveries SET status = 'deferred', attempts = ?, next_attempt = ?, last_code = ?,"
        " last_reply = ?, last_host = ?, updated = ?, lease_until = NULL WHERE id = ?",
        (attempts, next_attempt, outcome.code, outcome.reply, outcome.host, now, outcome.delivery_id),
    )


def release(conn: sqlite3.Connection, delivery_ids: Iterable[int], now: float) -> None:
    """Give back leased rows that were never tried (shutdown): due at once, attempts unchanged."""
    conn.executemany(
        "UPDATE deliveries SET status = CASE attempts WHEN 0 THEN 'pending' ELSE 'deferred' END,"
        " next_attempt = ?, lease_until = NULL WHERE id = ? AND status = 'inflight'",
        [(now, i) for i in delivery_ids],
    )


def recover(conn: sqlite3.Connection, now: float) -> int:
    """At start: rows a dead process had in flight are due again now (they may have been sent)."""
    return conn.execute(
        "UPDATE deliveries SET status = CASE attempts WHEN 0 THEN 'pending' ELSE 'deferred' END,"
        " next_attempt = ?, lease_until = NULL WHERE status = 'inflight'",
        (now,),
    ).rowcount


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest waiting row falls due (None: nothing waits)."""
    row = conn.execute(
        "SELECT MIN(next_attempt) FROM deliveries WHERE status IN ('pending', 'deferred', 'inflight')"
    ).fetchone()
    return row[0]


@dataclass(frozen=True)
class FailedDelivery:
    """A failure not yet reported to the administrator."""

    id: int
    message_id: int
    recipient: str
    code: int | None
    reply: str
    host: str
    updated: float


def take_unreported_failures(conn: sqlite3.Connection) -> dict[int, list[FailedDelivery]]:
    """Failures to report, by message; they are marked reported in the same transaction."""
    rows = conn.execute(
        "SELECT id, message_id, recipient, last_code, last_reply, last_host, updated FROM deliveries"
        " WHERE status = 'failed' AND reported = 0"
    ).fetchall()
    conn.executemany("UPDATE deliveries SET reported = 1 WHERE id = ?", [(r[0],) for r in rows])
    by_message: dict[int, list[FailedDelivery]] = {}
    for row in rows:
        by_message.setdefault(row[1], []).append(FailedDelivery(*row))
    return by_message


@dataclass(frozen=True)
class MessageInfo:
    id: int
    queue_id: str
    kind: str
    list_name: str | None
    sender: str
    subject: str
    created: float


def message_info(conn: sqlite3.Connection, message_id: int) -> MessageInfo:
    row = conn.execute(
        "SELECT id, queue_id, kind, list_name, sender, subject, created FROM messages WHERE id = ?",
        (message_id,),
    ).fetchone()
    return MessageInfo(*row)


def purge(conn: sqlite3.Connection, before: float) -> int:
    """Forget finished rows last touched before *before*, and messages left with no rows."""
    count = conn.execute(
        "DELETE FROM deliveries WHERE (status = 'sent' OR (status = 'failed' AND reported = 1))"
        " AND updated < ?",
        (before,),
    ).rowcount
    conn.execute(
        "DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = messages.id)"
    )
    return count


# --- what the queue commands show ----------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    """One delivery as ``queue ls`` shows it, like a line of mailq."""

    id: int
    queue_id: str
    kind: str
    list_name: str | None
    recipient: str
    status: str
    attempts: int
    created: float
    next_attempt: float | None
    last_code: int | None
    last_reply: str
    last_host: str


_ROW_SQL = (
    "SELECT d.id, m.queue_id, m.kind, m.list_name, d.recipient, d.status, d.attempts, m.created,"
    " CASE WHEN d.status IN ('pending', 'deferred', 'inflight') THEN d.next_attempt END,"
    " d.last_code, d.last_reply, d.last_host FROM deliveries d JOIN messages m ON m.id = d.message_id"
)


def rows(
    conn: sqlite3.Connection, status: str | None = None, queue_id: str | None = None, limit: int | None = None
) -> list[QueueRow]:
    """Deliveries, waiting ones by default (``status`` may name any state, or "all"), oldest first."""
    where, params = [], []
    if status is None:
        where.append("d.status IN ('pending', 'deferred', 'inflight')")
    elif status != "all":
        where.append("d.status = ?")
        params.append(status)
    if queue_id is not None:
        where.append("m.queue_id = ?")
        params.append(queue_id.upper())
    sql = _ROW_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY m.created, d.id LIMIT ?"
    return [QueueRow(*r) for r in conn.execute(sql, [*params, -1 if limit is None else limit])]


def require_message(conn: sqlite3.Connection, queue_id: str) -> int:
    row = conn.execute("SELECT id FROM messages WHERE queue_id = ?", (queue_id.upper(),)).fetchone()
    if row is None:
        raise ClublistError(f"no message {queue_id} in the queue; see 'clublist queue ls --status all'")
    return row[0]


def retry(conn: sqlite3.Connection, now: float, queue_id: str | None = None) -> int:
    """Make waiting deliveries (of one message, or all) due now; returns how many."""
    sql = "UPDATE deliveries SET next_attempt = ? WHERE status IN ('pending', 'deferred')"
    params: list[object] = [now]
    if queue_id is not None:
        sql += " AND message_id = ?"
        params.append(require_message(conn, queue_id))
    return conn.execute(sql, params).rowcount


def drop(conn: sqlite3.Connection, queue_id: str) -> int:
    """Delete a message and every delivery of it; returns how many were still waiting."""
    message_id = require_message(conn, queue_id)
    waiting = conn.execute(
        "SELECT COUNT(*) FROM deliveries"
        " WHERE message_id = ? AND status IN ('pending', 'deferred', 'inflight')",
        (message_id,),
    ).fetchone()[0]
    conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
    return waiting


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries by status, every status present (0 when none)."""
    found = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
    return {status: found.get(status, 0) for status in STATUSES}


def oldest_waiting(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(m.created) FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.status IN ('pending', 'deferred', 'inflight')"
    ).fetchone()
    return row[0]


def oldest_deferred(conn: sqlite3.Connection) -> QueueRow | None:
    """The deferred delivery whose message has waited longest, for ``check``."""
    row = conn.execute(_ROW_SQL + " WHERE d.status = 'deferred' ORDER BY m.created, d.id LIMIT 1").fetchone()
    return None if row is None else QueueRow(*row)


def failed_since(conn: sqlite3.Connection, since: float) -> list[QueueRow]:
    """Deliveries that failed for good after *since*, newest first."""
    sql = _ROW_SQL + " WHERE d.status = 'failed' AND d.updated >= ? ORDER BY d.updated DESC"
    return [QueueRow(*r) for r in conn.execute(sql, (since,))]


def held_before(conn: sqlite3.Connection, before: float) -> tuple[int, float | None]:
    """How many held posts arrived before *before*, and when the oldest did."""
    count, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created) FROM held WHERE created < ?", (before,)
    ).fetchone()
    return count, oldest


@dataclass(frozen=True)
class MessageSummary:
    """One message as ``queue ls`` shows it: its recipients counted by state.

    ``waiting`` counts rows not tried yet or being sent (pending, inflight);
    ``deferred`` those that wait for a retry.  ``next_attempt`` is the
    earliest retry of its waiting rows, ``last_reply`` the latest reply that
    was not a success.
    """

    queue_id: str
    kind: str
    list_name: str | None
    subject: str
    created: float
    waiting: int
    deferred: int
    failed: int
    sent: int
    next_attempt: float | None
    last_reply: str


_WAITING = ("pending", "deferred", "inflight")


def messages(
    conn: sqlite3.Connection, status: str | None = None, limit: int | None = None
) -> list[MessageSummary]:
    """Messages with a delivery in *status* (default: a waiting one; "all": any), oldest first.

    Rows are counted per (message, state) straight from the deliveries_message index and
    folded here: 50,000 waiting rows take a few tens of milliseconds.
    """
    wanted = _WAITING if status is None else (STATUSES if status == "all" else (status,))
    chosen = f"(SELECT message_id FROM deliveries WHERE status IN ({', '.join('?' * len(wanted))}))"
    found: dict[int, dict[str, tuple[int, float]]] = {}
    for message_id, state, count, first in conn.execute(
        "SELECT message_id, status, COUNT(*), MIN(next_attempt) FROM deliveries"
        f" WHERE message_id IN {chosen} GROUP BY message_id, status",
        wanted,
    ):
        found.setdefault(message_id, {})[state] = (count, first)
    infos = conn.execute(
        "SELECT m.id, m.queue_id, m.kind, m.list_name, m.subject, m.created,"
        " COALESCE((SELECT x.last_reply FROM deliveries x WHERE x.message_id = m.id"
        "  AND x.status IN ('deferred', 'failed') ORDER BY x.updated DESC, x.id DESC LIMIT 1), '')"
        f" FROM messages m WHERE m.id IN {chosen} ORDER BY m.created, m.id LIMIT ?",
        [*wanted, -1 if limit is None else limit],
    )
    out = []
    for message_id, queue_id, kind, list_name, subject, created, last_reply in infos:
        by_state = found.get(message_id, {})  # rows may have changed between the two reads
        count = {s: by_state.get(s, (0, 0.0))[0] for s in STATUSES}
        due = [by_state[s][1] for s in _WAITING if s in by_state]
        out.append(
            MessageSummary(
                queue_id,
                kind,
                list_name,
                subject,
                created,
                waiting=count["pending"] + count["inflight"],
                deferred=count["deferred"],
                failed=count["failed"],
                sent=count["sent"],
                next_attempt=min(due) if due else None,
                last_reply=last_reply,
            )
        )
    return out
