"""Which recent delivery a bounce to the plain address is about, so that a forged one counts for nobody.

Without VERP a bounce could be written by anyone.  It counts only when it names an address
clublist delivered to within the bounce window (``bounces.stale_after_days``) and carries that
message's Message-ID (in the returned headers, which every common MTA quotes and ``RET=HDRS``
asks for) or its queue id as the envelope id (``ENVID``, sent wherever the next hop offers DSN).
A forger must know both the address and the exact message.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from clublist.club.model import address_key

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
_ENVELOPE_ID = re.compile(r"^Original-Envelope-Id:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SentCopy:
    """A message clublist delivered to an address: its queue id, list and Message-ID."""

    queue_id: str
    list_name: str | None
    message_id: str


def sent_copies(conn: sqlite3.Connection, address: str, since: float) -> list[SentCopy]:
    """The messages delivered to *address* since *since*, newest first."""
    rows = conn.execute(
        "SELECT m.queue_id, m.list_name, substr(m.content, 1, 65536) FROM deliveries d"
        " JOIN messages m ON m.id = d.message_id"
        " WHERE lower(trim(d.recipient)) = ? AND d.status = 'sent' AND d.updated >= ?"
        " ORDER BY d.updated DESC",
        (address_key(address), since),
    ).fetchall()
    copies = []
    for queue_id, list_name, content in rows:
        head = re.split(rb"\r?\n\r?\n", bytes(content), maxsplit=1)[0]
        found = _MESSAGE_ID.search(head)
        copies.append(SentCopy(queue_id, list_name, found[1].decode("ascii", "replace") if found else ""))
    return copies


def matching_copy(conn: sqlite3.Connection, address: str, raw: bytes, since: float) -> SentCopy | None:
    """The delivery to *address* that the bounce *raw* returns, or None when it names none."""
    text = raw.decode("latin-1")
    envelope_ids = {found.upper() for found in _ENVELOPE_ID.findall(text)}
    lowered = text.lower()
    for copy in sent_copies(conn, address, since):
        if copy.queue_id.upper() in envelope_ids:
            return copy
        if copy.message_id and copy.message_id.lower() in lowered:
            return copy
    return None
