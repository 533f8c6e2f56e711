"""Decoration: what a post looks like when it leaves, checked by parsing the result back."""

from __future__ import annotations

import base64
import email
import email.parser
import quopri
from collections.abc import Callable
from email.message import EmailMessage, Message
from email.policy import compat32, default

import pytest

from clublist.club.model import MailingList, Site, SiteSection, replace
from clublist.mail.decorate import (
    ReceivedMessage,
    decorate,
    header_text,
    needs_from_rewrite,
    prefixed_subject,
)
from clublist.mail.decorate import parse as parse_received

SITE = Site(site=SiteSection(domain="myclub.org", admin="admin@myclub.org"))
YOUTH = MailingList(
    "youth", title="Youth", prefix="[Youth]", footer="Youth list of My Club\nhttps://myclub.org/youth"
)
BARE = MailingList("youth", title="Youth")  # no prefix, no footer
FOOTER = "Youth list of My Club\nhttps://myclub.org/youth"

HEADERS = (
    "From: Anna Example <anna@gmail.com>\r\n"
    "To: youth@myclub.org\r\n"
    "Cc: ben@example.org\r\n"
    "Subject: Training on Friday\r\n"
    "Date: Tue, 01 Dec 2026 18:00:00 +0100\r\n"
    "Message-ID: <post-1@gmail.com>\r\n"
    "In-Reply-To: <post-0@gmail.com>\r\n"
    "References: <post-0@gmail.com>\r\n"
)
PNG = bytes(range(256)) * 4


def parse(raw: bytes) -> EmailMessage:
    """Read the result as a receiver would."""
    return email.message_from_bytes(raw, policy=default)  # type: ignore[return-value]


def plain(body: bytes = b"See you there.\r\n", content: str = "", headers: str = HEADERS) -> ReceivedMessage:
    """A post as the SMTP listener reads it."""
    return parse_received(headers.encode() + content.encode() + b"\r\n" + body)


def snapshot(message: Message) -> object:
    """All there is to a message, to see that it did not change (the generator cannot write the
    unparsed 8-bit multipart body of a ReceivedMessage)."""
    if isinstance(message, ReceivedMessage):
        return message.items(), message.body()
    return message.as_bytes()


def sent(
    message: Message,
    mailing_list: MailingList = YOUTH,
    *,
    rewrite_from: bool = False,
    author_name: str = "",
) -> tuple[bytes, EmailMessage]:
    """Decorate into the bytes the queue keeps, and parse them back as a receiver would."""
    raw = decorate(message, mailing_list, SITE, rewrite_from=rewrite_from, author_name=author_name)
    return raw, parse(raw)


def header_line(raw: bytes, name: str) -> bytes:
    """The first line of header *name* on the wire."""
    return (b"\r\n" + raw).split(f"\r\n{name}: ".encode())[1].split(b"\r\n")[0]


def text(part: EmailMessage) -> str:
    """A text part's content with line ends as Python writes them (the wire has CRLF)."""
    return part.get_content().replace("\r\n", "\n")


def decoded_parts(message: EmailMessage) -> list[tuple[str, bytes]]:
    return [
        (p.get_content_type(), p.get_payload(decode=True)) for p in message.walk() if not p.is_multipart()
    ]


def mime(content_type: str, *more: str) -> str:
    """MIME header lines for :func:`plain`."""
    return "".join(f"{line}\r\n" for line in ("MIME-Version: 1.0", f"Content-Type: {content_type}", *more))


def multipart_bytes(subtype: str, *parts: str, extra: str = "") -> bytes:
    body = "".join(f"--BOUNDARY\r\n{part}\r\n" for part in parts) + "--BOUNDARY--\r\n"
    content = f'MIME-Version: 1.0\r\nContent-Type: multipart/{subtype}; boundary="BOUNDARY"{extra}\r\n'
    return HEADERS.encode() + content.encode() + b"\r\n" + body.encode()


def multipart(subtype: str, *parts: str, extra: str = "") -> ReceivedMessage:
    return parse_received(multipart_bytes(subtype, *parts, extra=extra))


