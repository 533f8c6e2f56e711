"""What a post looks like when it leaves: list headers, subject prefix, footer, Reply-To, From.

Runs after the rules (rules.py) accept a post and before it is queued (DESIGN.md, "The flow
of a post").  :func:`decorate` turns a post as received into the bytes that go on the wire; it
never changes the message it is given.

It runs on the SMTP listener's event loop for every post, so the common path keeps clear of
the email package's header registry (``policy.default`` parses a header into an object on
every read and re-folds it on every write, about 1 ms a post): :func:`parse` reads the header
section once with compat32, whose values are the text as received; headers are dropped,
replaced and added as text; the body is passed on as received, and a footer is added to it
as text (appended to plain text, or as one more MIME part).  The email package still does
what it does well: address lists (``getaddresses``), RFC 2047 words (``email.header``,
``formataddr``), parameters, and the bodies the text path cannot read (the EmailMessage code
at the end of this module).  The per-list headers and the footer part are encoded once.

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
- Header text is read as people read it: RFC 2047 words decoded, raw 8-bit bytes as UTF-8
  (RFC 6532), as mail clients do; what clublist writes is 7-bit, with RFC 2047 words.
"""

from __future__ import annotations

import base64
import binascii
import functools
import quopri
import random
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from email.policy import SMTP, Compat32, default
from email.utils import format_datetime, formataddr, getaddresses, make_msgid

from clublist.club.model import MailingList, Site, address_key

