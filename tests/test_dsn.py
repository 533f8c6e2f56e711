"""Reading bounces: which recipient failed, and whether the address or the message was refused."""

import email
import email.policy
import subprocess
import sys
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from clublist.bounces.dsn import BounceEvidence, classify_status, is_auto_reply, parse_bounce

BOUNCES = Path(__file__).parent / "bounces"
POLICIES = [email.policy.default, email.policy.compat32]


def parse(raw: bytes, policy: email.policy.Policy = email.policy.default) -> Message:
    return email.message_from_bytes(raw, policy=policy)


def load(name: str, policy: email.policy.Policy = email.policy.default) -> Message:
    return parse((BOUNCES / name).read_bytes(), policy)


def failures(msg: Message) -> list[tuple[str, str, str]]:
    return [(e.address, e.kind, e.status) for e in parse_bounce(msg)]


EXPECTED = {
    "postfix_user_unknown.eml": [("jonas.weber@example.net", "hard", "5.1.1")],
    "postfix_delayed.eml": [("peter@slow-club.example", "soft", "4.4.1")],
    "exim_permanent.eml": [
        ("lena.k@example.org", "hard", "5.1.1"),
        ("tom@nowhere.example", "hard", ""),
    ],
    "sendmail_user_unknown.eml": [("Bob.Miller@example.com", "hard", "5.1.1")],
    "office365_recipient_not_found.eml": [("felix.braun@contoso.com", "hard", "5.1.10")],
    "gmail_no_such_user.eml": [("nobody.here.42@gmail.com", "hard", "5.1.1")],
    "gmail_dmarc_5726.eml": [("sophie.lange@gmail.com", "content", "5.7.26")],
    "postfix_gmail_rate_4728.eml": [("max.hoffmann@gmail.com", "content", "4.7.28")],
    "yahoo_no_account.eml": [("mia.fischer@yahoo.com", "hard", "")],
    "qmail_no_mailbox.eml": [("karl@example.com", "hard", "5.1.1")],
    "postfix_spamhaus_571.eml": [("lisa.wolf@small-isp.example", "content", "5.7.1")],
    "postfix_mixed_recipients.eml": [("ben@example.net", "hard", "5.2.2")],
    "vacation_auto_reply.eml": [],
}