TEXT_PART = 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n'
HTML_PART = (
    'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    '<p>Gr=C3=BC=C3=9Fe <img src=3D"cid:logo"></p>\r\n'
)
PNG_PART = (
    "Content-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n"
    'Content-Disposition: attachment; filename="logo.png"\r\n\r\n' + base64.encodebytes(PNG).decode()
)


# --- reading a post ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: hi\r\nTo: a@b.example\r\n\r\nbody\r\n\r\nmore\r\n",
        b"Subject: hi\nTo: a@b.example\n\nbody\n",
        b"Subject: hi\r\n folded\r\n\tagain\r\n\r\nbody",
        b"From someone Tue Dec  1 18:00:00 2026\r\nSubject: hi\r\n\r\nbody",
        b"Subject: hi\r\nno header here\r\nTo: a@b.example\r\n\r\nbody",
        b"Subject: hi\r\rbody",
        b"Subject: hi\r\r\nbody",
        b"Subject: hi\r\n",
        b"\r\nbody only",
        b"",
    ],
)
def test_parse_splits_header_and_body_where_the_email_package_does(raw: bytes) -> None:
    expected = email.parser.BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
    message = parse_received(raw)
    assert message.items() == expected.items()
    assert message.get_unixfrom() == expected.get_unixfrom()
    assert message.body() == expected.get_payload().encode()


def test_parse_keeps_raw_8bit_header_bytes_for_reading_as_utf8() -> None:
    message = parse_received("Subject: Grüße\r\n\r\nb".encode())
    assert header_text(message["Subject"]) == "Grüße"
    assert message.body() == b"b"


# --- when From is rewritten ----------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "policy", "failed", "expected"),
    [
        ("always", None, False, True),
        ("always", "none", False, True),
        ("never", "reject", False, False),
        ("never", None, True, False),
        ("dmarc", "reject", False, True),
        ("dmarc", "quarantine", False, True),
        ("dmarc", "none", False, False),
        ("dmarc", None, False, False),
        ("dmarc", None, True, True),
    ],
)
def test_needs_from_rewrite(setting: str, policy: str | None, failed: bool, expected: bool) -> None:
    assert needs_from_rewrite(replace(YOUTH, from_rewrite=setting), policy, failed) is expected


# --- headers -------------------------------------------------------------------


def test_every_list_header_is_added() -> None:
    _, out = sent(plain())
    assert out["List-Id"] == "Youth <youth.myclub.org>"
    assert out["List-Post"] == "<mailto:youth@myclub.org>"
    assert out["List-Help"] == "<mailto:bot@myclub.org?subject=help>"
    assert out["List-Subscribe"] == "<mailto:bot@myclub.org?subject=subscribe%20youth>"
    assert out["List-Unsubscribe"] == "<mailto:bot@myclub.org?subject=unsubscribe%20youth>"
    assert out["List-Owner"] == "<mailto:youth-owner@myclub.org>"
    assert out["Precedence"] == "list"
    assert out["X-Loop"] == "youth@myclub.org"
    assert out["Sender"] == "youth-owner@myclub.org"
    assert "List-Archive" not in out


def test_output_uses_crlf_line_ends_only() -> None:
    raw, _ = sent(plain(b"one\ntwo\n"))
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_list_archive_only_when_the_list_has_one() -> None:
    _, out = sent(plain(), replace(YOUTH, archive_url="https://myclub.org/archive/youth"))
    assert out["List-Archive"] == "<https://myclub.org/archive/youth>"


def test_a_list_only_owners_post_to_says_list_post_no() -> None:
    _, out = sent(plain(), replace(YOUTH, posting="owners"))
    assert out["List-Post"] == "NO"


def test_list_id_quotes_a_title_with_specials_and_encodes_a_non_ascii_one() -> None:
    _, out = sent(plain(), replace(YOUTH, title="Youth, U18"))
    assert out["List-Id"] == '"Youth, U18" <youth.myclub.org>'
    raw, out = sent(plain(), replace(YOUTH, title="Jugend Ü18"))
    assert out["List-Id"] == "Jugend Ü18 <youth.myclub.org>"
    assert b"List-Id: Jugend =?utf-8?" in raw


