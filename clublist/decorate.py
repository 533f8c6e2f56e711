"""What a post looks like when it leaves: list headers, subject prefix, footer, Reply-To, From.

Runs after the rules (rules.py) accept a post and before it is queued and DKIM-signed with
the club's key (DESIGN.md, "The flow of a post").  Pure functions over EmailMessage, one
concern each; :func:`decorate` returns a new message and never changes the one it is given.

Choices, where Mailman and the RFCs leave room:

- ``Sender`` is the list's ``-owner`` address: a real address that reaches a person (the
  bounce address is only for machines, and VERP puts per-recipient bounce addresses in the
  envelope, where they belong).
- An incoming ``DKIM-Signature`` (and ``DomainKey-Signature``) is removed: the prefix, the
  footer and a rewritten From break it, a broken signature only adds spam score, and the
  club signs the decorated message with its own key.
- ``List-Post: NO`` on lists where only the owners post (RFC 2369 3.4), so mail clients
  offer no "reply to list".
- A rewritten From keeps the author in ``Reply-To`` (policy "author") and always in
  ``X-Original-From``, so people and filters can see who wrote the post even when replies
  go to the list.
- multipart/signed and multipart/encrypted (and S/MIME application/pkcs7-mime) bodies get
  no footer: any change would break the signature or the encryption.
- A post without Message-ID or Date gets one (large providers refuse mail without them);
  existing ones are never changed.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from email import errors
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from clublist.model import MailingList, Site, address_key

# Headers of the author's or of another list's that would stack with or contradict ours.
_REPLACED_HEADERS = ("Precedence", "X-Loop", "Sender", "Return-Path", "Errors-To")
_BROKEN_SIGNATURES = ("DKIM-Signature", "DomainKey-Signature")
# Bodies a footer would break (RFC 1847 security multiparts, RFC 8551 S/MIME).
_SEALED_TYPES = frozenset(
    {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
)
# Reply markers mail clients write: Re, German AW, Nordic SV, Dutch Antw, Polish Odp,
# Italian Rif; with a counter as in Re[2]: or Re(2):.
_REPLY_MARKER = re.compile(r"(?:re|aw|sv|antw|odp|rif)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)
# RFC 5322 specials: a phrase holding one must be quoted.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def needs_from_rewrite(mailing_list: MailingList, dmarc_policy: str | None, lookup_failed: bool) -> bool:
    """Whether From must become the list's address for the post to pass DMARC at receivers.

    With "dmarc", a failed lookup rewrites too: delivering unrewritten mail that a
    p=reject domain's receivers refuse costs more than an unneeded "via".
    """
    if mailing_list.from_rewrite == "always":
        return True
    if mailing_list.from_rewrite == "never":
        return False
    return lookup_failed or dmarc_policy in ("quarantine", "reject")


def decorate(
    message: EmailMessage,
    mailing_list: MailingList,
    site: Site,
    *,
    rewrite_from: bool,
    author_name: str = "",
) -> EmailMessage:
    """A copy of *message* as it goes out to the list's members (policy SMTP, CRLF)."""
    decorated = _copy(message)
    list_address = mailing_list.address(site.domain)
    _remove_foreign_headers(decorated, list_address)
    _add_list_headers(decorated, mailing_list, site)
    if mailing_list.prefix:
        _set_subject(decorated, prefixed_subject(_subject(decorated), mailing_list.prefix))
    if mailing_list.footer.strip():
        add_footer(decorated, mailing_list.footer)
    _apply_reply_to_policy(decorated, mailing_list.reply_to, list_address)
    if rewrite_from:
        _rewrite_from(decorated, mailing_list, list_address, author_name)
    _ensure_identity(decorated, site.domain)
    return decorated


def list_id(mailing_list: MailingList, domain: str) -> str:
    """The RFC 2919 list identifier, ``youth.myclub.org``; rules.py looks for it to spot loops."""
    return f"{mailing_list.name}.{domain}"


def sole_address(message: EmailMessage, header: str) -> Address | None:
    """The one address in *header*, or None when it is missing, unreadable or not alone.

    RFC 5322 allows one From; a second From header or a list of authors is a classic way
    to make a filter and a reader see different senders.  The email package can raise on
    hostile header text, and a header that cannot be read cannot be trusted either.
    """
    try:
        values = message.get_all(header, [])
        addresses = values[0].addresses if len(values) == 1 else ()
    except (errors.HeaderParseError, IndexError, ValueError):
        return None
    return addresses[0] if len(addresses) == 1 else None


# --- copy and headers --------------------------------------------------------


