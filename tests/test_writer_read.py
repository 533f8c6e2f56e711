"""Reads beside the state writer: committed state, never a wait in the writer's line."""

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