def test_headers_of_other_lists_and_hops_are_replaced_not_stacked() -> None:
    foreign = (
        "List-Id: Federation <news.federation.org>\r\n"
        "List-Unsubscribe: <https://federation.org/u/123>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "X-Loop: news@federation.org\r\n"
        "Sender: news-bounces@federation.org\r\n"
        "Return-Path: <anna@gmail.com>\r\n"
        "Precedence: bulk\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; d=gmail.com; s=x; b=abc\r\n"
        "X-Original-From: ceo@myclub.org\r\n"
    )
    _, out = sent(plain(headers=HEADERS + foreign))
    for name in ("List-Id", "List-Unsubscribe", "X-Loop", "Sender", "Precedence"):
        assert len(out.get_all(name)) == 1, name
    assert out["List-Id"] == "Youth <youth.myclub.org>"
    for name in ("List-Unsubscribe-Post", "Return-Path", "DKIM-Signature", "X-Original-From"):
        assert name not in out


def test_decorating_twice_stacks_no_header() -> None:
    once = parse(decorate(plain(), YOUTH, SITE, rewrite_from=True))
    for again in (parse_received(once.as_bytes()), once):  # as the listener reads it, and any message
        out = parse(decorate(again, YOUTH, SITE, rewrite_from=True))
        for name in {n for n in out if n.lower() not in ("content-type", "content-transfer-encoding")}:
            assert out.get_all(name) == once.get_all(name), name
            assert len(out.get_all(name)) == 1, name


@pytest.mark.parametrize("read", [parse_received, parse])
def test_the_input_message_is_not_changed(read: Callable[[bytes], Message]) -> None:
    message = read(multipart_bytes("alternative", TEXT_PART, HTML_PART))
    before = snapshot(message)
    decorate(message, replace(YOUTH, reply_to="list"), SITE, rewrite_from=True)
    assert snapshot(message) == before


def test_identity_and_threading_headers_are_kept() -> None:
    _, out = sent(plain(), rewrite_from=True)
    assert out["Message-ID"] == "<post-1@gmail.com>"
    assert out["Date"] == "Tue, 01 Dec 2026 18:00:00 +0100"
    assert out["To"] == "youth@myclub.org"
    assert out["Cc"] == "ben@example.org"
    assert out["In-Reply-To"] == "<post-0@gmail.com>"
    assert out["References"] == "<post-0@gmail.com>"


def test_a_post_without_message_id_or_date_gets_them() -> None:
    headers = "From: anna@gmail.com\r\nTo: youth@myclub.org\r\nSubject: hi\r\n"
    _, out = sent(plain(headers=headers))
    assert out["Message-ID"].endswith("@myclub.org>")
    assert out["Date"].datetime is not None


# --- subject prefix --------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Training on Friday", "[Youth] Training on Friday"),
        ("[Youth] Training", "[Youth] Training"),
        ("[youth] Training", "[Youth] Training"),
        ("Re: [Youth] Re: [Youth] Training", "Re: [Youth] Training"),
        ("Re: Re: Training", "Re: [Youth] Training"),
        ("[Youth] Re: Training", "Re: [Youth] Training"),
        ("AW: [Youth] Training", "Re: [Youth] Training"),
        ("Re[2]: [Youth] Training", "Re: [Youth] Training"),
        ("RE : SV: Antw: Training", "Re: [Youth] Training"),
        ("Fwd: [Youth] Training", "[Youth] Fwd: Training"),
        ("Re: Fwd: Training", "Re: [Youth] Fwd: Training"),
        ("Rebooting: the website", "[Youth] Rebooting: the website"),
        ("Areas: the new pitch", "[Youth] Areas: the new pitch"),
        ("", "[Youth] (no subject)"),
        ("Re: [Youth]", "Re: [Youth] (no subject)"),
        ("Grüße   aus\tMünchen", "[Youth] Grüße aus München"),
    ],
)
def test_prefixed_subject(subject: str, expected: str) -> None:
    assert prefixed_subject(subject, "[Youth]") == expected
    assert prefixed_subject(expected, "[Youth]") == expected


