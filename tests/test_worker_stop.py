"""A stopping daemon's worker claims nothing more, whatever its claim loop was waiting for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mta import RemoteMTA
from test_delivery_race import NOW, Queue

from clublist.dns import resolver_for
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db as state


def test_a_claim_waiting_for_a_small_post_beside_a_big_one_ends_when_the_worker_stops(tmp_path: Path) -> None:
    with RemoteMTA() as smarthost:
        mail = Queue(tmp_path, smarthost)
        mail.post([f"member{n}@example.org" for n in range(3)])

        async def main() -> int:
            writer = state.Writer(mail.path)
            config = DeliveryConfig.from_site(mail.site, mail.path)
            worker = DeliveryWorker(writer, config, resolver_for(mail.site), clock=lambda: NOW)
            # As while a small post is on the wire beside a big one: more of the big one waits.
            worker._small, worker._rows = {1}, {1: 3, 2: 5000}
            worker._no_small.clear()
            stop = asyncio.Event()
            try:
                claim = asyncio.ensure_future(worker.pass_once(wait=False, stop=stop))
                await asyncio.sleep(0)  # the claim loop is waiting now
                assert not claim.done()
                stop.set()
                return await asyncio.wait_for(claim, 10)
            finally:
                writer.close()

        assert asyncio.run(main()) == 0  # nothing claimed
    assert {r.status for r in mail.rows().values()} == {"pending"}
