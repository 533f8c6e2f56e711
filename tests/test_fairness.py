"""A small post is not queued behind a big one: fair turns at the worker's connection limits."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from mta import Behaviour, RemoteMTA
from test_delivery import MESSAGE, Harness, site_for

from clublist.dns import resolver_for
from clublist.outbound import fairness
from clublist.outbound import worker as worker_module
from clublist.outbound.fairness import FairGate
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db as state
from clublist.state import queue


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for *condition* (polled as the event loop runs) with a deadline, never a blind sleep."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def test_the_gate_lets_the_lowest_rank_in_first() -> None:
    async def main() -> list[int]:
        gate = FairGate(1)
        order: list[int] = []
        await gate.acquire(100, 0)

        async def waiter(message: int, rank: int) -> None:
            async with gate.slot(message, rank):
                order.append(rank)

        ranks = (5, 3, 9, 0, 3)
        tasks = [asyncio.ensure_future(waiter(message, rank)) for message, rank in enumerate(ranks)]
        await until(lambda: all(gate.waiting(m) == [rank] for m, rank in enumerate(ranks)))
        gate.release(100)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 3, 3, 5, 9]


def test_a_cancelled_waiter_leaves_the_line_and_a_cancelled_holder_passes_the_slot_on() -> None:
    async def main() -> None:
        gate = FairGate(1)
        await gate.acquire(7, 0)
        leaving = asyncio.ensure_future(gate.acquire(7, 1))
        staying = asyncio.ensure_future(gate.acquire(7, 2))
        await until(lambda: gate.waiting(7) == [1, 2])
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert gate.waiting(7) == [2]
        gate.release(7)  # the slot goes to rank 2: the cancelled rank 1 left the line
        await asyncio.wait_for(staying, 5)
        given = asyncio.ensure_future(gate.acquire(7, 3))
        await until(lambda: gate.waiting(7) == [3])
        gate.release(7)  # rank 3 is handed the slot ...
        given.cancel()  # ... and cancelled before it runs: the slot must be free again
        with pytest.raises(asyncio.CancelledError):
            await given
        assert gate.holding(7) == 0
        await asyncio.wait_for(gate.acquire(8, 4), 5)

    asyncio.run(main())


def test_the_last_free_slot_is_kept_from_the_busiest_message() -> None:
    async def main() -> None:
        gate = FairGate(4)
        for rank in range(3):
            await asyncio.wait_for(gate.acquire(1, rank), 5)
        fourth = asyncio.ensure_future(gate.acquire(1, 3))
        await until(lambda: gate.waiting(1) == [3])  # one slot free, but not for message 1
        await asyncio.wait_for(gate.acquire(2, 0), 5)  # a message that holds none starts at once
        gate.release(1)  # message 1 holds 2, message 2 holds 1: the free slot is not for 1 ...
        assert gate.waiting(1) == [3] and gate.holding(1) == 2
        await asyncio.wait_for(gate.acquire(2, 1), 5)  # ... but message 2 may take it
        gate.release(2)
        gate.release(2)  # message 2 is done: two free, message 1 takes one
        await asyncio.wait_for(fourth, 5)
        assert (gate.holding(1), gate.holding(2)) == (3, 0)

    asyncio.run(main())


@pytest.mark.parametrize("value", [1, 2, 3])
def test_a_gate_of_few_slots_keeps_none_back(value: int) -> None:
    async def main() -> None:
        gate = FairGate(value)
        for rank in range(value):
            await asyncio.wait_for(gate.acquire(1, rank), 5)
        assert gate.holding(1) == value

    asyncio.run(main())


def test_a_small_message_goes_first_and_the_others_wait_while_it_is_under_way() -> None:
    async def main() -> None:
        gate = FairGate(2)
        await gate.acquire(1, 5)
        await gate.acquire(1, 6)
        big = asyncio.ensure_future(gate.acquire(3, 0))  # rank 0, but a big message's
        small = asyncio.ensure_future(gate.acquire(2, 4, small=True))
        await until(lambda: gate.waiting(2) == [4] and gate.waiting(3) == [0])
        gate.release(1)
        await asyncio.wait_for(small, 5)
        with gate.right_of_way():  # the small message's dialogue
            pausing = asyncio.ensure_future(gate.give_way())
            await until(lambda: gate.giving_way == 1)
            gate.release(1)  # a free slot, and a waiter: not while the small one is under way
            assert gate.waiting(3) == [0] and not pausing.done()
        await asyncio.wait_for(asyncio.gather(big, pausing), 5)
        assert gate.holding(3) == 1 and gate.giving_way == 0

    asyncio.run(main())


def test_a_pause_between_recipients_ends_after_the_longest_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small messages that keep coming must not hold an open transaction until its server hangs up."""
    monkeypatch.setattr(fairness, "LONGEST_PAUSE", 0.05)

    async def main() -> None:
        gate = FairGate(2)
        with gate.right_of_way():  # a small message's dialogue that does not end
            pausing = asyncio.ensure_future(gate.give_way())
            await until(lambda: gate.giving_way == 1)
            await asyncio.wait_for(pausing, 5)  # over, though the way is still taken
            assert gate.giving_way == 0

    asyncio.run(main())