def _copy(message: EmailMessage) -> EmailMessage:
    """A deep copy whose parts all use the SMTP policy (CRLF line ends, 78-column folding)."""
    copied = copy.deepcopy(message)
    for part in copied.walk():
        part.policy = SMTP
    return copied


def _remove_foreign_headers(message: EmailMessage, list_address: str) -> None:
    """Drop headers that another list, a previous hop or the author wrote for our own."""
    for name in {name for name in message if name.lower().startswith("list-")}:
        del message[name]
    for name in (*_REPLACED_HEADERS, *_BROKEN_SIGNATURES):
        del message[name]
    if not _sent_as_list(message, list_address):
        # Ours only when From is the list's address (decorated before); otherwise a forgery.
        del message["X-Original-From"]


def _add_list_headers(message: EmailMessage, mailing_list: MailingList, site: Site) -> None:
    """RFC 2919 List-Id and the RFC 2369 List-* headers; they also keep vacation responders quiet."""
    domain = site.domain
    name = mailing_list.name  # list names are [a-z0-9._-]: safe in a mailto URL as they are
    owner = f"{name}-owner@{domain}"
    list_address = mailing_list.address(domain)
    message["List-Id"] = _list_id_header(mailing_list.display_name, list_id(mailing_list, domain))
    message["List-Post"] = "NO" if mailing_list.posting == "owners" else f"<mailto:{list_address}>"
    message["List-Help"] = f"<mailto:{site.bot_address}?subject=help>"
    message["List-Subscribe"] = f"<mailto:{site.bot_address}?subject=subscribe%20{name}>"
    message["List-Unsubscribe"] = f"<mailto:{site.bot_address}?subject=unsubscribe%20{name}>"
    message["List-Owner"] = f"<mailto:{owner}>"
    if mailing_list.archive_url:
        message["List-Archive"] = f"<{mailing_list.archive_url}>"
    message["Precedence"] = "list"
    message["X-Loop"] = list_address
    message["Sender"] = owner


def _list_id_header(display_name: str, identifier: str) -> str:
    """``Youth <youth.myclub.org>``: the title as an RFC 5322 phrase.

    An ASCII title with specials is quoted; a non-ASCII one becomes encoded words on output,
    which may not stand inside quotes (RFC 2047 5), so its specials are dropped instead.
    """
    if display_name.isascii():
        return formataddr((display_name, identifier))
    phrase = " ".join(_SPECIALS.sub(" ", display_name).split())
    return f"{phrase} <{identifier}>" if phrase else f"<{identifier}>"


def _ensure_identity(message: EmailMessage, domain: str) -> None:
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=domain)  # domain given: no DNS look-up
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))


# --- subject -----------------------------------------------------------------


def prefixed_subject(subject: str, prefix: str) -> str:
    """*subject* with *prefix* exactly once, after a single "Re: " if it is a reply.

    Idempotent: "Re: [Youth] Re: [Youth] x" and "AW: [Youth] x" become "Re: [Youth] x",
    "[Youth] x" stays.  The prefix is removed wherever it stands (as Mailman does), so a
    forwarded list post reads "[Youth] Fwd: x".  Work on the decoded text: the email
    package decodes encoded words on reading and encodes again on output.
    """
    rest = " ".join(re.sub(re.escape(prefix), " ", subject, flags=re.IGNORECASE).split())
    is_reply = False
    while match := _REPLY_MARKER.match(rest):
        is_reply = True
        rest = rest[match.end() :]
    return f"{'Re: ' if is_reply else ''}{prefix} {rest or '(no subject)'}"


def _subject(message: EmailMessage) -> str:
    value = message.get("Subject")
    return "" if value is None else str(value)


def _set_subject(message: EmailMessage, subject: str) -> None:
    """Replace Subject where it stands; several Subject headers collapse into one."""
    if len(message.get_all("Subject", [])) == 1:
        message.replace_header("Subject", subject)
    else:
        del message["Subject"]
        message["Subject"] = subject


# --- footer ------------------------------------------------------------------


def add_footer(message: EmailMessage, footer: str) -> None:
    """Add *footer* to *message* in place, never touching the bytes of an existing part.

    A plain-text body gets it appended after a signature separator ("-- "); a
    multipart/mixed gets one more text/plain part; anything else (alternative, related,
    HTML, an attachment) is wrapped into a multipart/mixed with the footer part after it.
    Sealed bodies (signed, encrypted) get nothing.
    """
    if message.get_content_type() in _SEALED_TYPES:
        return
    # A line ending in a space would join the next one in a format=flowed body (RFC 3676).
    footer = "\n".join(line.rstrip() for line in footer.strip("\n").splitlines())
    if _is_inline_text(message) and _append_text(message, footer):
        return
    if message.get_content_type() != "multipart/mixed":
        _wrap_in_mixed(message)
    message.attach(_footer_part(footer))


