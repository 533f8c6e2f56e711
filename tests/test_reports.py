"""RFC 3464 delivery reports and notices, checked by parsing them back with the email package."""

import email
import email.message
import email.policy
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from flufl.bounce import all_failures

from clublist.outbound.reports import (
    FailedRecipient,
    delivery_report,
    notice,
    put_header,
    status_from_reply,
)

ARRIVAL = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = email.policy.SMTP.clone(cte_type="7bit")  # the notices' own
ORIGINAL = (
    b"Received: from mail.gmail.com by lists.myclub.org\r\n"
    b"From: Anna <anna@gmail.com>\r\n"
    b"To: youth@myclub.org\r\n"
    b"Subject: =?utf-8?q?Fr=C3=BChjahrsfest_am_Samstag?=\r\n"
    b"Message-ID: <post-1@gmail.com>\r\n"
    b"\r\n"
    b"Body that must not be attached\r\n"
)


def parse(message):
    """Parse as a receiver would; the serialised form has CRLF line ends."""
    return email.message_from_bytes(bytes(message), policy=email.policy.default)


def content(part):
    return part.get_content().replace("\r\n", "\n")


def build(failures, original=ORIGINAL):
    return delivery_report(
        reporting_mta="lists.myclub.org",
        report_from="MAILER-DAEMON@myclub.org",
        report_to="Admin <admin@myclub.org>",
        original_headers=original,
        arrival=ARRIVAL,
        failures=failures,
        message_id_domain="myclub.org",
    )


def failed(recipient="bob@example.com"):
    return FailedRecipient.from_smtp_reply(
        recipient,
        "failed",
        550,
        "5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
        "mx.example.com",
        last_attempt=ARRIVAL + timedelta(minutes=1),
    )


def test_failed_report_round_trips_with_every_field():
    report = parse(build([failed(), failed("carl@example.com")]))

    assert report["From"] == "MAILER-DAEMON@myclub.org"
    assert report["To"] == "Admin <admin@myclub.org>"
    assert report["Subject"] == "Undelivered mail: Frühjahrsfest am Samstag"
    assert report["Auto-Submitted"] == "auto-generated"
    assert report["Message-ID"].endswith("@myclub.org>")
    assert parsedate_to_datetime(report["Date"]).tzinfo is not None
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"

    text, status, headers = report.iter_parts()
    assert text.get_content_type() == "text/plain"
    human = content(text)
    assert "Frühjahrsfest am Samstag" in human
    assert "bob@example.com" in human and "carl@example.com" in human
    assert "mx.example.com answered: 550 5.1.1" in human
    assert "does not exist" in human  # what 5.1.1 means, in words

    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; lists.myclub.org"
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert [block["Final-Recipient"] for block in per_recipient] == [
        "rfc822; bob@example.com",
        "rfc822; carl@example.com",
    ]
    block = per_recipient[0]
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] == "dns; mx.example.com"
    assert block["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown"
    )
    assert parsedate_to_datetime(block["Last-Attempt-Date"]) == ARRIVAL + timedelta(minutes=1)
    assert "Will-Retry-Until" not in block

    assert headers.get_content_type() == "text/rfc822-headers"
    original = content(headers)
    assert "Message-ID: <post-1@gmail.com>" in original
    assert "Received: from mail.gmail.com" in original
    assert "Body that must not be attached" not in original


def test_delayed_report():
    until = ARRIVAL + timedelta(days=5)
    delayed = FailedRecipient.from_smtp_reply(
        "dora@example.net",
        "delayed",
        451,
        "Greylisted, please try again later",
        "mx.example.net",
        last_attempt=ARRIVAL,
        will_retry_until=until,
    )
    report = parse(build([delayed]))
    assert report["Subject"] == "Delayed mail: Frühjahrsfest am Samstag"
    text, status, _ = report.iter_parts()
    _, block = status.get_payload()
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.0.0"
    assert block["Diagnostic-Code"] == "smtp; 451 Greylisted, please try again later"
    assert parsedate_to_datetime(block["Will-Retry-Until"]) == until
    assert "keeps trying" in content(text)


def test_mixed_report_says_undelivered_and_lists_both():
    delayed = FailedRecipient("dora@example.net", "delayed", "4.4.1", None, "")
    report = parse(build([delayed, failed()]))
    assert report["Subject"].startswith("Undelivered mail: ")
    _, status, _ = report.iter_parts()
    blocks = status.get_payload()[1:]
    assert [b["Action"] for b in blocks] == ["delayed", "failed"]
    assert "Remote-MTA" not in blocks[0] and "Diagnostic-Code" not in blocks[0]


def test_expired_and_content_refusals_are_explained():
    expired = FailedRecipient("dora@example.net", "failed", "4.4.1", "mx.example.net", "")
    refused = FailedRecipient.from_smtp_reply(
        "e@gmail.com", "failed", 550, "5.7.26 Unauthenticated email is not accepted", None
    )
    text, status, _ = parse(build([expired, refused])).iter_parts()
    human = " ".join(content(text).split())
    assert "stayed temporary until clublist's time to retry ran out" in human
    assert "Reason: 550 5.7.26 Unauthenticated email is not accepted" in human
    assert "not the address" in human
    assert [b["Status"] for b in status.get_payload()[1:]] == ["4.4.1", "5.7.26"]