def test_subject_prefix_on_an_encoded_word_subject() -> None:
    headers = HEADERS.replace(
        "Subject: Training on Friday",
        "Subject: =?utf-8?q?Re=3A_=5BYouth=5D_Gr=C3=BC=C3=9Fe?= aus =?iso-8859-1?q?M=FCnchen?=",
    )
    raw, out = sent(plain(headers=headers))
    assert out["Subject"] == "Re: [Youth] Grüße aus München"
    subject_line = header_line(raw, "Subject")
    assert subject_line.isascii() and b"=?utf-8?" in subject_line


def test_a_non_ascii_prefix() -> None:
    _, out = sent(plain(), replace(YOUTH, prefix="[Jugend Ü]"))
    assert out["Subject"] == "[Jugend Ü] Training on Friday"
    _, again = sent(out, replace(YOUTH, prefix="[Jugend Ü]"))
    assert again["Subject"] == "[Jugend Ü] Training on Friday"


def test_a_missing_subject_gets_the_prefix() -> None:
    _, out = sent(plain(headers=HEADERS.replace("Subject: Training on Friday\r\n", "")))
    assert out["Subject"] == "[Youth] (no subject)"


def test_duplicate_subjects_become_one() -> None:
    _, out = sent(plain(headers=HEADERS + "Subject: Second\r\n"))
    assert out.get_all("Subject") == ["[Youth] Training on Friday"]


def test_no_prefix_leaves_the_subject_alone() -> None:
    _, out = sent(plain(), BARE)
    assert out["Subject"] == "Training on Friday"
    _, out = sent(plain(headers=HEADERS.replace("Subject: Training on Friday\r\n", "")), BARE)
    assert "Subject" not in out


# --- footer: single text/plain -----------------------------------------------------


def test_footer_on_a_plain_ascii_body() -> None:
    _, out = sent(plain())
    assert text(out) == f"See you there.\n\n-- \n{FOOTER}\n"
    assert out.get_content_charset() == "us-ascii"
    assert out["Content-Transfer-Encoding"] == "7bit"


def test_footer_on_a_message_without_mime_headers() -> None:
    _, out = sent(plain(b"No MIME here"))
    assert text(out) == f"No MIME here\n\n-- \n{FOOTER}\n"
    assert out["MIME-Version"] == "1.0"


def test_footer_on_a_latin1_quoted_printable_body_keeps_charset_and_encoding() -> None:
    written = "Grüße aus München\n"
    content = mime('text/plain; charset="iso-8859-1"', "Content-Transfer-Encoding: quoted-printable")
    raw, out = sent(plain(quopri.encodestring(written.encode("latin-1")), content))
    assert out.get_content_charset() == "iso-8859-1"
    assert out["Content-Transfer-Encoding"] == "quoted-printable"
    assert text(out) == f"{written}\n-- \n{FOOTER}\n"
    assert b"Gr=FC=DFe" in raw


def test_footer_a_latin1_body_cannot_hold_turns_it_into_utf8() -> None:
    written = "Grüße aus München\n"
    content = mime('text/plain; charset="iso-8859-1"', "Content-Transfer-Encoding: 8bit")
    _, out = sent(plain(written.encode("latin-1"), content), replace(YOUTH, footer="Beitrag: 10 €"))
    assert out.get_content_charset() == "utf-8"
    assert text(out) == f"{written}\n-- \nBeitrag: 10 €\n"
    assert out["Content-Transfer-Encoding"] == "quoted-printable"  # 7bit-safe for DKIM


def test_footer_on_a_utf8_base64_body_keeps_base64() -> None:
    written = "Привет, команда!\n" * 5
    content = mime('text/plain; charset="utf-8"', "Content-Transfer-Encoding: base64")
    _, out = sent(plain(base64.encodebytes(written.encode()), content), replace(YOUTH, footer="Команда"))
    assert out["Content-Transfer-Encoding"] == "base64"
    assert out.get_content_charset() == "utf-8"
    assert text(out) == f"{written}\n-- \nКоманда\n"