def test_every_sample_bounce_has_an_expectation() -> None:
    assert sorted(p.name for p in BOUNCES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "compat32"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bounce_names_failed_recipient_kind_and_status(name: str, policy: email.policy.Policy) -> None:
    assert failures(load(name, policy)) == EXPECTED[name]


def test_postfix_diagnostic_is_the_remote_reply_on_one_line() -> None:
    [evidence] = parse_bounce(load("postfix_user_unknown.eml"))
    assert evidence == BounceEvidence(
        "jonas.weber@example.net",
        "hard",
        "5.1.1",
        "550 5.1.1 <jonas.weber@example.net>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    )


def test_gmail_multi_line_reply_is_joined_without_repeated_codes() -> None:
    [evidence] = parse_bounce(load("gmail_no_such_user.eml"))
    assert evidence.diagnostic.startswith(
        "550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address"
    )
    assert evidence.diagnostic.count("5.1.1") == 1


def test_free_text_bounce_keeps_each_recipients_own_words() -> None:
    lena, tom = parse_bounce(load("exim_permanent.eml"))
    assert "User unknown in local recipient table" in lena.diagnostic
    assert tom.diagnostic == "tom@nowhere.example Unrouteable address"


def test_qmail_diagnostic_is_the_recipient_paragraph() -> None:
    [evidence] = parse_bounce(load("qmail_no_mailbox.eml"))
    assert evidence.diagnostic == "<karl@example.com>: Sorry, no mailbox here by that name. (#5.1.1)"


def test_report_listing_only_deliveries_is_not_a_bounce() -> None:
    raw = (BOUNCES / "postfix_mixed_recipients.eml").read_bytes()
    raw = raw.replace(b"Action: failed", b"Action: delivered")
    # The notification text still reads like a failure; the report itself is what counts.
    assert parse_bounce(parse(raw)) == []


def test_delay_is_never_hard() -> None:
    raw = (BOUNCES / "postfix_delayed.eml").read_bytes()
    raw = raw.replace(b"Status: 4.4.1", b"Status: 5.1.1")
    assert failures(parse(raw)) == [("peter@slow-club.example", "soft", "5.1.1")]


def test_generic_status_defers_to_the_code_in_the_reply() -> None:
    raw = (BOUNCES / "sendmail_user_unknown.eml").read_bytes()
    raw = raw.replace(b"Status: 5.1.1", b"Status: 5.0.0").replace(
        b"SMTP; 550 5.1.1 <Bob.Miller@Example.COM>... User unknown",
        b"SMTP; 554 5.7.1 Message rejected as spam",
    )
    assert failures(parse(raw)) == [("Bob.Miller@example.com", "content", "5.7.1")]


def test_original_recipient_wins_over_final_recipient_after_forwarding() -> None:
    raw = (BOUNCES / "postfix_user_unknown.eml").read_bytes()
    raw = raw.replace(
        b"Final-Recipient: rfc822; jonas.weber@example.net",
        b"Final-Recipient: rfc822; jonas.w@forwarded.example",
    )
    assert failures(parse(raw)) == [("jonas.weber@example.net", "hard", "5.1.1")]


GLOBAL_DSN = """\
From: MAILER-DAEMON@mail.myclub.org (Mail Delivery System)
To: bounces@myclub.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=global-delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

I'm sorry to have to inform you that your message could not be delivered.

--b1
Content-Type: message/global-delivery-status
Content-Transfer-Encoding: 8bit

Reporting-MTA: dns; mail.myclub.org
Arrival-Date: Mon,  9 Mar 2026 10:00:00 +0100 (CET)

Final-Recipient: utf-8; jürgen@Beispiel.DE
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <jürgen@beispiel.de>: mailbox unknown

--b1--
"""


def test_smtputf8_report_is_read_from_global_delivery_status() -> None:
    assert failures(parse(GLOBAL_DSN.encode())) == [("jürgen@beispiel.de", "hard", "5.1.1")]


OLD_GMAIL_TEXT = """\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@myclub.org
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     old.friend@gmail.com

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient
domain gmail.com by gmail-smtp-in.l.google.com. [74.125.136.27].

The error that the other server returned was:
550-5.1.1 The email account that you tried to reach does not exist. Please try
550 5.1.1 double-checking the recipient's email address. xx.123 - gsmtp

----- Original message -----

From: Youth list <youth@myclub.org>
To: youth@myclub.org
Subject: [Youth] Kick-off
"""


def test_free_text_status_may_follow_a_few_paragraphs_after_the_address() -> None:
    [evidence] = parse_bounce(parse(OLD_GMAIL_TEXT.encode()))
    assert (evidence.address, evidence.kind, evidence.status) == ("old.friend@gmail.com", "hard", "5.1.1")
    assert evidence.diagnostic.startswith("The error that the other server returned was: 550-5.1.1")


QMAIL_TWO_RECIPIENTS = """\
From: MAILER-DAEMON@mail.example.org
To: bounces@myclub.org
Subject: failure notice

Hi. This is the qmail-send program at mail.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<joann@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

<ann@example.org>:
Sorry, this mailbox is disabled. (#5.2.1)

--- Below this line is a copy of the message.
"""


def test_free_text_status_belongs_to_the_exact_address_not_a_longer_one() -> None:
    assert failures(parse(QMAIL_TWO_RECIPIENTS.encode())) == [
        ("ann@example.org", "hard", "5.2.1"),
        ("joann@example.org", "hard", "5.1.1"),
    ]


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "User unknown", "hard"),
        ("5.2.2", "Mailbox is full", "hard"),
        ("5.4.1", "Recipient address rejected: Access denied", "hard"),
        ("4.2.2", "Mailbox is full", "soft"),
        ("4.4.1", "Connection timed out", "soft"),
        ("4.7.1", "Greylisted, try again later", "soft"),
        ("5.7.26", "Unauthenticated email is not accepted", "content"),
        ("4.7.23", "", "content"),
        ("4.7.32", "", "content"),
        ("4.7.33", "", "soft"),
        ("5.7.1", "Client host blocked using zen.spamhaus.org", "content"),
        ("5.7.1", "Relay access denied", "content"),
        ("5.7.1", "<x@example.org>: Recipient address rejected: User unknown", "hard"),
        ("5.7.1", "Requested action not taken: mailbox unavailable", "content"),
        ("5.7.1", "User unknown; also blocked using zen.spamhaus.org", "content"),
        ("5.7.0", "User unknown", "content"),
        ("5.3.4", "Message size exceeds fixed limit", "content"),
        ("5.6.0", "Message content rejected", "content"),
        ("5.0.0", "550 5.7.1 Message rejected as spam", "content"),
        ("5.0.0", "550 Rejected: your IP is on our blacklist", "content"),
        ("5.1.1", "User unknown; see our anti-spam policy", "hard"),
        ("", "554 delivery error: dd This user doesn't have an account", "hard"),
        ("", "452 Too many recipients", "soft"),
        ("", "Unrouteable address", "hard"),
        ("", "", "hard"),
    ],
)
def test_classify_status(status: str, diagnostic: str, kind: str) -> None:
    assert classify_status(status, diagnostic) == kind


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"vacation_auto_reply.eml"}))
def test_bounces_are_not_auto_replies_though_they_say_auto_replied(name: str) -> None:
    assert not is_auto_reply(load(name))


