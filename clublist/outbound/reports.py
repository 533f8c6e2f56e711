"""Messages clublist writes for people: RFC 3464 delivery reports and plain notices.

The delivery worker calls delivery_report() when recipients of a message fail or stay
delayed; admin summaries, owner notices and bot replies are built with notice().
"""

from __future__ import annotations

import email.policy
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from typing import Literal

from clublist.outbound import refusals

# CRLF line ends, 7-bit headers and bodies: ready for any SMTP server as is.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient's outcome, as an RFC 3464 per-recipient block.

    `diagnostic` is "type; text", normally "smtp; 550 5.1.1 user unknown" as the server
    replied; "" when no server replied (the human text then relies on `status`).
    Naive datetimes are taken as UTC.
    """

    recipient: str
    action: Literal["failed", "delayed"]
    status: str
    remote_mta: str | None
    diagnostic: str
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    @classmethod
    def from_smtp_reply(
        cls,
        recipient: str,
        action: Literal["failed", "delayed"],
        code: int,
        text: str,
        remote_mta: str | None,
        last_attempt: datetime | None = None,
        will_retry_until: datetime | None = None,
    ) -> FailedRecipient:
        """Build from an SMTP reply, taking its enhanced status code or deriving one."""
        text = " ".join(text.split())
        return cls(
            recipient=recipient,
            action=action,
            status=status_from_reply(code, text),
            remote_mta=remote_mta,
            diagnostic=f"smtp; {code} {text}".rstrip(),
            last_attempt=last_attempt,
            will_retry_until=will_retry_until,
        )


def status_from_reply(code: int, text: str) -> str:
    """The enhanced status code (RFC 3463) at the start of a reply's text, else X.0.0.

    Only a status whose class agrees with the reply code's is believed.
    """
    match = _ENHANCED_STATUS.match(text.strip())
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return "5.0.0" if code >= 500 else "4.0.0"


def delivery_report(
    *,
    reporting_mta: str,
    report_from: str,
    report_to: str,
    original_headers: bytes,
    arrival: datetime,
    failures: list[FailedRecipient],
    message_id_domain: str,
) -> EmailMessage:
    """An RFC 3464 report (multipart/report; report-type=delivery-status) on one message.

    All failures of one message go in one report, so a post that fails for ten members
    gives the administrator one mail, not ten. The first part explains in plain English;
    the second is for programs; the third carries the original's headers (not its body,
    which may be large or private).
    """
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(original_headers)
    subject = one_line(str(headers.get("Subject", ""))) or "(no subject)"
    failed = any(failure.action == "failed" for failure in failures)

    report = _new_message(
        sender=report_from,
        to=report_to,
        subject=f"{'Undelivered' if failed else 'Delayed'} mail: {subject}",
        message_id_domain=message_id_domain,
        auto_submitted="auto-generated",
    )
    report.set_content(_explain(reporting_mta, headers, subject, arrival, failures))
    report.make_mixed()
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    # typeshed's MIMEPart.attach wants an EmailMessage; any MIMEPart is what RFC 3464 needs here.
    report.attach(_delivery_status(reporting_mta, arrival, failures))  # type: ignore[arg-type]
    report.attach(_headers_part(original_headers))  # type: ignore[arg-type]
    return report


def notice(
    *,
    sender: str,
    to: str | Sequence[str],
    subject: str,
    text: str,
    message_id_domain: str,
    in_reply_to: str | None = None,
    auto_submitted: str = "auto-generated",
) -> EmailMessage:
    """A plain-text mail to people; threads under `in_reply_to` when it answers a message.

    Use auto_submitted="auto-replied" for answers to a person's mail (the bot), so that
    their auto-responders stay quiet (RFC 3834).
    """
    message = _new_message(
        sender=sender,
        to=to,
        subject=subject,
        message_id_domain=message_id_domain,
        auto_submitted=auto_submitted,
    )
    if in_reply_to and _MESSAGE_ID.fullmatch(in_reply_to.strip()):
        message["In-Reply-To"] = in_reply_to.strip()
        message["References"] = in_reply_to.strip()
    message.set_content(text)
    return message


def one_line(text: str) -> str:
    """Header text taken from incoming mail, safe to write back: one line, no control characters.

    Decoded encoded-words can carry CR or LF; the email package refuses those
    in a header, and a hostile sender must not be able to make a notice fail.
    """
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]


_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


def _new_message(
    *,
    sender: str,
    to: str | Sequence[str],
    subject: str,
    message_id_domain: str,
    auto_submitted: str,
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    put_header(message, "From", sender)
    put_header(message, "To", to if isinstance(to, str) else ", ".join(to))
    put_header(message, "Subject", one_line(subject))
    put_header(message, "Date", format_datetime(datetime.now(UTC)))
    put_header(message, "Message-ID", make_msgid(domain=message_id_domain))
    put_header(message, "Auto-Submitted", auto_submitted)
    return message


def put_header(message: EmailMessage, name: str, value: str) -> None:
    """Add a header.  A value in plain ASCII on one short line is stored as it is (``set_raw``):
    written out, it gives the same bytes without the header parser's cost, about 0.1 ms a
    header (a member import queues a welcome for each new member).  Any other (encoded
    words to make, a line to fold, a line break to refuse) goes through the policy."""
    if value.isascii() and len(name) + len(value) < 76 and "\r" not in value and "\n" not in value:
        message.set_raw(name, value)
    else:
        message[name] = value


def _delivery_status(reporting_mta: str, arrival: datetime, failures: list[FailedRecipient]) -> MIMEPart:
    """The message/delivery-status part: one header block per message, then per recipient.

    The email package writes and parses this type as a list of header-only messages, one
    per block; that is also how a reader gets the blocks back.
    """
    blocks = [
        _fields(
            ("Reporting-MTA", f"dns; {reporting_mta}"),
            ("Arrival-Date", _date(arrival)),
        )
    ]
    for failure in failures:
        fields = [
            ("Final-Recipient", _address_field(failure.recipient)),
            ("Action", failure.action),
            ("Status", failure.status),
        ]
        if failure.remote_mta:
            fields.append(("Remote-MTA", f"dns; {failure.remote_mta}"))
        if failure.diagnostic:
            fields.append(("Diagnostic-Code", failure.diagnostic))
        if failure.last_attempt:
            fields.append(("Last-Attempt-Date", _date(failure.last_attempt)))
        if failure.action == "delayed" and failure.will_retry_until:
            fields.append(("Will-Retry-Until", _date(failure.will_retry_until)))
        blocks.append(_fields(*fields))
    part = MIMEPart(policy=_POLICY)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(list[Message | str](blocks))
    return part


def _fields(*fields: tuple[str, str]) -> MIMEPart:
    """One header-only block of DSN fields: ASCII (RFC 3464 2.1.1), folded at spaces here.

    The email package's own folder moves a value that fits on a continuation line there
    whole ("Diagnostic-Code:" CRLF SP "smtp; ..."), and then parses it back with a leading
    space; a value given raw with lines within the limit is written as it is.
    """
    block = MIMEPart(policy=_POLICY)
    for name, value in fields:
        text = " ".join(value.split()).encode("ascii", "replace").decode("ascii")
        lines = textwrap.wrap(
            f"{name}: {text}",
            _POLICY.max_line_length or 78,
            subsequent_indent=" ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        block.set_raw(name, "\n".join(lines)[len(name) + 2 :])
    return block


def _headers_part(original_headers: bytes) -> MIMEPart:
    """text/rfc822-headers (RFC 6522) with the original's header section, verbatim."""
    text = original_headers.decode("utf-8", "replace").replace("\r\n", "\n")
    text = text.split("\n\n", 1)[0].rstrip("\n") + "\n"
    part = MIMEPart(policy=_POLICY)
    part.set_content(text, subtype="rfc822-headers", cte="7bit" if text.isascii() else None)
    return part


