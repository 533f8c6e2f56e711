"""Fair turns at the delivery worker's connection limits, so a small post never waits behind a big one.

A post to 10,000 members becomes a hundred transactions that all want the same 20
connections to the smarthost; handed out first come, first served, a 30-member post queued
a moment later waits for all of them.  :class:`FairGate` (one per destination, one for the
worker's global limit) is a semaphore shared by messages, with these rules:

- Small messages first, then by rank: the worker calls a message small when it has no more
  recipients in flight than one grouped transaction takes (``max_recipients_per_transaction``),
  with VERP too, where they are as many transactions (a few rounds of the connections: still
  short beside a big post's hundreds), and ranks each transaction by how many
  of the same message came before it, so the first transaction of every message goes ahead
  of the 50th of another: posts interleave round-robin.
- The last free slot never goes to the message holding the most slots.  Order alone is not
  enough: a big post that took every slot before the small post arrived would still make it
  wait for one of its transactions to end, a whole wave of them, as they started together.
  So a post alone runs on one connection less than the limit, the next post starts at
  once, and a message behind takes every slot freed until it holds as many as the busiest.
  A gate of fewer than :data:`RESERVE_FROM` slots keeps nothing back (one slot is too big a
  share there).
- Right of way: while a small message's SMTP dialogue is under way at a destination, no
  big message's transaction starts there, and the long ones under way wait between two
  recipients (:meth:`FairGate.right_of_way`, :meth:`FairGate.give_way`).  A slot is not
  enough either: one event loop serves every connection in turn, so a 30-RCPT transaction
  beside 19 others of 100 RCPTs would get a twentieth of the round trips.  The pause lasts
  as long as the small transactions, at most :data:`LONGEST_PAUSE` at a time, so an open
  transaction never idles long enough for its server to hang up; a stream of small messages
  (a welcome to each of 1,000 imported members) still slows a big post while it flows.

The limit itself is never exceeded: the reserve is one of the configured slots, not an extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

RESERVE_FROM = 4  # gates with at least this many slots keep the last one from the busiest message
# The longest a transaction pauses between two recipients for small messages: well under any
# server's command timeout (RFC 5321 asks for 5 minutes; Postfix under stress takes 10 s).
LONGEST_PAUSE = 5.0

# 0 for a small message's transaction (1 otherwise), rank, arrival, the future handing the slot over
_Waiter = tuple[int, int, int, asyncio.Future[None]]


class FairGate:
    """A semaphore shared by messages: small ones and low ranks first, the last slot not for the busiest."""

    def __init__(self, value: int) -> None:
        self._size = value
        self._free = value
        self._reserve = 1 if value >= RESERVE_FROM else 0
        self._held: dict[int, int] = {}  # slots held, by message
        self._waiting: dict[int, list[_Waiter]] = {}  # each message's waiters, a heap
        self._arrival = itertools.count()
        self._small_under_way = 0
        self._way_clear = asyncio.Event()
        self._way_clear.set()
        self.giving_way = 0  # transactions waiting between two recipients now

    @contextlib.asynccontextmanager
    async def slot(self, message: int, rank: int, *, small: bool = False) -> AsyncIterator[None]:
        await self.acquire(message, rank, small=small)
        try:
            yield
        finally:
            self.release(message)

    def resize(self, value: int) -> None:
        """A new limit (a reload changed the setting).  Smaller: slots held beyond it are not
        handed out again when given back, until fewer than *value* are held."""
        self._free += value - self._size
        self._size = value
        self._reserve = 1 if value >= RESERVE_FROM else 0
        self._dispatch()

    def holding(self, message: int) -> int:
        """How many slots *message* holds now."""
        return self._held.get(message, 0)

    def waiting(self, message: int) -> list[int]:
        """The ranks of *message*'s transactions waiting for a slot, lowest first."""
        return sorted(rank for _big, rank, _arrival, _turn in self._waiting.get(message, []))

    async def acquire(self, message: int, rank: int, *, small: bool = False) -> None:
        """Wait for a slot; *small*: a transaction of a small message."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (0 if small else 1, rank, next(self._arrival), turn)
        heapq.heappush(self._waiting.setdefault(message, []), entry)
        self._dispatch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given the slot, then cancelled: pass it on
                self.release(message)
            else:  # still waiting: leave the line (unless a hand-out has already dropped it)
                line = self._waiting.get(message, [])
                if entry in line:
                    line.remove(entry)
                    heapq.heapify(line)
                if not line:
                    self._waiting.pop(message, None)
            raise

    def release(self, message: int) -> None:
        """Give the slot back; it goes to the best waiter allowed to take it, or stays free."""
        self._free += 1
        held = self._held[message] - 1
        if held:
            self._held[message] = held
        else:
            del self._held[message]
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the best waiters allowed to take them (the rules above)."""
        while self._free > 0:
            busiest = max(self._held.values(), default=0) if self._free <= self._reserve else None
            best: list[_Waiter] | None = None
            chosen = 0
            for message, line in self._waiting.items():  # a line per message waiting (while a server
                # hangs, thousands, but then no slot is free and this loop does not run)
                big = line[0][0]  # the line's best is small if any of its waiters is
                if big and self._small_under_way:
                    continue
                if busiest is not None and self._held.get(message, 0) >= busiest:
                    continue
                if best is None or line[0] < best[0]:
                    best, chosen = line, message
            if best is None:
                return
            *_order, turn = heapq.heappop(best)
            if not best:
                del self._waiting[chosen]
            if turn.cancelled():  # its task is being cancelled and has not left the line yet
                continue
            self._free -= 1
            self._held[chosen] = self._held.get(chosen, 0) + 1
            turn.set_result(None)

    @contextlib.contextmanager
    def right_of_way(self) -> Iterator[None]:
        """Around a small message's SMTP dialogue: the others wait (the rules above)."""
        self._small_under_way += 1
        self._way_clear.clear()
        try:
            yield
        finally:
            self._small_under_way -= 1
            if not self._small_under_way:
                self._way_clear.set()
                self._dispatch()

    async def give_way(self) -> None:
        """A transaction between two recipients: wait while a small message's dialogue is under way,
        at most :data:`LONGEST_PAUSE` (a stream of small posts must not make its server hang up)."""
        if self._way_clear.is_set():
            return
        self.giving_way += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._way_clear.wait(), LONGEST_PAUSE)
        finally:
            self.giving_way -= 1


@dataclass(frozen=True)
class Turn:
    """One transaction's manners at its destination: a small message's takes the right of way."""

    gate: FairGate
    small: bool

    def under_way(self) -> contextlib.AbstractContextManager[None]:
        """Around the SMTP dialogue, the connection open: a slow connect must stop no one."""
        return self.gate.right_of_way() if self.small else contextlib.nullcontext()

    async def between_recipients(self) -> None:
        if not self.small:
            await self.gate.give_way()