def test_vacation_reply_is_an_auto_reply_and_reports_no_failure() -> None:
    msg = load("vacation_auto_reply.eml")
    assert is_auto_reply(msg)
    assert parse_bounce(msg) == []


def plain_message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jonas Weber <jonas.weber@example.net>"
    msg["To"] = "bounces@myclub.org"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("I will be back on Monday.\n")
    return msg


@pytest.mark.parametrize(
    "headers",
    [
        {"Subject": "Out of Office: [Youth] Training", "Auto_Submitted": "auto-replied"},
        {"Subject": "Abwesenheitsnotiz: [Youth] Training"},
        {"Subject": "Automatic reply: [Youth] Training"},
        {"Subject": "Re: [Youth] Training", "X_Autoreply": "yes"},
        {"Subject": "Re: [Youth] Training", "X_Autorespond": "Anna is away"},
        {"Subject": "Re: [Youth] Training", "Precedence": "auto_reply"},
        {"Subject": "[Youth] Training", "Auto_Submitted": "auto-generated"},
    ],
)
def test_auto_replies_are_recognised(headers: dict[str, str]) -> None:
    msg = plain_message(**headers)
    assert is_auto_reply(msg)
    assert parse_bounce(msg) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Subject": "Re: [Youth] Training"},
        {"Subject": "Re: [Youth] Training", "Auto_Submitted": "no"},
        {"Subject": "Holiday plans for the office party", "Precedence": "bulk"},
    ],
)
def test_mail_written_by_a_person_is_no_auto_reply(headers: dict[str, str]) -> None:
    assert not is_auto_reply(plain_message(**headers))


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "compat32"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_truncated_bounces_never_raise(name: str, policy: email.policy.Policy) -> None:
    raw = (BOUNCES / name).read_bytes()
    for cut in range(0, len(raw), 61):
        msg = parse(raw[:cut], policy)
        assert isinstance(is_auto_reply(msg), bool)
        assert all(isinstance(e, BounceEvidence) for e in parse_bounce(msg))


def test_truncated_report_still_names_the_recipient() -> None:
    raw = (BOUNCES / "postfix_user_unknown.eml").read_bytes()
    cut = raw.index(b"Status: 5.1.1")
    assert failures(parse(raw[:cut])) == [("jonas.weber@example.net", "hard", "")]


BROKEN = {
    "no boundary": b"From: MAILER-DAEMON@mx.example.net\n"
    b"Content-Type: multipart/report; report-type=delivery-status\n\n"
    b"<ben@example.net>: 550 5.1.1 User unknown\n",
    "boundary never used": b"From: MAILER-DAEMON@mx.example.net\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="zz"\n\n'
    b"Final-Recipient: rfc822; ben@example.net\nAction: failed\n",
    "garbage content type": b"Content-Type: ;;;==\x00/\n\nhello\n",
    "empty": b"",
    "headers only": b"From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n",
    "undecodable bytes": b"From: \xff\xfe MAILER-DAEMON@mx.example.net\n"
    b"Subject: =?x-unknown?q?=FF?= \xc3\x28\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
    b"--b\nContent-Type: text/plain; charset=x-no-such-charset\n"
    b"Content-Transfer-Encoding: base64\n\n!!!not base64\xff\n"
    b"--b\nContent-Type: message/delivery-status; charset=idna\n\n"
    b"Reporting-MTA: dns; \xff\xfe\n\n"
    b"Final-Recipient: rfc822; ben@example.net\nAction: failed\nStatus: 5.1.1\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 \xe4\xf6\xfc unknown\n--b--\n",
    "delivery-status with no blocks": b'Content-Type: multipart/report; boundary="b"\n\n'
    b"--b\nContent-Type: message/delivery-status\n\n--b--\n",
    "global-delivery-status empty": b'Content-Type: multipart/report; boundary="b"\n\n'
    b"--b\nContent-Type: message/global-delivery-status\n\n--b--\n",
    "nested multiparts without parts": b'Content-Type: multipart/mixed; boundary="a"\n\n'
    b'--a\nContent-Type: multipart/report; boundary="b"\n\n--a--\n',
}


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "compat32"])
@pytest.mark.parametrize("raw", BROKEN.values(), ids=BROKEN.keys())
def test_broken_mime_never_raises(raw: bytes, policy: email.policy.Policy) -> None:
    msg = parse(raw, policy)
    assert isinstance(is_auto_reply(msg), bool)
    assert isinstance(parse_bounce(msg), list)


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "compat32"])
def test_undecodable_bytes_do_not_hide_a_readable_report(policy: email.policy.Policy) -> None:
    msg = parse(BROKEN["undecodable bytes"], policy)
    assert failures(msg) == [("ben@example.net", "hard", "5.1.1")]


def test_importing_dsn_leaves_flufl_bounce_unloaded() -> None:
    code = "import sys, clublist.bounces.dsn; sys.exit('flufl.bounce' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
