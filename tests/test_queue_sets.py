"""The queue writes its rows as sets: what every row must still come out as, one by one.

Enqueue, claim and record each touch thousands of rows of a big post in one statement over a
JSON array; these tests read the rows back and check each recipient's state, order and text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from clublist.state import db as state
from clublist.state import queue

NOW = 1_800_000_000.0
POLICY = queue.RetryPolicy(schedule=(300,), give_up_after=3600)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = state.connect(tmp_path / "state.sqlite3")
    try:
        yield connection
    finally:
        connection.close()


def post(conn: sqlite3.Connection, recipients: list[str], *, now: float = NOW) -> str:
    with state.transaction(conn):
        return queue.enqueue(
            conn,
            kind="post",
            sender="bounces@myclub.org",
            recipients=recipients,
            content=b"Subject: hi\r\n\r\nhi\r\n",
            now=now,
            list_name="youth",
            subject="hi",
        )


def rows_of(conn: sqlite3.Connection, queue_id: str) -> list[queue.QueueRow]:
    return queue.rows(conn, "all", queue_id)


def test_enqueue_keeps_the_recipients_order_text_and_domains(conn: sqlite3.Connection) -> None:
    # One row per address compared case-insensitively, where it first came, spelt as last given.
    ascii_only = ["zoe@Example.ORG", "Anna@Example.ORG", '"a@b"@Mail.Example.Net', "anna@example.org", "x"]
    with_utf8 = ["Jörg@BÜCHER.example", '"ö@b"@Sub.Example.ORG']
    expected = [
        ("zoe@Example.ORG", "example.org"),
        ("anna@example.org", "example.org"),
        ('"a@b"@Mail.Example.Net', "mail.example.net"),
        ("x", "x"),
        ("Jörg@BÜCHER.example", "bücher.example"),
        ('"ö@b"@Sub.Example.ORG', "sub.example.org"),
    ]
    queue_ids = [post(conn, ascii_only), post(conn, with_utf8)]
    found = conn.execute(
        "SELECT recipient, domain, status, next_attempt, created, updated FROM deliveries ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1]) for r in found] == expected
    assert {tuple(r[2:]) for r in found} == {("pending", NOW, NOW, NOW)}
    assert [len(rows_of(conn, q)) for q in queue_ids] == [4, 2]
    many = [f"m{n}@example.com" for n in reversed(range(2000))]  # not in any sorted order
    post(conn, many)
    ordered = conn.execute("SELECT recipient FROM deliveries WHERE domain = 'example.com' ORDER BY id")
    assert [r[0] for r in ordered] == many


def test_claim_leases_the_oldest_rows_once_with_their_message(conn: sqlite3.Connection) -> None:
    older = post(conn, [f"m{n}@example.org" for n in range(5)], now=NOW - 60)
    newer = post(conn, ["x@example.net", "y@example.net"])
    with state.transaction(conn):
        first = queue.claim(conn, NOW, limit=4, lease=600)
        second = queue.claim(conn, NOW, limit=10, lease=600)
        third = queue.claim(conn, NOW, limit=10, lease=600)
    assert [d.recipient for d in first] == [f"m{n}@example.org" for n in range(4)]
    assert [d.recipient for d in second] == ["m4@example.org", "x@example.net", "y@example.net"]
    assert third == []
    head = first[0]
    assert (head.queue_id, head.sender, head.verp, head.list_name, head.kind, head.message_created) == (
        older,
        "bounces@myclub.org",
        False,
        "youth",
        "post",
        NOW - 60,
    )
    assert {d.queue_id for d in second[1:]} == {newer}
    assert {d.domain for d in second[1:]} == {"example.net"}
    leased = conn.execute("SELECT DISTINCT status, lease_until, next_attempt FROM deliveries").fetchall()
    assert [tuple(r) for r in leased] == [("inflight", NOW + 600, NOW + 600)]
    # A lease that ran out (the worker died) makes the rows due again.
    with state.transaction(conn):
        again = queue.claim(conn, NOW + 600, limit=10, lease=600)
    assert len(again) == 7


def test_claim_skips_the_messages_named(conn: sqlite3.Connection) -> None:
    post(conn, ["a@example.org", "b@example.org"], now=NOW - 1)
    wanted = post(conn, ["c@example.org"])
    first_message = conn.execute("SELECT MIN(id) FROM messages").fetchone()[0]
    with state.transaction(conn):
        claimed = queue.claim(conn, NOW, limit=10, lease=600, skip_messages=frozenset({first_message}))
    assert [(d.recipient, d.queue_id) for d in claimed] == [("c@example.org", wanted)]


def test_claim_skips_thousands_of_messages_in_flight(conn: sqlite3.Connection) -> None:
    """A hung smarthost leaves thousands of messages in flight; the claim still finds the new one."""
    with state.transaction(conn):
        queued = [
            queue.enqueue(conn, kind="post", sender="", recipients=[f"m{n}@x.org"], content=b"x", now=NOW - 1)
            for n in range(3000)
        ]
    ids = [queue.require_message(conn, queue_id) for queue_id in queued]
    wanted = post(conn, ["new@example.org"])
    with state.transaction(conn):
        claimed = queue.claim(conn, NOW, limit=10, lease=600, skip_messages=frozenset(ids))
    assert [(d.recipient, d.queue_id) for d in claimed] == [("new@example.org", wanted)]


def test_record_settles_each_recipient_by_its_own_reply(conn: sqlite3.Connection) -> None:
    recipients = [f"m{n}@example.org" for n in range(6)]
    queue_id = post(conn, recipients)
    with state.transaction(conn):
        claimed = {d.recipient: d.id for d in queue.claim(conn, NOW, limit=10, lease=600)}
    outcomes = [
        queue.Outcome(claimed["m0@example.org"], "sent", 250, "250 2.0.0 OK", "mx1.example.org"),
        queue.Outcome(claimed["m1@example.org"], "sent", 250, "250 2.0.0 OK", "mx1.example.org"),
        queue.Outcome(claimed["m2@example.org"], "sent", 250, "250 2.0.0 queued as X", "mx2.example.org"),
        queue.Outcome(claimed["m3@example.org"], "failed", 550, "550 5.1.1 no such user", "mx1.example.org"),
        queue.Outcome(claimed["m4@example.org"], "deferred", 451, "451 4.7.1 greylisted", "mx1.example.org"),
    ]
    with state.transaction(conn):
        queue.record(conn, outcomes, NOW + 1, POLICY)
    by_recipient = {r.recipient: r for r in rows_of(conn, queue_id)}
    seen = {
        rcpt: (row.status, row.attempts, row.last_code, row.last_reply, row.last_host)
        for rcpt, row in by_recipient.items()
    }
    assert seen == {
        "m0@example.org": ("sent", 1, 250, "250 2.0.0 OK", "mx1.example.org"),
        "m1@example.org": ("sent", 1, 250, "250 2.0.0 OK", "mx1.example.org"),
        "m2@example.org": ("sent", 1, 250, "250 2.0.0 queued as X", "mx2.example.org"),
        "m3@example.org": ("failed", 1, 550, "550 5.1.1 no such user", "mx1.example.org"),
        "m4@example.org": ("deferred", 1, 451, "451 4.7.1 greylisted", "mx1.example.org"),
        "m5@example.org": ("inflight", 0, None, "", ""),
    }
    assert by_recipient["m4@example.org"].next_attempt == NOW + 1 + 300
    leases = dict(conn.execute("SELECT recipient, lease_until FROM deliveries").fetchall())
    assert leases == {r: None for r in recipients[:5]} | {"m5@example.org": NOW + 600}


def test_an_outcome_never_undoes_a_final_one(conn: sqlite3.Connection) -> None:
    queue_id = post(conn, ["a@example.org", "b@example.org"])
    with state.transaction(conn):
        a, b = queue.claim(conn, NOW, limit=10, lease=600)
        first = [queue.Outcome(a.id, "sent", 250, "250 OK"), queue.Outcome(b.id, "failed", 550, "550 no")]
        queue.record(conn, first, NOW, POLICY)
        # A later error path that defers or fails the whole group again changes nothing.
        queue.record(
            conn,
            [queue.Outcome(a.id, "failed", 554, "554 late"), queue.Outcome(b.id, "sent", 250, "250 late")],
            NOW + 1,
            POLICY,
        )
        queue.record(conn, [queue.Outcome(a.id, "deferred", None, "connection lost")], NOW + 2, POLICY)
    seen = {r.recipient: (r.status, r.attempts, r.last_reply) for r in rows_of(conn, queue_id)}
    assert seen == {"a@example.org": ("sent", 1, "250 OK"), "b@example.org": ("failed", 1, "550 no")}
