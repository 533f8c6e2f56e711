"""Sending runs ahead of storing outcomes only so far: what a crash sends twice stays bounded.

Outcomes are stored after a transaction gives its connection back; a transaction takes room
before it sends and gives it back once its outcomes are stored, so while the state writer
cannot store them (a stalled disk), no more than twice the destination's connections can be
sent and not stored, and sending stops there until the writer catches up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from mta import RemoteMTA
from test_delivery_race import NOW, Queue

from clublist.dns import resolver_for
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db as state
from clublist.state.queue import Delivery, Outcome


class StalledStore(DeliveryWorker):
    """A worker whose outcomes are not stored until *stored* is set (a writer stuck on its disk)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stored = asyncio.Event()
        self.waiting = 0

    async def _record(self, outcomes: list[Outcome], deliveries: list[Delivery]) -> None:
        self.waiting += 1
        await self.stored.wait()
        await super()._record(outcomes, deliveries)


def test_sending_stops_while_twice_the_connections_of_outcomes_wait_to_be_stored(tmp_path: Path) -> None:
    with RemoteMTA() as smarthost:
        mail = Queue(tmp_path, smarthost)
        delivery = dataclasses.replace(
            mail.site.delivery, per_destination_concurrency=2, max_recipients_per_transaction=1
        )
        mail.site = dataclasses.replace(mail.site, delivery=delivery)
        recipients = [f"member{n}@example.org" for n in range(12)]
        mail.post(recipients)

        async def main() -> tuple[int, int]:
            writer = state.Writer(mail.path)
            config = DeliveryConfig.from_site(mail.site, mail.path)
            worker = StalledStore(writer, config, resolver_for(mail.site), clock=lambda: NOW)
            try:
                run = asyncio.ensure_future(worker.pass_once(wait=True))
                for _ in range(1000):  # four transactions (2 connections x 2) wait to be stored
                    if worker.waiting == 4 and smarthost.received_count == 4:
                        break
                    await asyncio.sleep(0.01)  # polled, deadline 10 s: the worker has no event for it
                else:
                    raise AssertionError(f"{worker.waiting} waiting, {smarthost.received_count} sent")
                # And nothing more is sent meanwhile.  What must not happen has no event to wait
                # for: the worker runs on for a window of 0.2 s (any further transaction would
                # reach the loopback sink in a few milliseconds), then the count is read.
                for _ in range(20):
                    await asyncio.sleep(0.01)
                sent_while_stalled = smarthost.received_count
                worker.stored.set()
                await asyncio.wait_for(run, 30)
                return sent_while_stalled, smarthost.received_count
            finally:
                await worker.drain(5)
                writer.close()

        assert asyncio.run(main()) == (4, 12)
    assert {r.status for r in mail.rows().values()} == {"sent"}
