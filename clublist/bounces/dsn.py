"""Read a message sent to the bounce address: which recipients failed, and was it the address?

The bounce processor scores members from this evidence. A refused *message* (spam, blocklist,
DMARC policy) must never count against an address, and flufl.bounce reports addresses only, so
RFC 3464 reports are read field by field here and other formats get their status from the text
near each address. Pure functions over parsed messages (EmailMessage or compat32 Message), so
every MTA's format is tested from a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr
from typing import Literal

from clublist.outbound import refusals

Kind = Literal["hard", "soft", "content"]

DIAGNOSTIC_MAX = 500

# RFC 3463 enhanced status codes; the lookarounds keep IP addresses and version numbers out.
_ENHANCED = re.compile(r"(?<![\w.])[245]\.[0-7]\.\d{1,3}(?!\.?\d)")
# Basic SMTP failure replies, for MTAs that give no enhanced code ("554: delivery error").
_REPLY = re.compile(r"(?<![\w.#-])(?:4(?:2[01]|5[0-5])|5(?:0[0-4]|5[0-5]))(?![\w.])")
_CONTENT_WORDS = re.compile(
    r"spam|unsolicited|block ?list|black ?list|deny ?list|blocked using|dnsbl|\brbl\b"
    r"|dmarc|\bspf\b|\bdkim\b|\bpolicy\b|reputation|virus|malware|phish",
    re.IGNORECASE,
)
_ADDRESS_GONE = re.compile(
    r"user unknown|unknown (?:user|recipient)|no such (?:user|mailbox|recipient)|no mailbox"
    r"|recipient ?not ?found|(?:user|recipient|mailbox|account)\b[^.;]{0,40}"
    r"\b(?:unknown|not found|does not exist|doesn't exist)",
    re.IGNORECASE,
)
_DELIVERY_REPORT = re.compile(r"report-type\s*=\s*\"?(?:global-)?delivery-status", re.IGNORECASE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (?:the )?office|\bauto(?:matic)?[ -]?(?:reply|response)|abwesenheit"
    r"|automatische antwort|réponse automatique|respuesta automática|risposta automatica"
    r"|automatisch antwoord|away from (?:my|the) (?:mail|office)",
    re.IGNORECASE,
)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# The line that starts the copy of the returned message in free-text bounces.
_SEPARATOR = re.compile(r"\s*[-=_]{3}")
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_DAEMONS = ("mailer-daemon", "postmaster")
# How far past the paragraph naming an address its explanation may run (old Gmail text needs two).
_NEARBY_PARAGRAPHS = 3


@dataclass(frozen=True)
class BounceEvidence:
    """One failed recipient, as a bounce reports it."""

    address: str  # the failed recipient; the domain lower-cased
    kind: Kind
    status: str  # enhanced status such as "5.1.1", or "" when none was given
    diagnostic: str  # Diagnostic-Code or the bounce's own words, one line, at most 500 chars


def is_auto_reply(msg: Message) -> bool:
    """Whether a message is a vacation notice or other automatic reply rather than a bounce.

    Bounces carry Auto-Submitted: auto-replied too (Postfix, Exim, Gmail), so anything that looks
    like a delivery report is ruled out first. Any Auto-Submitted other than "no" counts: an
    auto-generated notice is no more a bounce, nor something to answer, than a vacation reply.
    """
    if _looks_like_delivery_report(msg):
        return False
    auto_submitted = _header(msg, "auto-submitted").lower()
    return bool(
        (auto_submitted and not auto_submitted.startswith("no"))
        or _header(msg, "x-autoreply")
        or _header(msg, "x-autorespond")
        or _header(msg, "precedence").lower() == "auto_reply"
        or _AUTO_REPLY_SUBJECT.search(_header(msg, "subject"))
    )


def classify_status(status: str, diagnostic: str = "") -> Kind:
    """Whether a failure is about the address (hard, soft) or about the message (content).

    Called for failures only, so a failure with no code at all is hard. Content: 5.7.x (security
    and policy), Gmail's 4.7.23-4.7.32, message too big (x.2.3, x.3.4), media (x.6.x), and words
    like spam, blocklist or DMARC in the diagnostic -- except under an x.1.x status, which is the
    receiver's statement about the address itself. 5.7.1 is also what some servers answer for an
    unknown user; it counts as hard only when the text plainly says so, and "Relay access denied"
    stays content, because a misconfigured smarthost says it for every member at once.
    """
    code = _best_status(status, diagnostic)
    klass, subject, detail = code.split(".") if code else ("", "", "")
    if authentication_fix(code, diagnostic):
        return "content"
    if klass == "5" and subject == "7":
        gone = detail == "1" and _ADDRESS_GONE.search(diagnostic)
        if not gone or _CONTENT_WORDS.search(diagnostic):
            return "content"
    if klass == "4" and subject == "7" and 23 <= int(detail) <= 32:
        return "content"
    if subject == "6" or f"{subject}.{detail}" in ("2.3", "3.4"):
        return "content"
    if subject != "1" and _CONTENT_WORDS.search(diagnostic):
        return "content"
    if not klass:
        reply = _REPLY.search(diagnostic)
        klass = reply.group(0)[0] if reply else "5"
    return "soft" if klass == "4" else "hard"


def authentication_fix(status: str, diagnostic: str = "") -> str:
    """Which of the club's DNS records a refusal asks to fix, or "" when it names no authentication."""
    return refusals.authentication_fix(_best_status(status, diagnostic), diagnostic)


