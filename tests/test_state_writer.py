"""The state writer: reads beside it never wait in its line; leases alone never wait for the disk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from clublist.state import db as state
from clublist.state import queue


def test_a_read_does_not_wait_for_the_writes_in_line(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"

    async def main() -> None:
        writer = state.Writer(path)
        try:
            queue_id = await writer.run(
                lambda c: queue.enqueue(
                    c, kind="post", sender="", recipients=["a@example.org"], content=b"hello", now=1.0
                )
            )
            message_id = await writer.run(lambda c: queue.require_message(c, queue_id))
            held, release = threading.Event(), threading.Event()

            def slow_write(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM messages")  # not committed while the read runs
                held.set()
                release.wait(30)

            write = asyncio.ensure_future(writer.run(slow_write))
            assert await asyncio.to_thread(held.wait, 30)
            # The writer thread is busy with the write; the read still answers, with what is committed.
            content = await asyncio.wait_for(writer.read(lambda c: queue.content(c, message_id)), 30)
            assert content == b"hello"
            assert not write.done()
            release.set()
            await write
            assert await writer.read(lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone()[0]) == 0
        finally:
            writer.close()

    asyncio.run(main())


def test_only_a_group_of_leases_alone_is_committed_without_waiting_for_the_disk(tmp_path: Path) -> None:
    """synchronous is FULL (2) for every group with a durable job in it, NORMAL (1) for leases alone."""

    def setting(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    async def main() -> list[int]:
        writer = state.Writer(tmp_path / "state.sqlite3")
        try:
            seen = [await writer.run(setting), await writer.run(setting, durable=False)]
            seen.append(await writer.run(setting))
            # Queued together, a lease and a durable job share one commit, and it waits for the disk.
            held, release = threading.Event(), threading.Event()

            def block(conn: sqlite3.Connection) -> None:
                held.set()
                release.wait(30)

            blocker = asyncio.ensure_future(writer.run(block))
            assert await asyncio.to_thread(held.wait, 30)
            together = [
                asyncio.ensure_future(writer.run(setting, durable=False)),
                asyncio.ensure_future(writer.run(setting)),
            ]
            await asyncio.sleep(0)  # both are in the writer's line before it takes the next group
            release.set()
            await blocker
            seen += await asyncio.gather(*together)
            return seen
        finally:
            writer.close()

    assert asyncio.run(main()) == [2, 1, 2, 2, 2]