@pytest.mark.parametrize("saturated", [False, True], ids=["idle worker", "worker full"])
def test_a_small_post_goes_ahead_of_the_rest_of_a_big_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturated: bool
) -> None:
    """One connection to the smarthost, 10 recipients a transaction: a 200-member post is 20
    transactions.  A 3-member post queued while the first of them is in DATA is sent next,
    not 20th.  "worker full": the big post alone fills the worker's in-flight limit."""
    if saturated:
        monkeypatch.setattr(worker_module, "CLAIM_BATCH", 50)
        monkeypatch.setattr(worker_module, "MAX_IN_FLIGHT", 100)
    hold = threading.Event()
    in_data = threading.Event()

    def first_data_waits(recipients: list[str]) -> None:
        if not in_data.is_set():
            in_data.set()
            assert hold.wait(30)  # blocks this one-connection server until the small post waits
        return None

    with RemoteMTA(behaviour=Behaviour(data=first_data_waits)) as mta:
        harness = through_sink(tmp_path, mta.port, connections=1)
        big = harness.enqueue([f"big{n}@example.org" for n in range(200)])

        async def body(worker: DeliveryWorker) -> None:
            try:
                assert await asyncio.to_thread(in_data.wait, 30)
                small = harness.enqueue(SMALL)
                small_id = queue.require_message(harness.conn, small)
                worker.wake()
                gate = worker._per_destination["smarthost"]
                # Until the small post's transaction waits for its turn.
                await until(lambda: gate.waiting(small_id) == [0])
                hold.set()
                assert await asyncio.to_thread(mta.wait_for, lambda m: m.received_count == 203, 60)
                assert small
            finally:
                hold.set()

        asyncio.run(run_worker(harness, body))
    order = ["small" if t.rcpt_tos[0].startswith("small") else "big" for t in mta.transactions]
    assert big and order.count("big") == 20
    assert order.index("small") == 1, order


def _no_dns() -> object:
    class Unused:
        port = 1

    return Unused()