def _explain(
    reporting_mta: str,
    headers: EmailMessage,
    subject: str,
    arrival: datetime,
    failures: list[FailedRecipient],
) -> str:
    """The part for people: what happened to which recipient, why, and what to do."""
    lines = [
        f"This is the mail system of clublist at {reporting_mta}.",
        "",
        f'The message "{subject}"',
        f"from {headers.get('From', 'an unknown sender')}, received {_date(arrival)}:",
        "",
    ]
    for action, heading in (
        ("failed", "Could not be delivered to these recipients; clublist has given up:"),
        (
            "delayed",
            "Not delivered yet to these recipients; clublist keeps trying, so there is nothing to do yet:",
        ),
    ):
        group = [failure for failure in failures if failure.action == action]
        if group:
            lines += [heading, ""]
            lines += [line for failure in group for line in _explain_one(failure)]
    lines.append("The technical report and the original message's headers are attached.")
    return "\n".join(lines) + "\n"


def _explain_one(failure: FailedRecipient) -> list[str]:
    lines = [f"  {failure.recipient}"]
    reply = failure.diagnostic.partition(";")[2].strip()
    if reply:
        lines += _wrap(
            f"{failure.remote_mta} answered: {reply}" if failure.remote_mta else f"Reason: {reply}"
        )
    if failure.action == "failed" and failure.status.startswith("4."):
        meaning = "the problem stayed temporary until clublist's time to retry ran out."
    else:
        meaning = _meaning(failure.status)
    lines += _wrap(f"What it means: {meaning}")
    fix = refusals.authentication_fix(failure.status, reply)
    if fix:
        lines += _wrap(f'To fix: {fix} (README, "Deliverability").')
    if failure.action == "delayed" and failure.will_retry_until:
        lines.append(f"    clublist will keep trying until {_date(failure.will_retry_until)}.")
    lines.append("")
    return lines


