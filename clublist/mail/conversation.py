"""What a message replies to and what it adds: the facts the auto-responder rule reads.

A reply names the posts it answers in In-Reply-To and References; its new text is
the body without the quoted lines, the attribution line above them and the signature.
An auto-responder's reply to a list post names that post and adds either nothing or
the same canned text every time, which :func:`text_digest` lets the handler compare.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import EmailMessage, Message

from clublist.mail.decorate import header_text

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# "On Mon, 1 Dec 2026, Anna wrote:", "Am 01.12.2026 schrieb Anna:", "Le ... a écrit :"
_ATTRIBUTION = re.compile(r"(wrote|schrieb|a écrit|escribió|scrisse|schreef)\s*:\s*$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
MAX_REFERENCES = 20  # the newest ones: a long thread's References holds them all


def referenced_ids(message: Message) -> list[str]:
    """The Message-IDs of In-Reply-To and the newest References, as ``<id@host>``."""
    found: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in message.get_all(name, []):
            found.extend(_MESSAGE_ID.findall(header_text(value)))
    return list(dict.fromkeys(found[-MAX_REFERENCES:] + found[:1]))


def new_text(raw: bytes) -> str:
    """The words the sender wrote: the first text part without quotes and signature, on one line.

    An HTML-only message counts as all new text (its quotes are not told apart); a
    message that cannot be read as text counts as "" only when it has no text part at all.
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = str(part.get_content())
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        text = payload.decode("latin-1") if isinstance(payload, bytes) else ""
    if part.get_content_subtype() == "html":
        return " ".join(_TAG.sub(" ", text).split())
    kept: list[str] = []
    for line in text.splitlines():
        if line.rstrip() == "--":
            break  # the signature separator ("-- ")
        if not line.lstrip().startswith(">") and not _ATTRIBUTION.search(line):
            kept.append(line)
    return " ".join(" ".join(kept).split())


def text_digest(text: str) -> str:
    """A short fingerprint of *text*, case and spacing ignored; "" for no text."""
    if not text:
        return ""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]