def test_a_post_queued_while_the_worker_claims_is_taken_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The small post is queued, and the worker woken, while the worker leases the big post's
    second batch; its third batch (older rows first) fills the worker.  The small post must not
    wait until a whole batch of the big one has been sent."""
    monkeypatch.setattr(worker_module, "CLAIM_BATCH", 50)
    monkeypatch.setattr(worker_module, "MAX_IN_FLIGHT", 200)
    hold = threading.Event()

    def first_data_waits(recipients: list[str]) -> None:
        assert hold.wait(30)  # the one connection stays busy until the small post waits its turn
        return None

    with RemoteMTA(behaviour=Behaviour(data=first_data_waits)) as mta:
        harness = through_sink(tmp_path, mta.port, connections=1)
        harness.enqueue([f"big{n}@example.org" for n in range(200)])
        claim, claims = queue.claim, []
        small: list[int] = []  # the small post's message id

        async def body(worker: DeliveryWorker) -> None:
            loop = asyncio.get_running_loop()

            def claim_and_meanwhile_queue(conn: sqlite3.Connection, now: float, **options: Any) -> list[Any]:
                claims.append(now)
                if len(claims) == 2:  # in the claim's own transaction: committed with it
                    queue_id = queue.enqueue(
                        conn,
                        kind="post",
                        sender="bounces@myclub.org",
                        recipients=["small1@example.org", "small2@example.org"],
                        content=MESSAGE,
                        now=now,
                        list_name="youth",
                    )
                    small.append(queue.require_message(conn, queue_id))
                    loop.call_soon_threadsafe(worker.wake)
                return claim(conn, now, **options)

            # Before the worker's first claim: run_worker starts it, the body runs first.
            monkeypatch.setattr(queue, "claim", claim_and_meanwhile_queue)
            try:
                await until(lambda: "smarthost" in worker._per_destination)
                gate = worker._per_destination["smarthost"]

                # A lost wake shows here: the small post would wait until 50 big ones are sent.
                await until(lambda: bool(small) and gate.waiting(small[0]) == [0])
                hold.set()
                assert await asyncio.to_thread(mta.wait_for, lambda m: m.received_count == 202, 60)
            finally:
                hold.set()

        asyncio.run(run_worker(harness, body))
    order = ["small" if t.rcpt_tos[0].startswith("small") else "big" for t in mta.transactions]
    assert order.index("small") == 1, order


class HoldingSink:
    """A smarthost in the test's own event loop: it counts open connections, logs each RCPT and
    DATA as it answers it, and holds one until the event that :attr:`hold_rcpt` or
    :attr:`hold_data` name for it is set."""

    def __init__(self) -> None:
        self.open = 0
        self.most_open = 0
        self.log: list[str] = []  # "RCPT address", "DATA first-recipient": in the order answered
        self.held: list[str] = []  # what is held now, as it will be logged
        self.hold_rcpt: Callable[[str], asyncio.Event | None] = lambda address: None
        self.hold_data: Callable[[list[str]], asyncio.Event | None] = lambda recipients: None

    async def start(self) -> int:
        sink = self

        class Counting(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sink.open += 1
                sink.most_open = max(sink.most_open, sink.open)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                sink.open -= 1
                super().connection_lost(exc)

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Counting(self, hostname="sink.test"), "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _answer(self, line: str, hold: asyncio.Event | None) -> None:
        if hold is not None:
            self.held.append(line)
            await hold.wait()
            self.held.remove(line)
        self.log.append(line)

    async def handle_RCPT(
        self, server: SMTP, session: object, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._answer(f"RCPT {address}", self.hold_rcpt(address))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: object, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        await self._answer(f"DATA {recipients[0]}", self.hold_data(recipients))
        return "250 2.0.0 OK"

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in self.log)


async def run_worker(harness: Harness, body: Callable[[DeliveryWorker], Awaitable[None]]) -> None:
    """A running worker for the length of *body*, then stopped and drained."""
    site = harness.site
    writer = state.Writer(harness.path)
    config = DeliveryConfig.from_site(site, harness.path)
    worker = DeliveryWorker(writer, config, resolver_for(site), clock=harness.clock)
    stop = asyncio.Event()
    running = asyncio.ensure_future(worker.run(stop))
    try:
        await body(worker)
    finally:
        stop.set()
        await running
        await worker.drain(5)
        writer.close()


def through_sink(tmp_path: Path, port: int, connections: int = 4) -> Harness:
    """A club sending through the sink: *connections* at most, ten recipients a transaction."""
    site = site_for(
        _no_dns(),
        1,
        mode="smarthost",
        smarthost=f"127.0.0.1:{port}",
        per_destination_concurrency=connections,
        max_recipients_per_transaction=10,
        timeout=30,
    )
    return Harness(tmp_path, site)


async def run_through(
    harness: Harness,
    sink: HoldingSink,
    body: Callable[[DeliveryWorker], Awaitable[None]],
    *gates: asyncio.Event,
) -> None:
    """:func:`run_worker` through *sink*; then, whatever happened, every gate opened and the sink
    stopped, and every row must have ended sent."""
    try:
        await run_worker(harness, body)
    finally:
        for gate in gates:
            gate.set()
        await sink.stop()
    assert set(harness.statuses().values()) == {"sent"}


SMALL = ["small1@example.org", "small2@example.org", "small3@example.org"]


def test_a_small_post_starts_while_a_big_one_fills_the_other_connections(tmp_path: Path) -> None:
    """A 60-member post takes three of the four connections and no more; its transactions are
    held in DATA.  A 3-member post queued then goes out on the fourth while all three are still
    held, and no more than four connections are ever open."""

    async def main() -> HoldingSink:
        sink = HoldingSink()
        go = asyncio.Event()
        sink.hold_data = lambda recipients: go if recipients[0].startswith("big") else None
        harness = through_sink(tmp_path, await sink.start())
        big = queue.require_message(
            harness.conn, harness.enqueue([f"big{n:02d}@example.org" for n in range(60)])
        )

        async def body(worker: DeliveryWorker) -> None:
            await until(lambda: len(sink.held) == 3)
            gate = worker._per_destination["smarthost"]
            await until(lambda: gate.waiting(big) == [3, 4, 5])  # one slot free, not for the big post
            assert gate.holding(big) == 3
            harness.enqueue(SMALL)
            worker.wake()
            await until(lambda: sink.count("DATA small") == 1)
            assert len(sink.held) == 3 and sink.count("DATA big") == 0  # the big post's three still held
            go.set()
            await until(lambda: sink.count("DATA big") == 6)

        await run_through(harness, sink, body, go)
        return sink

    sink = asyncio.run(main())
    assert sink.most_open <= 4, sink.most_open


def test_a_big_post_waits_between_recipients_while_a_small_one_is_sent(tmp_path: Path) -> None:
    """Both transactions of a 20-member post are held at their fifth RCPT; a 3-member post
    starts and is held in DATA; then the fifth RCPTs are answered.  The big post's transactions
    send nothing more until the small post's DATA has been answered."""

    async def main() -> HoldingSink:
        sink = HoldingSink()
        fifth_go, small_go = asyncio.Event(), asyncio.Event()
        fifth = {"big04@example.org", "big14@example.org"}
        sink.hold_rcpt = lambda address: fifth_go if address in fifth else None
        sink.hold_data = lambda recipients: small_go if recipients[0].startswith("small") else None
        harness = through_sink(tmp_path, await sink.start())
        harness.enqueue([f"big{n:02d}@example.org" for n in range(20)])

        async def body(worker: DeliveryWorker) -> None:
            await until(lambda: len(sink.held) == 2)
            harness.enqueue(SMALL)
            worker.wake()
            await until(lambda: sink.held[2:] == ["DATA small1@example.org"])
            fifth_go.set()
            gate = worker._per_destination["smarthost"]
            await until(lambda: gate.giving_way == 2)  # both answered, both waiting
            assert sink.count("RCPT big") == 10
            small_go.set()
            await until(lambda: sink.count("DATA") == 3)

        await run_through(harness, sink, body, fifth_go, small_go)
        return sink

    sink = asyncio.run(main())
    small_done = sink.log.index("DATA small1@example.org")
    assert small_done < sink.log.index("RCPT big05@example.org"), sink.log
    assert small_done < sink.log.index("RCPT big15@example.org"), sink.log
    assert sink.most_open <= 4, sink.most_open