# Headers of the author's or of another list's that would stack with or contradict ours.
_REPLACED_HEADERS = frozenset({"precedence", "x-loop", "sender", "return-path", "errors-to"})
_BROKEN_SIGNATURES = frozenset({"dkim-signature", "domainkey-signature"})
# Bodies a footer would break (RFC 1847 security multiparts, RFC 8551 S/MIME).
_SEALED_TYPES = frozenset(
    {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
)
# Reply markers mail clients write: Re, German AW, Nordic SV, Dutch Antw, Polish Odp,
# Italian Rif; with a counter as in Re[2]: or Re(2):.
_REPLY_MARKER = re.compile(r"(?:re|aw|sv|antw|odp|rif)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)
# RFC 5322 specials: a phrase holding one must be quoted.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
# Line ends as the email package reads them: CRLF, bare CR, bare LF; two in a row end the headers.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# The transfer encodings of a body that is the text itself.
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_MAX_LINE = 78  # RFC 5322 2.1.1, and what the email package's policies fold at
CRLF = "\r\n"


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


# --- reading a post ----------------------------------------------------------


class ReceivedMessage(Message):
    """A post as :func:`parse` reads it: the header section (compat32, values as received) and
    the body as unparsed bytes, which decoration passes on untouched unless a footer is added.

    Write it out with :func:`decorate`: the email package's generator cannot write an unparsed
    multipart body holding 8-bit bytes.
    """

    def body(self) -> bytes:
        """The body exactly as received (``parse`` reads headers only, so the payload is the raw text)."""
        # get_payload() would replace the surrogates that carry 8-bit bytes; read the raw text.
        payload: str = self._payload or ""  # type: ignore[attr-defined]
        return payload.encode("ascii", "surrogateescape")


class _AsReceived(Compat32):
    """compat32 that hands out header values as received, raw 8-bit bytes as surrogates.

    Plain compat32 turns such a value into an unknown-8bit ``Header``, which loses the bytes;
    :func:`header_text` reads them as UTF-8 instead, as mail clients do.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_AS_RECEIVED = _AsReceived()


def parse(raw: bytes) -> ReceivedMessage:
    """Read a post once for the rules and decoration: its headers, and its body kept as bytes.

    Header values are source text (folded lines, RFC 2047 words and 8-bit bytes as they
    came), to be read with :func:`header_text` and :func:`sole_address`.  Only the header
    section goes through the parser, so the cost does not grow with the body: the parser is
    given everything up to the first empty line, and when it took every line before that as
    a header (it ends the header section at the first line that is not one), the rest is the
    body it would have found too.
    """
    blank_line = _HEADER_END.search(raw)
    if blank_line is not None:
        message = _parse_headers(raw[: blank_line.end()])
        if not message.body():
            message.set_payload(raw[blank_line.end() :].decode("ascii", "surrogateescape"))
            return message
    return _parse_headers(raw)


def _parse_headers(raw: bytes) -> ReceivedMessage:
    message = BytesParser(ReceivedMessage, policy=_AS_RECEIVED).parsebytes(raw, headersonly=True)
    assert isinstance(message, ReceivedMessage)
    return message


def header_text(value: object) -> str:
    """A header value as people read it: unfolded, RFC 2047 words decoded, raw 8-bit bytes as
    UTF-8 when they are UTF-8, else as Windows-1252/Latin-1 (what older mail programs send):
    never U+FFFD replacement characters.

    Only values holding encoded words pay for the email package's header registry, which
    decodes them as it always has.
    """
    text = "".join(str(value).splitlines())
    if not text.isascii():
        text = raw_8bit_text(text.encode("utf-8", "surrogateescape"))
    if "=?" in text:
        text = str(default.header_factory("x-text", text))
    return text


def raw_8bit_text(raw: bytes) -> str:
    """Undeclared 8-bit bytes as text: UTF-8 if they are, else Windows-1252, else Latin-1."""
    for charset in ("utf-8", "cp1252"):
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def sole_address(message: Message, header: str) -> Address | None:
    """The one address in *header*, or None when it is missing, unreadable or not alone.

    RFC 5322 allows one From; a second From header or a list of authors is a classic way
    to make a filter and a reader see different senders.  The display name is decoded
    (:func:`header_text`); a header that cannot be read cannot be trusted either.
    """
    values = message.get_all(header, [])
    if len(values) != 1:
        return None
    found = getaddresses([str(values[0])])
    if len(found) != 1 or not found[0][1]:
        return None
    name, addr_spec = found[0]
    username, at, domain = addr_spec.rpartition("@")
    try:
        return Address(header_text(name), username if at else addr_spec, domain if at else "")
    except ValueError:  # CR or LF in a decoded name
        return None


def list_id(mailing_list: MailingList, domain: str) -> str:
    """The RFC 2919 list identifier, ``youth.myclub.org``; rules.py looks for it to spot loops."""
    return f"{mailing_list.name}.{domain}"


# --- decorating --------------------------------------------------------------


def decorate(
    message: Message,
    mailing_list: MailingList,
    site: Site,
    *,
    rewrite_from: bool,
    author_name: str = "",
    from_address: Address | None = None,
) -> bytes:
    """*message* as it goes out to the list's members: the bytes for the wire, CRLF line ends.

    *message* is best what :func:`parse` made of the bytes received; any other Message is
    serialised and read again first.  *from_address* is its :func:`sole_address` of From
    when the caller has read it already (None reads it here).
    """
    received = message if isinstance(message, ReceivedMessage) else parse(message.as_bytes(policy=SMTP))
    author = from_address or sole_address(received, "From")
    list_address = mailing_list.address(site.domain)
    # Ours only when From is the list's address (decorated before); otherwise a forgery.
    sent_as_list = author is not None and address_key(author.addr_spec) == address_key(list_address)
    headers = _Headers(received.items())
    headers.remove(lambda name: _is_foreign(name, sent_as_list))
    headers.extend(_list_headers(mailing_list, site.domain, site.bot_address))
    if mailing_list.prefix:
        subject = headers.get("Subject")
        text = prefixed_subject("" if subject is None else header_text(subject), mailing_list.prefix)
        headers.set("Subject", _unstructured("Subject", text))
    body = received.body()
    if mailing_list.footer.strip():
        body = _add_footer(received, headers, body, mailing_list.footer)
    _apply_reply_to_policy(headers, mailing_list.reply_to, list_address)
    if rewrite_from and not sent_as_list:  # decorated before: a rewrite would read "Anna via Youth via Youth"
        _rewrite_from(headers, mailing_list, list_address, author_name, author)
    if "Message-ID" not in headers:
        headers.add("Message-ID", make_msgid(domain=site.domain))  # domain given: no DNS look-up
    if "Date" not in headers:
        headers.add("Date", format_datetime(datetime.now(UTC)))
    return headers.wire(body)


class _Headers:
    """A header section being rewritten: fields in order, values as they go on the wire."""

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self._fields = [(name.lower(), name, value) for name, value in fields]  # lower-case name first

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _, name, value in self._fields]

    def get(self, name: str) -> str | None:
        key = name.lower()
        return next((value for lower, _, value in self._fields if lower == key), None)

    def add(self, name: str, value: str) -> None:
        self._fields.append((name.lower(), name, value))

    def extend(self, fields: Iterable[tuple[str, str]]) -> None:
        for name, value in fields:
            self.add(name, value)

    def remove(self, unwanted: Callable[[str], bool]) -> None:
        """Drop every field whose lower-case name is *unwanted*."""
        self._fields = [field for field in self._fields if not unwanted(field[0])]

    def set(self, name: str, value: str) -> None:
        """Replace the first *name* where it stands and drop the others, or add it at the end."""
        key = name.lower()
        found = [i for i, field in enumerate(self._fields) if field[0] == key]
        if not found:
            self._fields.append((key, name, value))
            return
        self._fields[found[0]] = (key, name, value)
        for i in reversed(found[1:]):
            del self._fields[i]

    def wire(self, body: bytes) -> bytes:
        head = "".join(f"{name}: {value}\r\n" for _, name, value in self._fields)
        return _crlf(head.encode("ascii", "surrogateescape") + b"\r\n" + body)


def _crlf(data: bytes) -> bytes:
    """*data* with CRLF line ends only, bare CR and LF included, as the email package's generator writes."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    return _LINE_END.sub(b"\r\n", data)


def _is_foreign(name: str, sent_as_list: bool) -> bool:
    """Headers another list, a previous hop or the author wrote for our own (names in lower case)."""
    return (
        name.startswith("list-")
        or name in _REPLACED_HEADERS
        or name in _BROKEN_SIGNATURES
        or (name == "x-original-from" and not sent_as_list)
    )


@functools.lru_cache(maxsize=128)
def _list_headers(mailing_list: MailingList, domain: str, bot_address: str) -> tuple[tuple[str, str], ...]:
    """RFC 2919 List-Id and the RFC 2369 List-* headers (they also keep vacation responders quiet),
    Precedence, X-Loop and Sender, ready for the wire.

    They depend on the list's settings alone, so they are encoded once per settings (the cache
    key), by the header registry as policy SMTP always wrote them, not once per post.
    """
    name = mailing_list.name  # list names are [a-z0-9._-]: safe in a mailto URL as they are
    owner = f"{name}-owner@{domain}"
    list_address = mailing_list.address(domain)
    values = [
        ("List-Id", _list_id_header(mailing_list.display_name, list_id(mailing_list, domain))),
        ("List-Post", "NO" if mailing_list.posting == "owners" else f"<mailto:{list_address}>"),
        ("List-Help", f"<mailto:{bot_address}?subject=help>"),
        ("List-Subscribe", f"<mailto:{bot_address}?subject=subscribe%20{name}>"),
        ("List-Unsubscribe", f"<mailto:{bot_address}?subject=unsubscribe%20{name}>"),
        ("List-Owner", f"<mailto:{owner}>"),
    ]
    if mailing_list.archive_url:
        values.append(("List-Archive", f"<{mailing_list.archive_url}>"))
    values += [("Precedence", "list"), ("X-Loop", list_address), ("Sender", owner)]
    return tuple((header, _folded_by_registry(header, value)) for header, value in values)


def _folded_by_registry(name: str, value: str) -> str:
    """*value* as policy SMTP writes it after ``Name: `` (folded, RFC 2047 words where needed)."""
    return SMTP.header_factory(name, value).fold(policy=SMTP)[len(name) + 2 : -2]


def _list_id_header(display_name: str, identifier: str) -> str:
    """``Youth <youth.myclub.org>``: the title as an RFC 5322 phrase.

    An ASCII title with specials is quoted; a non-ASCII one becomes encoded words on output,
    which may not stand inside quotes (RFC 2047 5), so its specials are dropped instead.
    """
    if display_name.isascii():
        return formataddr((display_name, identifier))
    phrase = " ".join(_SPECIALS.sub(" ", display_name).split())
    return f"{phrase} <{identifier}>" if phrase else f"<{identifier}>"


def _unstructured(name: str, text: str) -> str:
    """*text* as the value of header *name*: as it is when short and plain ASCII, else folded by
    email.header, in RFC 2047 words from the first word that is not plain ASCII ("=?" too, lest a
    receiver decode it), so a leading "Re: [Youth]" stays readable to filters that do not decode."""
    words = text.split(" ")
    plain = next((i for i, word in enumerate(words) if not word.isascii() or "=?" in word), len(words))
    if plain == len(words) and len(name) + 2 + len(text) <= _MAX_LINE:
        return text
    header = Header(" ".join(words[:plain]) or None, "us-ascii", header_name=name)
    if plain < len(words):
        header.append(" ".join(words[plain:]), "utf-8")
    return header.encode(splitchars=" \t", linesep=CRLF)


def _mailbox(header: str, display_name: str, addr_spec: str) -> str:
    """An address for header *header*: the name quoted if need be, or RFC 2047 words if not ASCII."""
    name = " ".join(display_name.split())  # a name is one line, whatever an encoded word said
    if name.isascii() and "=?" not in name:
        return formataddr((name, addr_spec))
    return f"{Header(name, 'utf-8', header_name=header).encode(linesep=CRLF)} <{addr_spec}>"


def _original_from(author: Address) -> str:
    """The author for X-Original-From, which readers take as text: ``Name <address>``, the name
    quoted if need be, and in RFC 2047 words (quotes and all) if it is not ASCII."""
    name = " ".join(author.display_name.split())
    if not name:
        return author.addr_spec
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if name.isascii() and "=?" not in name:
        return _unstructured("X-Original-From", f"{name} <{author.addr_spec}>")
    header = Header(name, "utf-8", header_name="X-Original-From")
    header.append(f" <{author.addr_spec}>", "us-ascii")
    return header.encode(linesep=CRLF)


# --- subject -----------------------------------------------------------------


def prefixed_subject(subject: str, prefix: str) -> str:
    """*subject* with *prefix* exactly once, after a single "Re: " if it is a reply.

    Idempotent: "Re: [Youth] Re: [Youth] x" and "AW: [Youth] x" become "Re: [Youth] x",
    "[Youth] x" stays.  The prefix is removed wherever it stands (as Mailman does), so a
    forwarded list post reads "[Youth] Fwd: x".  Work on the decoded text
    (:func:`header_text`); the result is encoded again on output.
    """
    rest = " ".join(re.sub(re.escape(prefix), " ", subject, flags=re.IGNORECASE).split())
    is_reply = False
    while match := _REPLY_MARKER.match(rest):
        is_reply = True
        rest = rest[match.end() :]
    return f"{'Re: ' if is_reply else ''}{prefix} {rest or '(no subject)'}"


# --- footer ------------------------------------------------------------------


def _add_footer(message: ReceivedMessage, headers: _Headers, body: bytes, footer: str) -> bytes:
    """The body with *footer* added, never touching the bytes of an existing MIME part.

    A plain-text body gets it appended after a signature separator ("-- "); a
    multipart/mixed gets one more text/plain part; anything else (alternative, related,
    HTML, an attachment) is wrapped into a multipart/mixed with the footer part after it.
    Sealed bodies (signed, encrypted) get nothing.  This is done here, as text; what that
    cannot read (text in a transfer encoding it does not know or a charset it cannot decode,
    a multipart without its close delimiter) goes to the email package (:func:`add_footer`).
    Content-* headers in *headers* follow the body.
    """
    content_type = message.get_content_type()
    if content_type in _SEALED_TYPES:
        return body
    # A line ending in a space would join the next one in a format=flowed body (RFC 3676).
    footer = "\n".join(line.rstrip() for line in footer.strip("\n").splitlines())
    if content_type == "text/plain" and message.get_content_disposition() != "attachment":
        appended = _append_text(message, headers, body, footer)
        return _add_footer_by_email_package(headers, body, footer) if appended is None else appended
    if content_type == "multipart/mixed":
        appended = _append_part(message, body, footer)
        return _add_footer_by_email_package(headers, body, footer) if appended is None else appended
    return _wrap_in_mixed_with_footer(message, headers, body, footer)


def _append_text(message: ReceivedMessage, headers: _Headers, body: bytes, footer: str) -> bytes | None:
    """Append the footer to a text/plain body in its own charset (UTF-8 if it cannot hold it).

    Returns None, changing nothing, for a transfer encoding this does not know or a body that
    cannot be decoded exactly (unknown charset, bytes invalid in it); the email package then
    decides, and wraps what re-encoding would corrupt.
    """
    encoding = str(message.get("Content-Transfer-Encoding", "")).strip().lower()
    declared = message.get_content_charset()
    charset = declared or "us-ascii"
    try:
        text = _transfer_decoded(body, encoding).decode(charset)
    except (LookupError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    text = f"{text}\n-- \n{footer}\n"
    try:
        data = text.encode(charset)
    except UnicodeEncodeError:
        charset, data = "utf-8", text.encode("utf-8")
    lines = data.splitlines()  # bytes: CR and LF only, as the email package splits
    new_encoding = _transfer_encoding(text, encoding) or (
        "7bit" if max(map(len, lines), default=0) <= _MAX_LINE else "quoted-printable"
    )
    if declared != charset:
        headers.set("Content-Type", _with_charset(message.get("Content-Type"), charset))
    headers.set("Content-Transfer-Encoding", new_encoding)
    if "MIME-Version" not in headers:
        headers.add("MIME-Version", "1.0")
    return _transfer_encoded(lines, new_encoding)


def _transfer_decoded(body: bytes, encoding: str) -> bytes:
    """The bytes a body in *encoding* stands for, as ``get_payload(decode=True)`` reads them.

    Raises ValueError for an encoding not read here (x-uuencode) and for base64 with broken
    padding (binascii.Error): the email package reads the one and forgives the other.
    """
    if encoding in _IDENTITY_ENCODINGS:
        return body
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    if encoding == "base64":
        return binascii.a2b_base64(body)
    raise ValueError(f"transfer encoding {encoding!r}")


def _transfer_encoded(lines: list[bytes], encoding: str) -> bytes:
    """Text lines as a body in *encoding*, CRLF line ends, as ``set_content`` writes it."""
    if encoding == "base64":
        return base64.encodebytes(b"\r\n".join(lines) + b"\r\n").replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return binascii.b2a_qp(b"\n".join(lines) + b"\n").replace(b"\n", b"\r\n")
    return b"\r\n".join(lines) + b"\r\n"


def _transfer_encoding(text: str, original: str) -> str | None:
    """Keep the sender's quoted-printable or base64; otherwise 7bit-safe, so a DKIM signature
    survives relays without 8BITMIME (RFC 6376 5.3).  None: plain ASCII, 7bit if lines allow."""
    if original in ("quoted-printable", "base64"):
        return original
    return None if text.isascii() else "quoted-printable"


def _with_charset(content_type: str | None, charset: str) -> str:
    """A Content-Type value with its charset parameter set, the other parameters kept."""
    scratch = Message(policy=_AS_RECEIVED)  # the email package's parameter handling, quoting included
    scratch["Content-Type"] = content_type or "text/plain"
    scratch.set_param("charset", charset)
    return str(scratch["Content-Type"])


def _append_part(message: ReceivedMessage, body: bytes, footer: str) -> bytes | None:
    """The multipart/mixed body with the footer part added before its close delimiter, the
    rest byte for byte; None when there is no boundary or no close delimiter to find."""
    boundary = message.get_boundary()
    if not boundary:
        return None
    # The close delimiter as the email package finds it: "--boundary--" alone on a line.
    close = re.search(rb"(\r\n|\r|\n)--" + re.escape(boundary.encode()) + rb"--[ \t]*(?:\r\n|\r|\n|$)", body)
    if close is None:
        return None
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return body[: close.start()] + delimiter + _footer_part_bytes(footer) + body[close.start() :]


def _wrap_in_mixed_with_footer(
    message: ReceivedMessage, headers: _Headers, body: bytes, footer: str
) -> bytes:
    """A multipart/mixed of the body with its Content-* headers, byte for byte, and the footer part.

    What ``make_mixed()`` and the generator make of it, without reading the body at all.
    """
    content = _Headers(field for field in headers.items() if field[0].lower().startswith("content-"))
    if "Content-Type" not in content:
        content.add("Content-Type", message.get_content_type())
    boundary = _boundary(body)
    headers.remove(lambda name: name.startswith("content-"))
    headers.add("Content-Type", f'multipart/mixed; boundary="{boundary}"')
    if "MIME-Version" not in headers:
        headers.add("MIME-Version", "1.0")
    # RFC 2046 5.1.1: the CRLF before a delimiter belongs to it, not to the part before.
    delimiter = f"\r\n--{boundary}".encode()
    first, footer_part = content.wire(body), _footer_part_bytes(footer)
    return delimiter[2:] + b"\r\n" + first + delimiter + b"\r\n" + footer_part + delimiter + b"--\r\n"


def _boundary(body: bytes) -> str:
    """A multipart boundary in the email package's style that does not occur in *body*."""
    while True:
        boundary = f"{'=' * 15}{random.randrange(sys.maxsize):019d}=="
        if boundary.encode() not in body:
            return boundary


@functools.lru_cache(maxsize=64)
def _footer_part_bytes(footer: str) -> bytes:
    """The footer as a MIME part on the wire: the same for every post of the list, so made once."""
    return _footer_part(footer).as_bytes(policy=SMTP)


def _add_footer_by_email_package(headers: _Headers, body: bytes, footer: str) -> bytes:
    """The footer for any other body, by :func:`add_footer` on a message of just the MIME headers and body."""
    content = _Headers(field for field in headers.items() if _is_mime(field[0].lower()))
    part = message_from_bytes(content.wire(body), policy=SMTP)
    assert isinstance(part, EmailMessage)
    add_footer(part, footer)
    redone = parse(part.as_bytes(policy=SMTP))
    headers.remove(_is_mime)
    headers.extend(redone.items())
    return redone.body()


def _is_mime(name: str) -> bool:
    """The headers that describe the body (lower-case names): they move with it."""
    return name.startswith("content-") or name == "mime-version"


def add_footer(message: EmailMessage, footer: str) -> None:
    """Add *footer* (normalised by :func:`_add_footer`) to *message* in place, with the email package.

    Text gets it appended if the email package can decode it; multipart/mixed one more part;
    anything else (text that does not decode, in particular) is wrapped as by
    :func:`_wrap_in_mixed_with_footer`.
    """
    if _is_inline_text(message) and _append_text_by_email_package(message, footer):
        return
    if message.get_content_type() != "multipart/mixed":
        _wrap_in_mixed(message)
    message.attach(_footer_part(footer))  # type: ignore[arg-type]  # typeshed wants an EmailMessage


def _is_inline_text(message: EmailMessage) -> bool:
    return message.get_content_type() == "text/plain" and not message.is_attachment()


def _append_text_by_email_package(message: EmailMessage, footer: str) -> bool:
    """As :func:`_append_text`, for the transfer encodings only the email package reads."""
    charset = message.get_content_charset("us-ascii")
    try:
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)  # a single (non-multipart) part decodes to bytes
        body = payload.decode(charset)
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


def _apply_reply_to_policy(headers: _Headers, reply_to: str, list_address: str) -> None:
    """ "list" or an address replaces the author's Reply-To; "author" leaves it alone."""
    if reply_to != "author":
        headers.set("Reply-To", list_address if reply_to == "list" else reply_to)


def _rewrite_from(
    headers: _Headers, mailing_list: MailingList, list_address: str, author_name: str, author: Address | None
) -> None:
    """From: "Anna via Youth" <youth@myclub.org>, so the list's domain is the one DMARC checks."""
    if author is not None:
        headers.add("X-Original-From", _original_from(author))
        if mailing_list.reply_to == "author" and "Reply-To" not in headers:
            headers.add("Reply-To", _mailbox("Reply-To", author.display_name, author.addr_spec))
    name = author_name or (author.display_name or author.username if author else "")
    shown = f"{name} via {mailing_list.display_name}" if name else mailing_list.display_name
    headers.set("From", _mailbox("From", shown, list_address))
