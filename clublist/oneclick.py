"""One-click unsubscribe over HTTP (RFC 8058): the only web page clublist serves.

Each member's copy of a post links to ``unsubscribe.url/TOKEN`` (see
:mod:`clublist.outbound.unsubscribe`).  A POST there takes that member off that list at once,
through the same action as ``member leave`` with the member's own rights, logs it and tells the
list's owners.  A GET only shows a page with one button that POSTs, so the link scanners of
mail filters, which follow every URL in a message, unsubscribe nobody.  The token is the last
segment of the path, so a reverse proxy may mount the service under any prefix.

Plain HTTP by default (behind a reverse proxy that holds the certificate), or HTTPS with the
listener's certificate (``listen.http_tls``).  A tiny asyncio server: requests are one line,
a few headers and no body worth reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import ssl
import time
from collections.abc import Callable
from email.utils import formataddr

from clublist.actions import Actor
from clublist.actions.members import member_leave
from clublist.club import changes
from clublist.club.store import Club, Store
from clublist.errors import ClublistError
from clublist.outbound import reports, unsubscribe
from clublist.state import queue
from clublist.state.db import Writer

log = logging.getLogger(__name__)

_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|[A-Z]+) (\S+) HTTP/1\.[01]\r?\n")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9._-]*\.[0-9a-f]{32}")
_MAX_HEADER_LINES = 100
_MAX_BODY = 64 * 1024
_TIMEOUT = 15.0
_MAX_CONNECTIONS = 100


class OneClickServer:
    """Answers GET and POST on ``.../TOKEN``; everything else is 404 or 405."""

    def __init__(
        self,
        *,
        store: Store,
        club: Callable[[], Club],
        writer: Writer,
        secret: bytes,
        on_queued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.club = club
        self.writer = writer
        self.secret = secret
        self.on_queued = on_queued
        self.clock = clock
        self.port = 0
        self._tokens: dict[str, tuple[str, str]] = {}
        self._tokens_of: Club | None = None
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def member_for(self, token: str) -> tuple[str, str] | None:
        """The (member address, list) a token names in the club as it is now, or None."""
        club = self.club()
        if self._tokens_of is not club:
            # One HMAC per membership: at 50,000 members too long for the event loop (see _page_for).
            self._tokens = {
                unsubscribe.token(self.secret, name, member.email): (member.email, name)
                for member in club.members
                for name in member.lists
                if name in club.lists
            }
            self._tokens_of = club
        return self._tokens.get(token)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= _MAX_CONNECTIONS:  # a flood of idle connections must not pile up
            writer.close()
            return
        self._open += 1
        try:
            await self._respond(reader, writer)
        finally:
            self._open -= 1

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            status, page, head_only = await asyncio.wait_for(self._answer(reader), _TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            status, page = "400 Bad Request", _page("Bad request", "This request could not be read.")
        except Exception:
            log.exception("one-click unsubscribe failed")
            status, page = "500 Internal Server Error", _page("Sorry", "Something went wrong; try again.")
        body = page.encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(Exception):
            writer.write(head.encode() + (b"" if head_only else body))
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, bool]:
        """The status and page for one request, and whether it was HEAD (headers only)."""
        request = _REQUEST_LINE.fullmatch(await reader.readline())
        if request is None:
            raise ValueError("not an HTTP request")
        length = 0
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        else:
            raise ValueError("too many header lines")
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("body too large")
        await reader.readexactly(length)  # List-Unsubscribe=One-Click: nothing in it decides anything
        method, path = request[1].decode(), request[2].decode("ascii", "replace")
        status, page = await self._page_for(method, path)
        return status, page, method == "HEAD"

    async def _page_for(self, method: str, path: str) -> tuple[str, str]:
        token = path.split("?", 1)[0].rstrip("/").rpartition("/")[2]
        found = await asyncio.to_thread(self.member_for, token) if _TOKEN.fullmatch(token) else None
        if found is None:
            return "404 Not Found", _page("Link not valid", "This unsubscribe link is not valid (any more).")
        address, list_name = found
        list_address = f"{list_name}@{self.club().site.domain}"
        if method in ("GET", "HEAD"):
            return "200 OK", _confirm_page(address, list_address)
        if method != "POST":
            return "405 Method Not Allowed", _page("Not allowed", "Use the button on the page.")
        changes.claim("one-click", [address])
        try:
            await asyncio.to_thread(member_leave, self.store, Actor(address, False), address, list_name)
        except ClublistError as exc:
            return "404 Not Found", _page("Not unsubscribed", html.escape(str(exc)))
        log.info("one-click unsubscribe: %s left %s", address, list_name)
        await self._tell_owners(address, list_name)
        return "200 OK", _page("Unsubscribed", f"{html.escape(address)} no longer receives {list_address}.")

    async def _tell_owners(self, address: str, list_name: str) -> None:
        club = self.club()
        site = club.site
        mailing_list = club.lists.get(list_name)
        owners = list(mailing_list.owners) if mailing_list and mailing_list.owners else [site.site.admin]
        subject = f"{address} left {list_name} (one-click unsubscribe)"
        notice = reports.notice(
            sender=formataddr(("clublist", site.bot_address)),
            to=owners,
            subject=subject,
            text=f"{address} unsubscribed from {list_name}@{site.domain} with the link in a post.\n",
            message_id_domain=site.domain,
        )
        content, now = bytes(notice), self.clock()
        await self.writer.run(
            lambda c: queue.enqueue(
                c,
                kind="notice",
                sender="",
                recipients=owners,
                content=content,
                now=now,
                subject=subject,
            )
        )
        self.on_queued()


def _page(title: str, text: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width"></head>'
        f"<body><h1>{html.escape(title)}</h1><p>{text}</p></body></html>\n"
    )


def _confirm_page(address: str, list_address: str) -> str:
    return _page(
        "Unsubscribe",
        f"Stop sending {html.escape(list_address)} to {html.escape(address)}?</p>"
        '<form method="post"><button type="submit" name="List-Unsubscribe" value="One-Click">'
        "Unsubscribe</button></form><p>",
    )
