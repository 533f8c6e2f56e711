"""RFC 8058 one-click unsubscribe: each member's copy of a post carries its own link.

The link is ``unsubscribe.url/TOKEN``; TOKEN is ``LIST.MAC``, MAC an HMAC of (list, member)
under the site secret (the one VERP uses, kept in var/, in its own domain of use here), so it
names exactly one member on one list, cannot be guessed or moved to another list or member,
and reveals no address.  The HTTP side that honours it is :mod:`clublist.oneclick`.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from clublist.club.model import address_key

ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
_TOKEN_LENGTH = 32  # hex digits: 128 bits
_UNSUBSCRIBE_FIELDS = re.compile(
    rb"^List-Unsubscribe(?:-Post)?[ \t]*:.*\r?\n(?:[ \t].*\r?\n)*", re.IGNORECASE | re.MULTILINE
)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def token(secret: bytes, list_name: str, address: str) -> str:
    """The token of *address* on *list_name*: the list's name and a MAC nobody can make without the secret."""
    message = f"one-click\0{list_name}\0{address_key(address)}".encode()
    return f"{list_name}.{hmac.new(secret, message, hashlib.sha256).hexdigest()[:_TOKEN_LENGTH]}"


def personal_copy(content: bytes, url: str, token_: str) -> bytes:
    """*content* with List-Unsubscribe naming this member's link first (the mailto kept after it)
    and List-Unsubscribe-Post, where the list's List-Unsubscribe stood."""
    end = _HEADER_END.search(content)
    split = end.start() + (2 if content.startswith(b"\r\n", end.start()) else 1) if end else len(content)
    head, rest = content[:split], content[split:]
    found = list(_UNSUBSCRIBE_FIELDS.finditer(head))
    mailto = b""
    for match in found:
        name, _, value = match.group(0).partition(b":")
        if name.strip().lower() == b"list-unsubscribe":
            mailto = b", " + b" ".join(value.split())
    fields = b"List-Unsubscribe: <" + f"{url.rstrip('/')}/{token_}".encode() + b">" + mailto + b"\r\n"
    at = found[0].start() if found else len(head)
    kept = _UNSUBSCRIBE_FIELDS.sub(b"", head[at:])
    return head[:at] + fields + ONE_CLICK + kept + rest