def test_footer_keeps_format_flowed_and_other_content_headers() -> None:
    content = mime(
        "text/plain; charset=us-ascii; format=flowed; delsp=yes",
        "Content-Language: de",
        "Content-Disposition: inline",
    )
    _, out = sent(plain(b"Hallo \r\nzusammen\r\n", content))
    assert out["Content-Type"].params["format"] == "flowed"
    assert out["Content-Type"].params["delsp"] == "yes"
    assert out["Content-Language"] == "de"
    assert out["Content-Disposition"] == "inline"
    assert text(out).startswith("Hallo \nzusammen\n")


def test_a_body_that_does_not_decode_is_wrapped_not_rewritten() -> None:
    body = b"caf\xe9 \xff\r\n"
    content = mime('text/plain; charset="utf-8"', "Content-Transfer-Encoding: 8bit")
    _, out = sent(plain(body, content))
    assert out.get_content_type() == "multipart/mixed"
    first, footer = out.get_payload()
    assert first.get_payload(decode=True) == body
    assert text(footer) == FOOTER + "\n"


def test_undeclared_8bit_body_is_wrapped_with_its_bytes() -> None:
    _, out = sent(plain(b"caf\xe9\r\n"))  # no MIME headers, so us-ascii, which \xe9 is not
    first, footer = out.get_payload()
    assert first.get_payload(decode=True) == b"caf\xe9\r\n"
    assert text(footer) == FOOTER + "\n"


def test_a_text_attachment_is_wrapped() -> None:
    content = mime("text/plain", 'Content-Disposition: attachment; filename="a.txt"')
    _, out = sent(plain(b"data\r\n", content))
    first, _ = out.get_payload()
    assert first.get_filename() == "a.txt"
    assert first.get_payload(decode=True) == b"data\r\n"


def test_footer_on_an_8bit_utf8_body_makes_it_quoted_printable() -> None:
    content = mime('text/plain; charset="utf-8"', "Content-Transfer-Encoding: 8bit")
    _, out = sent(plain("Grüße aus München\r\n".encode(), content))
    assert out.get_content_charset() == "utf-8"
    assert out["Content-Transfer-Encoding"] == "quoted-printable"  # 7bit-safe for DKIM
    assert text(out) == f"Grüße aus München\n\n-- \n{FOOTER}\n"


@pytest.mark.parametrize(("width", "encoding"), [(78, "7bit"), (79, "quoted-printable")])
def test_footer_on_ascii_text_keeps_7bit_while_lines_are_short(width: int, encoding: str) -> None:
    line = "x" * width
    _, out = sent(plain(f"{line}\r\n".encode(), mime("text/plain")))
    assert out["Content-Transfer-Encoding"] == encoding
    assert text(out) == f"{line}\n\n-- \n{FOOTER}\n"


def test_a_new_charset_keeps_the_other_parameters() -> None:
    content = mime('text/plain; charset="iso-8859-1"; format=flowed', "Content-Transfer-Encoding: 8bit")
    _, out = sent(plain("Grüße\r\n".encode("latin-1"), content), replace(YOUTH, footer="10 €"))
    assert out.get_content_charset() == "utf-8"
    assert out["Content-Type"].params["format"] == "flowed"
    assert text(out) == "Grüße\n\n-- \n10 €\n"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("base64", b"SGVsbG8gd29ybGQ\r\n"),
        ("x-uuencode", b"begin 644 x\r\n+2&5L;&\\@=V]R;&0`\r\n`\r\nend\r\n"),
    ],
)
def test_transfer_encodings_read_only_by_the_email_package_still_get_the_footer(
    encoding: str, body: bytes
) -> None:
    content = mime('text/plain; charset="us-ascii"', f"Content-Transfer-Encoding: {encoding}")
    _, out = sent(plain(body, content))
    assert text(out) == f"Hello world\n\n-- \n{FOOTER}\n"


# --- footer: multipart ---------------------------------------------------------------


def test_footer_is_a_new_last_part_of_multipart_mixed() -> None:
    raw = multipart_bytes("mixed", TEXT_PART, PNG_PART)
    original = decoded_parts(parse(raw))
    _, out = sent(parse_received(raw))
    parts = out.get_payload()
    assert out.get_content_type() == "multipart/mixed"
    assert len(parts) == 3
    assert decoded_parts(out)[:2] == original
    assert parts[2].get_content_type() == "text/plain"
    assert parts[2].get_content_charset() == "utf-8"
    assert parts[2].get_content_disposition() == "inline"
    assert text(parts[2]) == FOOTER + "\n"


