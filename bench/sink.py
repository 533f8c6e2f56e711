"""A lean SMTP sink for the benchmarks: aiosmtpd with a handler that only counts.

Run it in its own process::

    python bench/sink.py --port 0 [--mode accept|defer|reject|stall]

Its first line on stdout is ``port N``.  It then reads one command per line
on stdin and answers one line on stdout (times are ``time.monotonic()``,
which on Linux is CLOCK_MONOTONIC and so comparable across processes):

``reset``
    zero the counters; answers ``ok``.
``count``
    ``count RCPTS TRANSACTIONS CONNECTIONS RCPT_COMMANDS``.
``wait N TIMEOUT [SUFFIX]``
    answers once N recipients have been accepted in completed transactions
    since the last reset: ``reached RCPTS TRANSACTIONS CONNECTIONS T_FIRST T_LAST``
    (T_FIRST: end of the first transaction, T_LAST: end of the one that
    reached N), or ``timeout RCPTS TRANSACTIONS CONNECTIONS`` after TIMEOUT
    seconds.  Other commands keep being answered while a wait is pending.
    With SUFFIX (e.g. ``@small.example.net``), only recipients ending with
    it count, from the moment of the command, and the answer ends with
    SUFFIX: so two waits can run side by side, one per post.
``waitrcpt N TIMEOUT``
    the same, counting RCPT commands seen whatever the reply (for ``defer``).
``mode accept|defer|reject|stall``
    what RCPT answers from now on: 250, 451 4.3.0, or 550 5.1.1; with
    ``stall``, new connections are accepted but never greeted (a hung server).
``drop``
    close every stalled connection; answers ``dropped N``.
``save PATH``
    write the content of the last accepted transaction to PATH; ``saved BYTES``.
``quit`` (or end of stdin)
    stop.

Counting happens at the end of DATA: a recipient counts once the
transaction that carries it has been answered 250.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiosmtpd.smtp import SMTP, Envelope, Session

Mode = Literal["accept", "defer", "reject", "stall"]
MODES: tuple[Mode, ...] = ("accept", "defer", "reject", "stall")
RCPT_REPLIES: dict[Mode, str] = {
    "accept": "250 2.1.5 OK",
    "defer": "451 4.3.0 try again later",
    "reject": "550 5.1.1 no such user",
    "stall": "451 4.3.0 stalled",  # only for sessions opened before the switch to stall
}


@dataclass
class Counters:
    rcpts: int = 0
    transactions: int = 0
    connections: int = 0
    rcpt_commands: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class _Waiter:
    target: int
    counter: Literal["rcpts", "rcpt_commands"]
    future: asyncio.Future[float] = field(repr=False)
    suffix: str = ""  # count only the recipients ending with this (in `seen`)
    seen: int = 0


class CountingHandler:
    """Counts RCPT commands, accepted recipients and transactions; stores nothing but the last content."""

    def __init__(self, mode: Mode) -> None:
        self.mode: Mode = mode
        self.counters = Counters()
        self.last_content = b""
        self.waiters: list[_Waiter] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        self.counters.rcpt_commands += 1
        if self.mode == "accept":
            envelope.rcpt_tos.append(address)
        if self.waiters:
            self._check_waiters(time.monotonic())
        return RCPT_REPLIES[self.mode]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        counters = self.counters
        counters.rcpts += len(envelope.rcpt_tos)
        counters.transactions += 1
        if counters.transactions == 1:
            counters.first = now
        counters.last = now
        self.last_content = envelope.original_content or b""
        for waiter in self.waiters:
            if waiter.suffix:
                waiter.seen += sum(1 for rcpt in envelope.rcpt_tos if rcpt.endswith(waiter.suffix))
        self._check_waiters(now)
        return "250 2.0.0 OK"

    def wait(
        self, target: int, what: Literal["rcpts", "rcpt_commands"], suffix: str = ""
    ) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append(_Waiter(target, what, future, suffix))
        self._check_waiters(time.monotonic())
        return future

    def _check_waiters(self, now: float) -> None:
        if not self.waiters:
            return
        for waiter in list(self.waiters):
            count = waiter.seen if waiter.suffix else getattr(self.counters, waiter.counter)
            if count >= waiter.target:
                self.waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_result(now)


class Stalled(asyncio.Protocol):
    """A connection that is accepted and then left without a greeting."""

    def __init__(self, stalled: set[asyncio.Transport]) -> None:
        self.stalled = stalled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stalled.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stalled.discard(self.transport)


class Sink:
    def __init__(self, mode: Mode) -> None:
        self.handler = CountingHandler(mode)
        self.stalled: set[asyncio.Transport] = set()

    def session(self) -> asyncio.Protocol:
        self.handler.counters.connections += 1
        if self.handler.mode == "stall":
            return Stalled(self.stalled)
        # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() for every connection.
        return SMTP(
            self.handler,
            hostname="sink.bench",
            ident="bench-sink",
            data_size_limit=None,
            decode_data=False,
            timeout=120,
        )

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.session, host, port, backlog=512)
        bound = server.sockets[0].getsockname()[1]
        say(f"port {bound}")
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "quit":
                    break
                if words[0] in ("wait", "waitrcpt"):
                    task = loop.create_task(self._wait(words))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                else:
                    say(self.command(words))
        finally:
            for task in pending:
                task.cancel()
            self.drop()
            server.close()
            await server.wait_closed()

    def command(self, words: list[str]) -> str:
        counters, handler = self.handler.counters, self.handler
        match words:
            case ["reset"]:
                handler.counters = Counters(connections=counters.connections)
                return "ok"
            case ["count"]:
                return (
                    f"count {counters.rcpts} {counters.transactions} {counters.connections}"
                    f" {counters.rcpt_commands}"
                )
            case ["mode", ("accept" | "defer" | "reject" | "stall") as mode]:
                handler.mode = mode
                return "ok"
            case ["drop"]:
                return f"dropped {self.drop()}"
            case ["save", path]:
                Path(path).write_bytes(handler.last_content)
                return f"saved {len(handler.last_content)}"
            case _:
                return f"error unknown command {' '.join(words)!r}"

    def drop(self) -> int:
        stalled = list(self.stalled)
        for transport in stalled:
            transport.close()
        return len(stalled)

    async def _wait(self, words: list[str]) -> None:
        target, timeout = int(words[1]), float(words[2]) if len(words) > 2 else 600.0
        suffix = words[3] if len(words) > 3 else ""
        what: Literal["rcpts", "rcpt_commands"] = "rcpts" if words[0] == "wait" else "rcpt_commands"
        future = self.handler.wait(target, what, suffix)
        try:
            reached = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            c = self.handler.counters
            say(f"timeout {c.rcpts} {c.transactions} {c.connections} {suffix}".rstrip())
            return
        c = self.handler.counters
        times = f"{c.first:.6f} {reached:.6f}"
        say(f"reached {c.rcpts} {c.transactions} {c.connections} {times} {suffix}".rstrip())


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="accept")
    args = parser.parse_args()
    asyncio.run(Sink(args.mode).serve(args.host, args.port))


if __name__ == "__main__":
    main()
