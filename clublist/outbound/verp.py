"""VERP bounce addresses: ``bounces+MAC=LIST=LOCAL=DOMAIN@site`` names the list and member.

With VERP each recipient gets its own envelope sender, so a bounce names the
failed member even when its body is unreadable.  The MAC (an HMAC-SHA256 of
list and address with a secret kept beside the state database, cut to 40
bits) stops anyone from forging bounces that disable a member.  Everything
is lower case, because some MTAs lower-case the local part they bounce to.
The fields are split on ``=``: list names and domains never contain one,
so the local part in between may.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from clublist.club.model import address_key

_MAC_LENGTH = 10


def load_secret(state_path: Path) -> bytes:
    """The site secret, created (readable by its owner only) on first use."""
    path = state_path.with_name("verp.secret")
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        return load_secret(state_path)


def _mac(secret: bytes, list_name: str, address: str) -> str:
    digest = hmac.new(secret, f"{list_name}\0{address_key(address)}".encode(), hashlib.sha256)
    return digest.hexdigest()[:_MAC_LENGTH]


def bounce_address(secret: bytes, bounce_local_part: str, domain: str, list_name: str, recipient: str) -> str:
    """The envelope sender for one recipient of one list."""
    local, _, recipient_domain = address_key(recipient).rpartition("@")
    mac = _mac(secret, list_name, recipient)
    return f"{bounce_local_part}+{mac}={list_name}={local}={recipient_domain}@{domain}"


@dataclass(frozen=True)
class VerpToken:
    list_name: str
    recipient: str


def decode(secret: bytes, local_part: str, bounce_local_part: str) -> VerpToken | None:
    """The list and recipient a VERP local part names, or None if it is not one of ours (or forged)."""
    prefix = f"{bounce_local_part}+".lower()
    local_part = local_part.lower()
    if not local_part.startswith(prefix):
        return None
    fields = local_part[len(prefix) :].split("=")
    if len(fields) < 4:
        return None
    mac, list_name, domain = fields[0], fields[1], fields[-1]
    recipient = f"{'='.join(fields[2:-1])}@{domain}"
    if not hmac.compare_digest(mac, _mac(secret, list_name, recipient)):
        return None
    return VerpToken(list_name, recipient)