class SmallPostDuringTheFirstClaim:
    """queue.claim patched so that the first claim queues a 3-member post in its own transaction
    (committed with it) and wakes the running worker; what each claim took is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.claims: list[set[str]] = []  # what each claim took: "big", "small"
        self.small: list[int] = []  # the small post's message
        self._wake: Callable[[], None] = lambda: None
        claim = queue.claim

        def claim_and_meanwhile_queue(conn: sqlite3.Connection, now: float, **options: Any) -> list[Any]:
            if not self.claims:
                queue_id = queue.enqueue(
                    conn,
                    kind="post",
                    sender="bounces@myclub.org",
                    recipients=SMALL,
                    content=MESSAGE,
                    now=now,
                    list_name="youth",
                )
                self.small.append(queue.require_message(conn, queue_id))
                self._wake()
            rows = claim(conn, now, **options)
            self.claims.append({row.recipient.partition("@")[0].rstrip("0123456789") for row in rows})
            return rows

        monkeypatch.setattr(queue, "claim", claim_and_meanwhile_queue)

    def wakes(self, worker: DeliveryWorker) -> None:
        """The post queued wakes *worker* (from the state writer's thread); before its first claim runs."""
        loop = asyncio.get_running_loop()
        self._wake = lambda: loop.call_soon_threadsafe(worker.wake)


def test_new_mail_is_claimed_before_more_of_a_post_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leased 50 rows at a time, a 200-member post takes four claims.  A post queued during the
    first is taken by the second, ahead of the rest of the big one (whose older rows come first
    otherwise)."""
    monkeypatch.setattr(worker_module, "CLAIM_BATCH", 50)
    during = SmallPostDuringTheFirstClaim(monkeypatch)

    async def main() -> None:
        sink = HoldingSink()
        harness = through_sink(tmp_path, await sink.start())
        harness.enqueue([f"big{n:03d}@example.org" for n in range(200)])

        async def body(worker: DeliveryWorker) -> None:
            during.wakes(worker)
            await until(lambda: sink.count("DATA") == 21)

        await run_through(harness, sink, body)

    asyncio.run(main())
    assert during.claims[:3] == [{"big"}, {"small"}, {"big"}], during.claims
    assert during.small


def test_more_of_a_big_post_is_claimed_only_after_the_small_post_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leased 20 rows at a time, a 60-member post takes three claims; a post queued during the
    first is taken by the second.  While the small post is in flight (held in DATA), no claim
    takes more of the big one: a claim of thousands of rows would hold the interpreter lock
    that the small post's every socket call needs."""
    monkeypatch.setattr(worker_module, "CLAIM_BATCH", 20)
    during = SmallPostDuringTheFirstClaim(monkeypatch)

    async def main() -> None:
        sink = HoldingSink()
        big_go, small_go = asyncio.Event(), asyncio.Event()
        sink.hold_data = lambda recipients: small_go if recipients[0].startswith("small") else big_go
        harness = through_sink(tmp_path, await sink.start())
        harness.enqueue([f"big{n:02d}@example.org" for n in range(60)])

        async def body(worker: DeliveryWorker) -> None:
            during.wakes(worker)
            await until(lambda: "DATA small1@example.org" in sink.held)
            assert during.claims == [{"big"}, {"small"}], during.claims  # no more of the big one meanwhile
            small_go.set()
            await until(lambda: len(during.claims) >= 3)
            big_go.set()
            await until(lambda: sink.count("DATA") == 7)

        await run_through(harness, sink, body, big_go, small_go)

    asyncio.run(main())
    assert during.claims[:4] == [{"big"}, {"small"}, {"big"}, {"big"}], during.claims


def test_a_smaller_limit_holds_back_slots_given_back_until_fewer_are_held() -> None:
    async def main() -> None:
        gate = FairGate(4)
        for rank in range(3):
            await asyncio.wait_for(gate.acquire(1, rank), 5)
        await asyncio.wait_for(gate.acquire(2, 0), 5)
        waiting = asyncio.ensure_future(gate.acquire(3, 0))
        await until(lambda: gate.waiting(3) == [0])
        gate.resize(2)
        gate.release(1)
        gate.release(1)  # two held now, the new limit: none for message 3
        assert gate.waiting(3) == [0]
        gate.release(2)
        await asyncio.wait_for(waiting, 5)  # one held (message 1), so message 3 may take the second
        assert (gate.holding(1), gate.holding(3)) == (1, 1)
        gate.resize(3)
        await asyncio.wait_for(gate.acquire(4, 0), 5)  # a larger limit hands out at once

    asyncio.run(main())


def test_a_reload_that_lowers_the_connection_limit_is_kept_by_the_next_post(tmp_path: Path) -> None:
    """The worker sent through four connections; after a reconfigure to two, a 60-member post
    (six transactions, each held in DATA until released) never has more than two open at once."""

    async def main() -> HoldingSink:
        sink = HoldingSink()
        go = asyncio.Event()
        sink.hold_data = lambda recipients: go
        harness = through_sink(tmp_path, await sink.start(), connections=4)

        async def body(worker: DeliveryWorker) -> None:
            harness.enqueue(SMALL)
            worker.wake()
            await until(lambda: len(sink.held) == 1)  # the destination's gate exists, at four
            go.set()
            await until(lambda: set(harness.statuses().values()) == {"sent"})
            go.clear()
            worker.reconfigure(dataclasses.replace(worker.config, per_destination=2))
            sink.most_open = sink.open  # what the pool keeps open from the first post
            big = queue.require_message(
                harness.conn, harness.enqueue([f"big{n:02d}@example.org" for n in range(60)])
            )
            worker.wake()
            gate = worker._per_destination["smarthost"]
            await until(lambda: len(sink.held) == 2 and gate.waiting(big) == [2, 3, 4, 5])
            go.set()
            await until(lambda: sink.count("DATA big") == 6)

        await run_through(harness, sink, body, go)
        return sink

    sink = asyncio.run(main())
    assert sink.most_open <= 2, sink.most_open
