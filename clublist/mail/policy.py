"""Postfix's policy delegation (SMTPD_POLICY_README), served by ``clublist run`` on listen.policy_port.

With ``check_policy_service inet:HOST:PORT`` in the public smtpd's recipient restrictions,
Postfix asks clublist about each recipient at RCPT, so a stranger or a made-up address is
refused before the message is even sent.  The decision is the listener's own RCPT stage (is
the address the club's, may this envelope sender post there); whatever needs the message
(authentication, the From header, the size) stays with the before-queue proxy at DATA, so
every other answer is ``DUNNO``.  The proxy alone is enough; this only refuses earlier.

A request is ``name=value`` lines ending with an empty line; the answer one ``action=`` line
and an empty line.  A request that cannot be read ends the connection: never a half reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_ATTRIBUTES = 100
MAX_LINE = 4096

# (recipient, envelope sender) -> the SMTP reply refusing it, or None.
Decide = Callable[[str, str], str | None]


class PolicyService:
    """Answers Postfix's access policy requests with the listener's RCPT decisions."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One Postfix connection: any number of requests, one answer each."""
        try:
            while (attributes := await _read_request(reader)) is not None:
                writer.write(f"action={self.action(attributes)}\n\n".encode())
                await writer.drain()
        except (ValueError, ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
            log.warning("policy service: dropped a connection: %s", exc)
        except Exception:
            log.exception("policy service: internal error; dropped the connection")
        finally:
            writer.close()

    def action(self, attributes: dict[str, str]) -> str:
        if attributes.get("request") != "smtpd_access_policy":
            raise ValueError(f"not a policy request: {attributes.get('request', '')!r}")
        if attributes.get("protocol_state", "").upper() != "RCPT":
            return "DUNNO"
        refusal = self.decide(attributes.get("recipient", ""), attributes.get("sender", ""))
        return refusal or "DUNNO"


async def _read_request(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """The attributes of one request; None when Postfix closed the connection between requests."""
    attributes: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            if attributes:
                raise ValueError("connection closed inside a request")
            return None
        if len(line) > MAX_LINE or len(attributes) >= MAX_ATTRIBUTES:
            raise ValueError("request too long")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            return attributes
        name, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"not name=value: {text[:80]!r}")
        attributes[name] = value