@pytest.mark.parametrize(
    ("subtype", "parts"), [("alternative", (TEXT_PART, HTML_PART)), ("related", (HTML_PART, PNG_PART))]
)
def test_alternative_and_related_are_wrapped_in_mixed(subtype: str, parts: tuple[str, ...]) -> None:
    raw = multipart_bytes(subtype, *parts)
    original = decoded_parts(parse(raw))
    _, out = sent(parse_received(raw))
    assert out.get_content_type() == "multipart/mixed"
    assert out["MIME-Version"] == "1.0"
    inner, footer = out.get_payload()
    assert inner.get_content_type() == f"multipart/{subtype}"
    assert decoded_parts(inner) == original
    assert text(footer) == FOOTER + "\n"


def test_a_single_html_part_is_wrapped() -> None:
    content = mime('text/html; charset="utf-8"')
    _, out = sent(plain(b"<p>Hello</p>\r\n", content))
    html, footer = out.get_payload()
    assert html.get_content_type() == "text/html"
    assert html.get_payload(decode=True) == b"<p>Hello</p>\r\n"
    assert footer.get_content_type() == "text/plain"


def test_wrapping_keeps_the_bytes_of_the_body() -> None:
    message = multipart("alternative", TEXT_PART, HTML_PART)
    raw, _ = sent(message)
    assert message.body() in raw


def test_the_footer_part_goes_before_the_close_delimiter_keeping_preamble_and_epilogue() -> None:
    body = f"preamble\r\n--BOUNDARY\r\n{TEXT_PART}\r\n--BOUNDARY--\r\nepilogue\r\n"
    content = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BOUNDARY"\r\n'
    _, out = sent(plain(body.encode(), content))
    assert out.preamble == "preamble"
    assert out.epilogue.strip() == "epilogue"
    assert [part.get_content_type() for part in out.get_payload()] == ["text/plain", "text/plain"]
    assert text(out.get_payload()[1]) == FOOTER + "\n"


def test_a_multipart_without_its_close_delimiter_still_gets_the_footer() -> None:
    body = f"--BOUNDARY\r\n{TEXT_PART}\r\n--BOUNDARY\r\n{HTML_PART}"
    content = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BOUNDARY"\r\n'
    _, out = sent(plain(body.encode(), content))
    assert [part.get_content_type() for part in out.get_payload()] == [
        "text/plain",
        "text/html",
        "text/plain",
    ]
    assert text(out.get_payload()[2]) == FOOTER + "\n"


def test_non_ascii_footer_part_is_seven_bit_safe() -> None:
    _, out = sent(multipart("mixed", TEXT_PART), replace(YOUTH, footer="Grüße vom Vorstand"))
    assert out.get_payload()[-1]["Content-Transfer-Encoding"] == "quoted-printable"
    assert text(out.get_payload()[-1]) == "Grüße vom Vorstand\n"


@pytest.mark.parametrize(
    ("subtype", "params"),
    [
        ("signed", '; protocol="application/pgp-signature"; micalg=pgp-sha256'),
        ("encrypted", '; protocol="application/pgp-encrypted"'),
    ],
)
def test_signed_and_encrypted_bodies_are_never_touched(subtype: str, params: str) -> None:
    signature = (
        "Content-Type: application/pgp-signature\r\n\r\n"
        "-----BEGIN PGP SIGNATURE-----\r\nabc\r\n-----END PGP SIGNATURE-----\r\n"
    )
    message = multipart(subtype, TEXT_PART, signature, extra=params)
    raw, out = sent(message)
    assert out.get_content_type() == f"multipart/{subtype}"
    assert len(out.get_payload()) == 2
    assert raw.split(b"\r\n\r\n", 1)[1] == message.body()  # byte for byte, so the signature still verifies