# Enhanced status codes (RFC 3463) in words, with advice; looked up by the whole code,
# then by class and subject ("5.7"), then by class ("5").
_MEANINGS = {
    "5.1.1": "the address does not exist there. Check it with the member, and correct or remove it.",
    "5.1.2": "the recipient's domain does not exist. Check the spelling of the address.",
    "5.1.10": "the recipient's domain says it accepts no mail at all (null MX). Ask the"
    " member for another address.",
    "5.2.2": "the mailbox is full. The member needs to make room there.",
    "5.3.4": "the message is too large for the receiving server.",
    "5.1": "the address is not valid there. Check it with the member.",
    "5.2": "the mailbox is disabled or cannot take mail. Ask the member by other means.",
    "5.4": "no server for the recipient's domain could be reached. If this persists, check"
    " the address's domain.",
    "5.7": "the receiving server refused the message itself (spam filter, sender"
    " authentication such as DMARC, SPF or DKIM, or a blocklist). This is about the message"
    " and the club's reputation, not the address: check the club's DNS records (SPF, DKIM,"
    " DMARC) and whether its IP address is on a blocklist.",
    "5": "the receiving server refused the message for good; its answer above says why.",
    "4": "a temporary problem at, or on the way to, the receiving server.",
}


def _meaning(status: str) -> str:
    parts = status.split(".")
    for key in (status, ".".join(parts[:2]), parts[0]):
        if key in _MEANINGS:
            return _MEANINGS[key]
    return f"status {status}."


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        76,
        initial_indent="    ",
        subsequent_indent="      ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _date(when: datetime) -> str:
    return format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))


def _address_field(address: str) -> str:
    """ "rfc822; addr", or RFC 6533's "utf-8; " with \\x{HEX} escapes for a non-ASCII one."""
    if address.isascii():
        return f"rfc822; {address}"
    escaped = "".join(
        c if c.isascii() and c.isprintable() and c not in "\\+=" else f"\\x{{{ord(c):X}}}" for c in address
    )
    return f"utf-8; {escaped}"
