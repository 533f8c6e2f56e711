"""The delivery worker on a busy day: content loads that race transactions finishing beside them.

A real Writer, the real queue and a loopback smarthost that takes 0.2 s per
transaction; the worker's content load is slowed down (or broken) for one
message through its ``load_content`` seam, as a busy writer thread makes it.
``CLUBLIST_RACE_RUNS=50 pytest tests/test_delivery_race.py`` repeats each case.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from mta import Behaviour, RemoteMTA

from clublist.club.model import DeliverySection, RetrySection, Site, SiteSection
from clublist.dns import resolver_for
from clublist.outbound import worker as delivery
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db as state
from clublist.state import queue

RUNS = range(int(os.environ.get("CLUBLIST_RACE_RUNS", "1")))
MESSAGE = b"From: anna@example.org\r\nTo: youth@myclub.org\r\nSubject: Busy day\r\n\r\nHello.\r\n"
NOW = 1_800_000_000.0


class SlowLoads(DeliveryWorker):
    """A worker whose content loads take *slow* seconds, or fail, for the messages named."""

    def __init__(self, *args: object, slow: dict[int, float], broken: set[int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.slow, self.broken = slow, broken

    async def load_content(self, message_id: int) -> bytes:
        if message_id in self.broken:
            raise RuntimeError("the disk is on fire")
        await asyncio.sleep(self.slow.get(message_id, 0.0))
        return await super().load_content(message_id)


class Queue:
    """A state database with posts in it, and a worker run against a smarthost."""

    def __init__(self, tmp_path: Path, smarthost: RemoteMTA) -> None:
        self.path = tmp_path / "var" / "clublist.sqlite3"
        self.conn = state.connect(self.path)
        self.site = Site(
            site=SiteSection(domain="myclub.org", admin="admin@myclub.org"),
            delivery=DeliverySection(mode="smarthost", smarthost=f"127.0.0.1:{smarthost.port}", timeout=5),
            retry=RetrySection(schedule=[300], give_up_after=3600),
        )

    def post(self, recipients: list[str]) -> int:
        """Queue a post; its message id."""
        with state.transaction(self.conn):
            queue_id = queue.enqueue(
                self.conn,
                kind="post",
                sender="bounces@myclub.org",
                recipients=recipients,
                content=MESSAGE,
                now=NOW,
                list_name="youth",
            )
            return queue.require_message(self.conn, queue_id)

    def deliver(self, passes: int, *, slow: dict[int, float] = {}, broken: set[int] = set()) -> None:  # noqa: B006
        """*passes* passes one right after the other, without waiting in between; then drain."""

        async def main() -> None:
            writer = state.Writer(self.path)
            worker = SlowLoads(
                writer,
                DeliveryConfig.from_site(self.site, self.path),
                resolver_for(self.site),
                clock=lambda: NOW,
                slow=slow,
                broken=broken,
            )
            try:
                for _ in range(passes):
                    await worker.pass_once(wait=False)
                await worker.pass_once(wait=True)
                await worker.drain(30)
            finally:
                writer.close()

        asyncio.run(main())

    def rows(self) -> dict[str, queue.QueueRow]:
        return {r.recipient: r for r in queue.rows(self.conn, status="all")}


@pytest.mark.parametrize("run", RUNS)
def test_deliveries_claimed_while_their_message_finishes_a_transaction_are_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, run: int
) -> None:
    # The first pass claims three of the post's five rows and sends them (0.2 s); the second
    # claims the other two and a new message whose content loads slowly (0.5 s), so the
    # first transaction ends while the second pass is still loading.
    monkeypatch.setattr(delivery, "CLAIM_BATCH", 3)
    with RemoteMTA(behaviour=Behaviour(data_seconds=0.2)) as smarthost:
        mail = Queue(tmp_path, smarthost)
        post = [f"member{n}@example.org" for n in range(5)]
        mail.post(post)
        new = mail.post(["late@example.org"])
        with caplog.at_level(logging.INFO, logger="clublist"):
            mail.deliver(2, slow={new: 0.5})
        assert smarthost.delivered == {*post, "late@example.org"}
    assert {r.recipient: r.status for r in mail.rows().values()} == dict.fromkeys(
        [*post, "late@example.org"], "sent"
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("run", RUNS)
def test_an_unexpected_error_defers_only_its_own_transaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, run: int
) -> None:
    with RemoteMTA() as smarthost:
        mail = Queue(tmp_path, smarthost)
        broken = mail.post(["anna@example.org", "ben@example.org"])
        mail.post(["carl@example.org"])
        with caplog.at_level(logging.INFO, logger="clublist"):
            mail.deliver(1, broken={broken})
        assert smarthost.delivered == {"carl@example.org"}
    rows = mail.rows()
    assert rows["carl@example.org"].status == "sent"
    for recipient in ("anna@example.org", "ben@example.org"):
        assert rows[recipient].status == "deferred"
        assert rows[recipient].last_reply == "internal error in clublist"
        assert rows[recipient].next_attempt == NOW + 300
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert rows["anna@example.org"].queue_id in errors[0].getMessage()
