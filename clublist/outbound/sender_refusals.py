"""Refusals of clublist's own sending: the next hop refuses its envelope sender, relaying or login.

A refusal at MAIL FROM (``553 5.1.8 Sender address rejected: domain not found``, ``501 5.1.7``,
``550 Sender rejected``) comes before any recipient is named, and a relay or authentication
refusal at RCPT (``550 Relaying denied``, ``554 5.7.1 Relay access denied``, ``530 5.7.0
Authentication required``) says the server will not take the club's mail at all.  Neither is
about a member's address: the deliveries are deferred (never failed, never a bounce) with
:data:`MARK` at the end of their reply, so even a give-up after days charges nobody, and the
administrator is alerted once per cause a day (the table ``sender_alerts``), with the reply text.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from email.utils import formataddr
from typing import Literal

from clublist.outbound import reports
from clublist.outbound.notices import mail_text
from clublist.state import queue

MARK = " (a refusal of clublist's own sending, not of this recipient)"
ALERT_EVERY = 24 * 3600  # a cause that lasts is brought up again once a day

Stage = Literal["MAIL FROM", "RCPT"]

# Relay refusals name relaying; "User unknown in relay recipient table" (Postfix) names a
# recipient and is not one.  Authentication refusals ask for SMTP AUTH (530, 5.7.57 at Microsoft).
_RELAY_OR_AUTH = re.compile(
    r"\brelay(ing)?\s+(access\s+)?(is\s+)?(denied|not\s+(permitted|allowed)|prohibited|refused)"
    r"|\b(unable|not\s+permitted|not\s+allowed|cannot)\s+to\s+relay"
    r"|\bdo(es)?\s*n[o']t\s+relay|\bno\s+relay"
    r"|authentication\s+(is\s+)?required|\bnot\s+authenticated\b|\bmust\s+(first\s+)?authenticate"
    r"|\bauth(entication)?\s+(first|needed)|\b5\.7\.57\b",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"<[^>]*>|\S+@\S+")


def is_relay_or_auth_refusal(code: int, text: str) -> bool:
    """Whether a refusal at RCPT is about relaying or SMTP AUTH, with or without an enhanced code."""
    return code == 530 or bool(_RELAY_OR_AUTH.search(text))


def is_sending_refusal(reply: str) -> bool:
    """Whether a stored reply is marked as a refusal of clublist's own sending."""
    return reply.endswith(MARK)


@dataclass(frozen=True)
class Refusal:
    """One refusal of the club's sending as a server gave it."""

    stage: Stage
    host: str
    code: int
    text: str
    sender: str

    @property
    def reply(self) -> str:
        return " ".join(f"{self.code} {self.text}".split())

    def outcome(self, delivery_id: int) -> RefusedOutcome:
        """The recipient's outcome: deferred, marked, with the server's words."""
        return RefusedOutcome(delivery_id, "deferred", self.code, self.reply + MARK, self.host, self)

    @property
    def cause(self) -> str:
        """What makes two refusals the same problem: the stage and the reply without addresses."""
        words = _ADDRESS.sub("", self.reply).lower()
        return f"{self.stage}: {' '.join(words.split())}"


@dataclass(frozen=True)
class RefusedOutcome(queue.Outcome):
    """A deferral that carries the refusal, for the alert written with it."""

    refusal: Refusal | None = None


def alert_once(
    conn: sqlite3.Connection,
    refusals: list[Refusal],
    *,
    domain: str,
    admin: str,
    now: float,
) -> list[str]:
    """Queue one alert to the administrator per cause not brought up in the last day; their causes."""
    alerted = []
    for refusal in {r.cause: r for r in refusals}.values():
        row = conn.execute("SELECT sent FROM sender_alerts WHERE cause = ?", (refusal.cause,)).fetchone()
        if row is not None and row[0] > now - ALERT_EVERY:
            continue
        conn.execute(
            "INSERT INTO sender_alerts (cause, sent) VALUES (?, ?)"
            " ON CONFLICT (cause) DO UPDATE SET sent = excluded.sent",
            (refusal.cause, now),
        )
        notice = _alert(refusal, domain, admin)
        queue.enqueue(
            conn,
            kind="notice",
            sender="",
            recipients=[admin],
            content=bytes(notice),
            now=now,
            subject=str(notice["Subject"]),
        )
        alerted.append(refusal.cause)
    return alerted


def _alert(refusal: Refusal, domain: str, admin: str) -> reports.EmailMessage:
    if refusal.stage == "MAIL FROM":
        opening = (
            f"The mail server {refusal.host} refused clublist's envelope sender"
            f" {refusal.sender or '<>'} (at MAIL FROM), so it took none of the club's mail:"
        )
        fix = (
            f"Usually the DNS of {domain} is broken (the sender's domain needs an MX or A record"
            " and should have SPF), or the server does not accept this sender from this host."
        )
    else:
        opening = (
            f"The mail server {refusal.host} refused to relay the club's mail (at RCPT): it wants"
            " SMTP authentication, or does not relay for this host:"
        )
        fix = (
            "Set delivery.smarthost_username and delivery.smarthost_password_file, or allow this"
            " host's IP address in the server's relay rules."
        )
    text = mail_text(
        opening,
        [(refusal.reply, "")],
        f"{fix}  No member is charged with a bounce for this: the mail waits in the queue and is"
        " tried again on the retry schedule.  When it is fixed: clublist queue retry",
    )
    return reports.notice(
        sender=formataddr(("clublist", f"postmaster@{domain}")),
        to=admin,
        subject=f"Delivery problem: {refusal.host} refused the club's sender",
        text=text,
        message_id_domain=domain,
    )