def _is_inline_text(message: EmailMessage) -> bool:
    return message.get_content_type() == "text/plain" and not message.is_attachment()


def _append_text(message: EmailMessage, footer: str) -> bool:
    """Append the footer to a text/plain body in its own charset (UTF-8 if it cannot hold it).

    Returns False, changing nothing, when the body cannot be decoded exactly (unknown
    charset, bytes invalid in it): re-encoding it would corrupt what the author wrote.
    """
    charset = message.get_content_charset("us-ascii")
    try:
        body = message.get_payload(decode=True).decode(charset)
    except (LookupError, UnicodeDecodeError):
        return False
    if body and not body.endswith("\n"):
        body += "\n"
    text = f"{body}\n-- \n{footer}\n"
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    _set_text(message, text, charset)
    return True


def _set_text(message: EmailMessage, text: str, charset: str) -> None:
    """Replace the text of a text/plain part, keeping its parameters and other Content-* headers.

    ``set_content`` clears every Content-* header, so format=flowed, Content-Language or
    Content-Disposition would be lost without putting them back.
    """
    content_type = message["Content-Type"]
    params = {k: v for k, v in content_type.params.items() if k != "charset"} if content_type else {}
    kept = [
        (name, value)
        for name, value in message.items()
        if name.lower().startswith("content-")
        and name.lower() not in ("content-type", "content-transfer-encoding")
    ]
    original_cte = message.get("Content-Transfer-Encoding", "").strip().lower()
    message.set_content(
        text, charset=charset, cte=_transfer_encoding(text, original_cte), params=params or None
    )
    for name, value in kept:
        message[name] = value


def _transfer_encoding(text: str, original: str) -> str | None:
    """Keep the sender's quoted-printable or base64; otherwise 7bit-safe, so a DKIM signature
    survives relays without 8BITMIME (RFC 6376 5.3).  None lets the email package choose."""
    if original in ("quoted-printable", "base64"):
        return original
    return None if text.isascii() else "quoted-printable"


def _wrap_in_mixed(message: EmailMessage) -> None:
    """Turn *message* into multipart/mixed whose first part is its current content, unchanged."""
    if "Content-Type" not in message:
        # make_mixed moves Content-* headers and the payload together; without any, it would drop the body.
        message["Content-Type"] = message.get_content_type()
    message.make_mixed()
    if "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"


def _footer_part(footer: str) -> MIMEPart:
    part = MIMEPart(policy=SMTP)
    text = footer + "\n"
    part.set_content(text, charset="utf-8", cte=_transfer_encoding(text, ""), disposition="inline")
    return part


# --- Reply-To and From -------------------------------------------------------


def _apply_reply_to_policy(message: EmailMessage, reply_to: str, list_address: str) -> None:
    """ "list" or an address replaces the author's Reply-To; "author" leaves it alone."""
    if reply_to == "author":
        return
    del message["Reply-To"]
    message["Reply-To"] = list_address if reply_to == "list" else reply_to


def _rewrite_from(
    message: EmailMessage, mailing_list: MailingList, list_address: str, author_name: str
) -> None:
    """From: "Anna via Youth" <youth@myclub.org>, so the list's domain is the one DMARC checks."""
    if _sent_as_list(message, list_address):
        return  # decorated before: rewriting again would read "Anna via Youth via Youth"
    author = _readable(sole_address(message, "From"))
    if author is not None:
        message["X-Original-From"] = str(author)
        if mailing_list.reply_to == "author" and "Reply-To" not in message:
            message["Reply-To"] = author
    name = author_name or (author.display_name or author.username if author else "")
    shown = f"{name} via {mailing_list.display_name}" if name else mailing_list.display_name
    del message["From"]
    message["From"] = Address(display_name=shown, addr_spec=list_address)


def _readable(author: Address | None) -> Address | None:
    """*author* with a display name sent as raw 8-bit read as UTF-8 (RFC 6532), as mail clients do.

    The email package keeps such bytes as surrogates, which would go out as "unknown-8bit".
    """
    if author is None:
        return None
    name = author.display_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return Address(display_name=name, username=author.username, domain=author.domain)


def _sent_as_list(message: EmailMessage, list_address: str) -> bool:
    author = sole_address(message, "From")
    return author is not None and address_key(author.addr_spec) == address_key(list_address)