def parse_bounce(msg: Message) -> list[BounceEvidence]:
    """Every failed recipient a bounce reports, in order, or [] when it reports none.

    An RFC 3464 report is trusted on its own: when it lists recipients, those blocks are the whole
    answer (delivered and relayed ones are not failures), and flufl.bounce's heuristics are not
    asked. Never raises: a bounce address receives every kind of broken mail.
    """
    if is_auto_reply(msg):
        return []
    parts = list(_report_parts(msg))
    blocks = [b for part in parts if _content_type(part) in _DSN_TYPES for b in _recipient_blocks(part)]
    if blocks:
        evidence: Iterable[BounceEvidence | None] = map(_dsn_evidence, blocks)
    else:
        evidence = _free_text_evidence(msg, parts)
    return list(dict.fromkeys(e for e in evidence if e is not None))


def _looks_like_delivery_report(msg: Message) -> bool:
    """A DSN by its Content-Type, or a non-standard bounce by Exim's header or a daemon sender."""
    sender = parseaddr(_header(msg, "from"))[1].lower()
    return bool(
        _DELIVERY_REPORT.search(_header(msg, "content-type"))
        or _header(msg, "x-failed-recipients")
        or sender.partition("@")[0] in _DAEMONS
    )


def _best_status(status: str, diagnostic: str) -> str:
    """The Status field's code, or the diagnostic's when the field is missing or only X.0.0.

    Sendmail and others put a generic Status beside the specific code in the SMTP reply.
    """
    field = _ENHANCED.search(status)
    said = _ENHANCED.search(diagnostic)
    if field and not (said and field.group(0).endswith(".0.0")):
        return field.group(0)
    return said.group(0) if said else ""


def _report_parts(msg: Message) -> Iterator[Message]:
    """The leaf parts of the report, never descending into the returned message.

    The returned copy's headers and text belong to the original post and must not be read as
    the report's own (a list post may even quote an earlier bounce).
    """
    if msg.is_multipart() and _content_type(msg).startswith("multipart/"):
        for part in msg.get_payload():
            yield from _report_parts(part)  # type: ignore[arg-type]  # a multipart's payload is its parts
    else:
        yield msg


def _recipient_blocks(part: Message) -> list[Message]:
    """The per-recipient field blocks of a delivery-status part.

    The email package splits message/delivery-status into one header block each, but reads
    RFC 6533's message/global-delivery-status as one message whose body holds the recipients.
    """
    blocks: list[Message] = part.get_payload() if part.is_multipart() else []  # type: ignore[assignment]
    if _content_type(part) == "message/global-delivery-status" and blocks:
        body = _decoded_text(blocks[0])
        blocks = [HeaderParser().parsestr(chunk) for chunk in _PARAGRAPH_BREAK.split(body)]
    return [b for b in blocks if _header(b, "final-recipient") or _header(b, "original-recipient")]


def _dsn_evidence(block: Message) -> BounceEvidence | None:
    """Evidence from one recipient block, or None when it reports no failure.

    Original-Recipient comes first: it is the address clublist sent to, before any forwarding.
    "error" is OpenSMTPD's non-standard word for failed. A delay is never hard: the sender is
    still trying.
    """
    action = _header(block, "action").lower()
    if not action.startswith(("failed", "delayed", "error")):
        return None
    address = _recipient(_header(block, "original-recipient")) or _recipient(
        _header(block, "final-recipient")
    )
    if not address:
        return None
    diagnostic = re.sub(r"^[\w-]+\s*;\s*", "", _header(block, "diagnostic-code"))
    diagnostic = _one_line(_joined_reply(diagnostic))
    status = _best_status(_header(block, "status"), diagnostic)
    kind = classify_status(status, diagnostic)
    if action.startswith("delayed") and kind == "hard":
        kind = "soft"
    return BounceEvidence(address, kind, status, diagnostic)


