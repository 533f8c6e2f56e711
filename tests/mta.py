"""A real SMTP server on loopback playing the remote MTA (or a smarthost, or a plain sink).

It runs aiosmtpd in its own thread and event loop, so synchronous tests,
asyncio tests and subprocesses can all talk to it.  Behaviour is chosen
per recipient (``rcpt``) and per transaction (``data``); every accepted
transaction is recorded.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Transaction:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Behaviour:
    """What the server answers: a reply per recipient (None: 250), and what DATA does.

    ``data`` is None (250), a reply line, "hangup" (close the connection in
    DATA), or "stall" (never answer).  ``data_seconds`` is how long each DATA
    takes, as on a busy smarthost.
    """

    mail: Callable[[str], str | None] = lambda sender: None  # the reply to MAIL FROM (None: 250)
    rcpt: Callable[[str], str | None] = lambda address: None
    data: Callable[[list[str]], str | None] = lambda rcpts: None
    delivered: Callable[[Transaction], None] = lambda transaction: None
    data_seconds: float = 0.0


class _Handler:
    def __init__(self, mta: RemoteMTA) -> None:
        self.mta = mta

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.mta.behaviour.mail(address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.mta.behaviour.rcpt(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mta.behaviour.data_seconds:
            await asyncio.sleep(self.mta.behaviour.data_seconds)
        action = self.mta.behaviour.data(list(envelope.rcpt_tos))
        if action == "hangup":
            server.transport.close()
            return "421 4.3.0 closing"
        if action == "stall":
            await self.mta.release.wait()
            return "451 4.3.0 stalled"
        if action is not None:
            return action
        content = envelope.original_content or b""
        transaction = Transaction(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            content,
            session.ssl is not None,
            list(envelope.mail_options),
        )
        with self.mta.lock:
            self.mta.transactions.append(transaction)
            self.mta.delivered.update(a.lower() for a in envelope.rcpt_tos)
            self.mta.received_count += len(envelope.rcpt_tos)
        self.mta.changed.set()
        self.mta.behaviour.delivered(transaction)
        return "250 2.0.0 OK"


@dataclass
class RemoteMTA:
    """Start with ``with RemoteMTA() as mta:``; ``mta.port`` is its ephemeral port on 127.0.0.1."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    host: str = "127.0.0.1"
    tls_context: ssl.SSLContext | None = None
    require_starttls: bool = False
    smtputf8: bool = False
    transactions: list[Transaction] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)
    received_count: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.connections = 0

    def __enter__(self) -> RemoteMTA:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self.release.set)
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self.release = asyncio.Event()
        self.changed = threading.Event()

        def factory() -> SMTP:
            self.connections += 1
            return SMTP(
                _Handler(self),
                hostname="mx.test",
                tls_context=self.tls_context,
                require_starttls=self.require_starttls,
                enable_SMTPUTF8=self.smtputf8,
                data_size_limit=None,
                timeout=30,
            )

        self._server = await self._loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def wait_for(self, predicate: Callable[[RemoteMTA], bool], timeout: float = 30.0) -> bool:
        """Wait (without sleeping blindly) until *predicate* holds; False at the deadline."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(self):
                    return True
                self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.wait(min(remaining, 0.5))
