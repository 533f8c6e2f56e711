"""Fair turns at the delivery worker's connection limits, so a small post never waits behind a big one.

A post to 10,000 members becomes a hundred transactions that all wait for the same 20
connections to the smarthost; handed out first come, first served, a 30-member post queued
a moment later waits for all of them.  :class:`FairGate` is a semaphore that lets waiters in
by a rank: the worker ranks each transaction by how many transactions of the same message
came before it, so the first transaction of every message goes ahead of the 50th of
another, which interleaves posts round-robin.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator


class FairGate:
    """A semaphore whose waiters go in by rank (lowest first), then in order of arrival."""

    def __init__(self, value: int) -> None:
        self._free = value
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, rank: int) -> AsyncIterator[None]:
        await self.acquire(rank)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, rank: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (rank, next(self._arrival), turn)
        heapq.heappush(self._waiters, entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given the slot, then cancelled: pass it on
                self.release()
            else:  # still waiting: leave the line, so only live waiters are ever in it
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        """Hand the slot to the best-ranked waiter, or keep it free when no one waits."""
        if self._waiters:
            heapq.heappop(self._waiters)[2].set_result(None)
        else:
            self._free += 1