def test_a_bounce_parser_reads_the_report():
    """flufl.bounce (used for incoming DSNs) reads our reports as a remote MTA's."""
    delayed = FailedRecipient("dora@example.net", "delayed", "4.4.1", None, "")
    raw = bytes(build([failed(), delayed]))
    temporary, permanent = all_failures(email.message_from_bytes(raw))
    assert permanent == {b"bob@example.com"}
    assert temporary == {b"dora@example.net"}


def test_long_diagnostic_is_folded_and_read_back_whole():
    reply = "5.7.26 Unauthenticated email from gmail.com is not accepted due to domain's " * 3
    failure = FailedRecipient.from_smtp_reply("e@gmail.com", "failed", 550, reply, "mx.google.com")
    raw = bytes(build([failure]))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    _, status, _ = parse(build([failure])).iter_parts()
    block = status.get_payload()[1]
    assert block["Diagnostic-Code"] == "smtp; 550 " + " ".join(reply.split())
    assert block["Status"] == "5.7.26"


def test_report_without_subject_and_with_raw_utf8_headers():
    original = "From: jürgen@example.de\nTo: youth@myclub.org\n\n".encode()
    report = parse(build([failed()], original=original))
    assert report["Subject"] == "Undelivered mail: (no subject)"
    _, _, headers = report.iter_parts()
    assert "From: jürgen@example.de" in content(headers)


def test_non_ascii_recipient_uses_utf8_address_type():
    failure = FailedRecipient("jürgen@exämple.de", "failed", "5.1.10", None, "")
    _, status, _ = parse(build([failure])).iter_parts()
    assert status.get_payload()[1]["Final-Recipient"] == r"utf-8; j\x{FC}rgen@ex\x{E4}mple.de"


def test_report_is_7bit_and_crlf():
    raw = bytes(build([failed()]))
    assert raw.isascii()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [
        (550, "5.1.1 user unknown", "5.1.1"),
        (550, "user unknown", "5.0.0"),
        (451, "4.7.1 try later", "4.7.1"),
        (421, "Service not available", "4.0.0"),
        (550, "4.2.2 contradictory", "5.0.0"),
        (552, "5.3.4 too big", "5.3.4"),
    ],
)
def test_status_from_reply(code, text, status):
    assert status_from_reply(code, text) == status


def test_notice():
    message = parse(
        notice(
            sender="bot@myclub.org",
            to=["anna@gmail.com", "Bob <bob@example.com>"],
            subject="Re: subscribe trainer – done",
            text="You are now on trainer@myclub.org.\n",
            message_id_domain="myclub.org",
            in_reply_to="<cmd-1@gmail.com>",
            auto_submitted="auto-replied",
        )
    )
    assert message["From"] == "bot@myclub.org"
    assert message["To"] == "anna@gmail.com, Bob <bob@example.com>"
    assert message["Subject"] == "Re: subscribe trainer – done"
    assert message["In-Reply-To"] == "<cmd-1@gmail.com>"
    assert message["References"] == "<cmd-1@gmail.com>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Message-ID"].endswith("@myclub.org>")
    assert content(message) == "You are now on trainer@myclub.org.\n"


def test_notice_defaults():
    message = parse(
        notice(
            sender="clublist <postmaster@myclub.org>",
            to="admin@myclub.org",
            subject="Daily summary",
            text="Nothing held.\n",
            message_id_domain="myclub.org",
        )
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert "In-Reply-To" not in message


@pytest.mark.parametrize(
    ("code", "reply", "record"),
    [
        (550, "5.7.509 Access denied, sending domain does not pass DMARC verification", "DKIM"),
        (
            550,
            "5.7.515 Access denied, sending domain does not meet the required authentication level",
            "DMARC",
        ),
        (421, "4.7.40 Your email has been rate limited because DMARC is not present", "_dmarc"),
    ],
)
def test_a_refusal_naming_authentication_says_which_record_to_fix(code, reply, record):
    refused = FailedRecipient.from_smtp_reply("e@outlook.com", "failed", code, reply, "mx.outlook.com")
    text = " ".join(content(next(parse(build([refused])).iter_parts())).split())
    assert "To fix: " in text and record in text.partition("To fix: ")[2]
    assert "To fix" not in " ".join(content(next(parse(build([failed()])).iter_parts())).split())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("From", "Youth <bot@myclub.org>"),
        ("From", '"Youth, U17" <bot@myclub.org>'),
        ("To", "anna@gmail.com, Bob <bob@example.com>"),
        ("Subject", "Welcome to the youth list"),
        ("Subject", "Willkommen – Jugend"),
        ("Subject", "A subject long enough to be folded by the policy when it is written out, twice over"),
        ("Date", "Wed, 02 Dec 2026 03:55:00 +0000"),
        ("Reply-To", "youth-request@myclub.org"),
    ],
)
def test_a_header_put_as_it_is_writes_what_the_policy_writes(name: str, value: str) -> None:
    fast, parsed = email.message.EmailMessage(policy=POLICY), email.message.EmailMessage(policy=POLICY)
    put_header(fast, name, value)
    parsed[name] = value
    assert bytes(fast) == bytes(parsed)
    assert str(fast[name]) == str(parsed[name])


def test_a_header_with_a_line_break_is_refused_either_way() -> None:
    with pytest.raises(ValueError):
        put_header(email.message.EmailMessage(policy=POLICY), "Subject", "Hi\r\nBcc: x@example.org")
