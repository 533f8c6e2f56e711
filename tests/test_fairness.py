"""A small post is not queued behind a big one: fair turns at the worker's connection limits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mta import Behaviour, RemoteMTA
from test_delivery import MESSAGE, Harness, site_for

from clublist.dns import resolver_for
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
        await gate.acquire(0)

        async def waiter(rank: int) -> None:
            async with gate.slot(rank):
                order.append(rank)

        tasks = [asyncio.ensure_future(waiter(rank)) for rank in (5, 3, 9, 0, 3)]
        await until(lambda: len(gate._waiters) == len(tasks))  # every waiter has joined the line
        gate.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 3, 3, 5, 9]


def test_a_cancelled_waiter_leaves_the_line_and_a_cancelled_holder_passes_the_slot_on() -> None:
    async def main() -> None:
        gate = FairGate(1)
        await gate.acquire(0)
        leaving = asyncio.ensure_future(gate.acquire(1))
        staying = asyncio.ensure_future(gate.acquire(2))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        gate.release()  # the slot goes to rank 2: the cancelled rank 1 left the line
        await asyncio.wait_for(staying, 5)
        given = asyncio.ensure_future(gate.acquire(3))
        await asyncio.sleep(0)
        gate.release()  # rank 3 is handed the slot ...
        given.cancel()  # ... and cancelled before it runs: the slot must be free again
        with pytest.raises(asyncio.CancelledError):
            await given
        await asyncio.wait_for(gate.acquire(4), 5)

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
        site = site_for(
            _no_dns(),
            1,
            mode="smarthost",
            smarthost=f"127.0.0.1:{mta.port}",
            per_destination_concurrency=1,
            max_recipients_per_transaction=10,
        )
        harness = Harness(tmp_path, site)
        big = harness.enqueue([f"big{n}@example.org" for n in range(200)])

        async def main() -> None:
            writer = state.Writer(harness.path)
            worker = DeliveryWorker(
                writer, DeliveryConfig.from_site(site, harness.path), resolver_for(site), clock=harness.clock
            )
            stop = asyncio.Event()
            running = asyncio.ensure_future(worker.run(stop))
            try:
                assert await asyncio.to_thread(in_data.wait, 30)
                small = harness.enqueue(["small1@example.org", "small2@example.org", "small3@example.org"])
                worker.wake()
                gate = worker._per_destination["smarthost"]
                # Until the small post's transaction waits for its turn.
                await until(lambda: any(rank == 0 for rank, _arrival, _turn in gate._waiters))
                hold.set()
                assert await asyncio.to_thread(mta.wait_for, lambda m: m.received_count == 203, 60)
                assert small
            finally:
                hold.set()
                stop.set()
                await running
                await worker.drain(5)
                writer.close()

        asyncio.run(main())
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
        site = site_for(
            _no_dns(),
            1,
            mode="smarthost",
            smarthost=f"127.0.0.1:{mta.port}",
            per_destination_concurrency=1,
            max_recipients_per_transaction=10,
        )
        harness = Harness(tmp_path, site)
        harness.enqueue([f"big{n}@example.org" for n in range(200)])
        claim, claims = queue.claim, []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            writer = state.Writer(harness.path)
            worker = DeliveryWorker(
                writer, DeliveryConfig.from_site(site, harness.path), resolver_for(site), clock=harness.clock
            )

            def claim_and_meanwhile_queue(conn: sqlite3.Connection, now: float, **options: Any) -> list[Any]:
                claims.append(now)
                if len(claims) == 2:  # in the claim's own transaction: committed with it
                    queue.enqueue(
                        conn,
                        kind="post",
                        sender="bounces@myclub.org",
                        recipients=["small1@example.org", "small2@example.org"],
                        content=MESSAGE,
                        now=now,
                        list_name="youth",
                    )
                    loop.call_soon_threadsafe(worker.wake)
                return claim(conn, now, **options)

            monkeypatch.setattr(queue, "claim", claim_and_meanwhile_queue)
            stop = asyncio.Event()
            running = asyncio.ensure_future(worker.run(stop))
            try:
                await until(lambda: "smarthost" in worker._per_destination)
                gate = worker._per_destination["smarthost"]

                # A lost wake shows here: the small post would wait until 50 big ones are sent.
                await until(lambda: any(rank == 0 for rank, _arrival, _turn in gate._waiters))
                hold.set()
                assert await asyncio.to_thread(mta.wait_for, lambda m: m.received_count == 202, 60)
            finally:
                hold.set()
                stop.set()
                await running
                await worker.drain(5)
                writer.close()

        asyncio.run(main())
    order = ["small" if t.rcpt_tos[0].startswith("small") else "big" for t in mta.transactions]
    assert order.index("small") == 1, order