def test_an_smime_opaque_message_is_never_touched() -> None:
    content = mime("application/pkcs7-mime; smime-type=enveloped-data", "Content-Transfer-Encoding: base64")
    _, out = sent(plain(base64.encodebytes(PNG), content))
    assert out.get_content_type() == "application/pkcs7-mime"
    assert out.get_payload(decode=True) == PNG


# --- Reply-To ------------------------------------------------------------------------


def test_reply_to_author_leaves_the_authors_choice() -> None:
    _, out = sent(plain())
    assert "Reply-To" not in out
    _, out = sent(plain(headers=HEADERS + "Reply-To: anna@home.example\r\n"))
    assert out["Reply-To"] == "anna@home.example"


def test_reply_to_list_replaces_the_authors_reply_to() -> None:
    _, out = sent(plain(headers=HEADERS + "Reply-To: anna@home.example\r\n"), replace(YOUTH, reply_to="list"))
    assert out.get_all("Reply-To") == ["youth@myclub.org"]


def test_reply_to_an_address() -> None:
    _, out = sent(plain(), replace(YOUTH, reply_to="trainers@myclub.org"))
    assert out["Reply-To"] == "trainers@myclub.org"


def test_rewritten_from_puts_the_author_in_reply_to() -> None:
    _, out = sent(plain(), rewrite_from=True)
    assert out["Reply-To"] == "Anna Example <anna@gmail.com>"


def test_rewritten_from_keeps_the_authors_own_reply_to() -> None:
    _, out = sent(plain(headers=HEADERS + "Reply-To: anna@home.example\r\n"), rewrite_from=True)
    assert out.get_all("Reply-To") == ["anna@home.example"]


def test_rewritten_from_with_reply_to_list() -> None:
    _, out = sent(plain(), replace(YOUTH, reply_to="list"), rewrite_from=True)
    assert out.get_all("Reply-To") == ["youth@myclub.org"]
    assert out["X-Original-From"] == "Anna Example <anna@gmail.com>"


# --- From ------------------------------------------------------------------------------


def test_from_rewrite_with_a_display_name() -> None:
    _, out = sent(plain(), rewrite_from=True)
    (author,) = out["From"].addresses
    assert author.display_name == "Anna Example via Youth"
    assert author.addr_spec == "youth@myclub.org"
    assert out["X-Original-From"] == "Anna Example <anna@gmail.com>"


def test_from_rewrite_without_a_display_name_uses_the_local_part() -> None:
    _, out = sent(
        plain(headers=HEADERS.replace("Anna Example <anna@gmail.com>", "anna@gmail.com")), rewrite_from=True
    )
    assert out["From"].addresses[0].display_name == "anna via Youth"
    assert out["Reply-To"] == "anna@gmail.com"


def test_from_rewrite_prefers_the_name_the_club_knows() -> None:
    _, out = sent(plain(), rewrite_from=True, author_name="Anna Müller")
    assert out["From"] == "Anna Müller via Youth <youth@myclub.org>"


def test_a_name_written_on_two_lines_becomes_one() -> None:
    _, out = sent(plain(), rewrite_from=True, author_name="Anna\nMüller")
    assert out["From"] == "Anna Müller via Youth <youth@myclub.org>"


def test_from_rewrite_reads_a_raw_utf8_display_name() -> None:
    headers = HEADERS.replace("Anna Example", "Anna Müller")
    raw, out = sent(parse_received(headers.encode() + b"\r\nhi\r\n"), rewrite_from=True)
    assert out["From"].addresses[0].display_name == "Anna Müller via Youth"
    assert out["X-Original-From"] == "Anna Müller <anna@gmail.com>"
    assert b"unknown-8bit" not in raw


def test_from_rewrite_of_an_encoded_display_name() -> None:
    headers = HEADERS.replace("Anna Example", "=?iso-8859-1?q?Anna_M=FCller?=")
    raw, out = sent(plain(headers=headers), rewrite_from=True)
    assert out["From"] == "Anna Müller via Youth <youth@myclub.org>"
    assert header_line(raw, "From").isascii()


def test_without_rewrite_from_stays_and_no_original_from_is_added() -> None:
    _, out = sent(plain())
    assert out["From"] == "Anna Example <anna@gmail.com>"
    assert "X-Original-From" not in out