def _joined_reply(reply: str) -> str:
    """A multi-line SMTP reply without the code repeated on every line ("550-5.1.1 ...").

    Gmail's replies run to five lines, and the repeats would crowd the admin's table.
    """
    first = re.match(r"\s*(\d{3})-([245]\.\d{1,3}\.\d{1,3})", reply)
    if not first:
        return reply
    repeated = rf"\s+{first.group(1)}[ -]{re.escape(first.group(2))}(?!\S)"
    return reply[: first.end()] + re.sub(repeated, "", reply[first.end() :])


def _recipient(field: str) -> str:
    """The address in a "rfc822; user@host" recipient field, "" for other address types."""
    address_type, semicolon, address = field.partition(";")
    if not semicolon:  # some MTAs omit the type: "<user@host>"
        address = address_type
    elif address_type.strip().lower() not in ("rfc822", "utf-8"):
        return ""
    return _normalise(parseaddr(address)[1] or address.strip(" <>"))


def _normalise(address: str) -> str:
    """user@host with the host lower-cased (local parts may be case-sensitive), "" if no address."""
    local, at, domain = address.strip().rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address.strip()):
        return ""
    return f"{local}@{domain.lower()}"


def _free_text_evidence(msg: Message, parts: list[Message]) -> list[BounceEvidence]:
    """Evidence from a non-standard bounce: flufl.bounce finds the addresses, the text the rest."""
    from flufl.bounce import all_failures  # here, not at the top: the CLI's start-up time matters

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # flufl.bounce re-raises whatever a heuristic detector trips over
        return []
    failed = {_normalise(_text(a)): False for a in temporary}
    failed |= {_normalise(_text(a)): True for a in permanent}
    failed.pop("", None)
    paragraphs = [
        p
        for part in parts
        if _content_type(part).startswith(("text/plain", "multipart/"))
        for p in _PARAGRAPH_BREAK.split(_decoded_text(part).replace("\r\n", "\n"))
    ]
    evidence = []
    for address in sorted(failed):
        status, diagnostic = _status_near(address, paragraphs, set(failed) - {address})
        kind = classify_status(status, diagnostic)
        if not failed[address] and kind == "hard":
            kind = "soft"
        evidence.append(BounceEvidence(address, kind, status, diagnostic))
    return evidence


def _status_near(address: str, paragraphs: list[str], others: set[str]) -> tuple[str, str]:
    """The enhanced status and diagnostic written near a failed address in a free-text bounce.

    Looks in the first paragraph naming the address and the few that follow, stopping at the
    next failed address or the returned message, so one recipient's code never leaks to another.
    An enhanced code wins over a basic reply code; with neither, the address's own paragraph is
    the diagnostic.
    """
    start = next((i for i, p in enumerate(paragraphs) if _names(p, address)), None)
    if start is None:
        return "", ""
    window = [paragraphs[start]]
    for paragraph in paragraphs[start + 1 : start + 1 + _NEARBY_PARAGRAPHS]:
        if _SEPARATOR.match(paragraph) or any(_names(paragraph, o) for o in others):
            break
        window.append(paragraph)
    for pattern in (_ENHANCED, _REPLY):
        for paragraph in window:
            if found := pattern.search(paragraph):
                status = found.group(0) if pattern is _ENHANCED else ""
                return status, _one_line(paragraph)
    return "", _one_line(window[0])


def _names(text: str, address: str) -> bool:
    """Whether text mentions the address itself, not a longer one containing it."""
    pattern = rf"(?<![\w.+=-]){re.escape(address)}(?!\.?[\w-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _content_type(part: Message) -> str:
    """The part's content type; "" if the email package cannot read the header."""
    try:
        return part.get_content_type()
    except Exception:  # the lazy header parser has raised on hostile Content-Type values
        return ""


def _header(msg: Message, name: str) -> str:
    """A header's decoded value on one line; "" when absent or unreadable.

    The email package parses headers lazily and has raised IndexError, ValueError and others on
    hostile values; a bounce address receives plenty, and an unreadable header is treated as
    absent.
    """
    try:
        value = msg.get(name)
        if value is None:
            return ""
        return " ".join(str(make_header(decode_header(str(value)))).split())
    except Exception:
        return ""


def _decoded_text(part: Message) -> str:
    """A leaf part's body as text, whatever its transfer encoding or (possibly bogus) charset."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # broken encodings a parser merely noted as defects
        return ""
    if not isinstance(payload, bytes):
        return ""
    try:
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, UnicodeError):  # unknown charset, or a codec that refuses "replace"
        return payload.decode("utf-8", "replace")


def _text(address: bytes | str) -> str:
    """flufl.bounce gives addresses as bytes (ASCII by its own filtering); callers want str."""
    return address.decode("ascii", "replace") if isinstance(address, bytes) else address


def _one_line(text: str) -> str:
    """Whitespace collapsed and cut to DIAGNOSTIC_MAX, for logs, tables and the database."""
    return " ".join(text.split())[:DIAGNOSTIC_MAX]
