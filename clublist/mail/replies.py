"""Every SMTP reply clublist gives, as a named constant.

The SMTP handler answers with these lines and the posting rules (rules.py) put one into each
verdict.  Each is a whole reply line "CODE X.Y.Z text" (RFC 5321 codes, RFC 3463 enhanced
status codes); fields in braces are filled in with :func:`render`.
"""

from __future__ import annotations

import re
from typing import Final

# --- 2xx: accepted -----------------------------------------------------------
SENDER_OK: Final[str] = "250 2.1.0 Sender OK"
RECIPIENT_OK: Final[str] = "250 2.1.5 Recipient OK"
OK_QUEUED: Final[str] = "250 2.0.0 Message accepted for delivery, queued as {queue_id}"
# A held post is safely stored: 250, or the sender would retry and be held again.
HELD: Final[str] = "250 2.0.0 Message held for approval by the list's owners, queued as {queue_id}"
# A discard answers 250 too, so loops and auto-replies end here instead of being retried;
# the reason goes to the log, not to the machine that sent it.
DISCARDED: Final[str] = "250 2.0.0 Message accepted but not distributed to the list"

# --- 4xx: try again later ----------------------------------------------------
SHUTTING_DOWN: Final[str] = "421 4.3.2 Service shutting down, please try again later"
TOO_MANY_CONNECTIONS: Final[str] = "421 4.7.0 Too many connections, please try again later"
TOO_MANY_CONNECTIONS_FROM_CLIENT: Final[str] = (
    "421 4.7.0 Too many connections from {address}, please try again later"
)
IDLE_TIMEOUT: Final[str] = "421 4.4.2 Idle too long before MAIL FROM, closing the connection"
XFORWARD_OK: Final[str] = "250 2.0.0 Ok"
DAILY_LIMIT_TEMPORARY: Final[str] = (
    "450 4.7.1 {sender} has reached the limit of {limit} posts a day; please try again tomorrow"
)
HOURLY_LIMIT_TEMPORARY: Final[str] = (
    "450 4.7.1 {sender} has reached the limit of {limit} posts an hour; please try again later"
)
TEMPORARY_FAILURE: Final[str] = "451 4.3.0 Temporary failure inside clublist, please try again later"
# DNS trouble while checking SPF, DKIM or DMARC: never a refusal, never a silent accept.
AUTHENTICATION_TEMPORARY: Final[str] = (
    "451 4.7.26 Could not check who sent this message ({reason}); please try again later"
)
TOO_MANY_RECIPIENTS: Final[str] = "452 4.5.3 Too many recipients"

# --- 5xx: refused ------------------------------------------------------------
XFORWARD_SYNTAX: Final[str] = "501 5.5.4 Syntax: XFORWARD attribute=value ..."
XFORWARD_BAD_ATTRIBUTE: Final[str] = "501 5.5.4 Bad XFORWARD attribute name: {attribute}"
AUTH_NOT_OFFERED: Final[str] = (
    "502 5.5.1 AUTH is not offered here: this server takes mail from mail servers, not from mail programs"
)
XFORWARD_IN_TRANSACTION: Final[str] = "503 5.5.1 XFORWARD is not allowed within a mail transaction"
XFORWARD_REFUSED: Final[str] = "550 5.7.0 XFORWARD is accepted only from listen.trusted_proxies"
TLS_REQUIRED: Final[str] = "530 5.7.0 Must issue a STARTTLS command first"
UNKNOWN_RECIPIENT: Final[str] = "550 5.1.1 {address}: no such list or address here"
RELAY_DENIED: Final[str] = "550 5.7.1 Relaying denied: {address} is not a local address"
NOT_A_MEMBER: Final[str] = "550 5.7.1 {sender} is not a member of {list}; only members may post"
# {reason} comes from rules.may_post, which says who may post instead (owners, list members).
NOT_ALLOWED_TO_POST: Final[str] = "550 5.7.1 {reason}"
DAILY_LIMIT_PERMANENT: Final[str] = (
    "550 5.7.1 {sender} has reached the limit of {limit} posts a day; the message was not posted"
)
HOURLY_LIMIT_PERMANENT: Final[str] = (
    "550 5.7.1 {sender} has reached the limit of {limit} posts an hour; the message was not posted"
)
NULL_SENDER_NOT_ALLOWED: Final[str] = (
    "550 5.7.1 Mail from the null sender <> is not posted; bounces are accepted only at the bounce address"
)
# {reason} comes from rules.check_authentication: which member, and what SPF/DKIM/DMARC said.
SENDER_AUTH_FAILED: Final[str] = "550 5.7.1 Sender authentication failed: {reason}"
DMARC_FAIL: Final[str] = (
    "550 5.7.26 {domain} publishes the DMARC policy p={policy} and this message was neither sent nor "
    "signed by {domain}'s own mail servers; it was not posted"
)
TOO_LARGE: Final[str] = "552 5.3.4 Message too big (limit {limit} bytes)"
TOO_LARGE_DECORATED: Final[str] = (
    "552 5.3.4 Message too big once the list's headers and footer are added (limit {limit} bytes)"
)
BAD_RECIPIENT_SYNTAX: Final[str] = "553 5.1.3 {address} is not a valid recipient address"
BAD_SENDER_SYNTAX: Final[str] = "553 5.1.7 {sender} is not a valid sender address"
NO_VALID_RECIPIENTS: Final[str] = "554 5.5.1 No valid recipients"
TOO_MANY_HOPS: Final[str] = "554 5.4.6 Too many Received headers: the message is looping"
# RFC 5322 2.3 forbids NUL anywhere in a message; stripping it would change signed content.
NUL_IN_MESSAGE: Final[str] = "554 5.6.0 The message contains NUL bytes, which mail may not carry"
TOO_DEEPLY_NESTED: Final[str] = "554 5.6.0 The message's MIME structure is nested too deeply"

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including its CRLF.
_MAX_REPLY = 510
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_CODE = re.compile(r"([2-5][0-9][0-9])(?: |$)")


def render(template: str, **fields: object) -> str:
    """Fill in a reply's fields, safe to send whatever the fields hold.

    Fields often carry what a stranger typed (addresses, header text): control characters
    would break the SMTP dialogue and non-ASCII is not allowed without SMTPUTF8, so both
    become "?", and the line is cut to the length RFC 5321 allows.
    """
    safe = {name: _UNPRINTABLE.sub("?", str(value)) for name, value in fields.items()}
    reply = template.format(**safe)
    return reply if len(reply) <= _MAX_REPLY else reply[: _MAX_REPLY - 3] + "..."


def reply_code(reply: str) -> int:
    """The three-digit code a reply line starts with (250 for "250 2.0.0 ...")."""
    match = _CODE.match(reply)
    if match is None:
        raise ValueError(f"not an SMTP reply line: {reply!r}")
    return int(match[1])
