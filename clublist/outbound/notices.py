"""Notices to people (the administrator, list owners), built once and queued like any mail.

The texts are plain 7-bit paragraphs; the RFC 3464 reports are :mod:`clublist.outbound.reports`.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formataddr

from clublist.club.model import Site
from clublist.outbound import reports
from clublist.state import queue


def queue_admin_notice(conn: sqlite3.Connection, site: Site, notice: EmailMessage, now: float) -> None:
    """Queue a notice to the administrator from the null sender.

    Should the administrator's mail refuse it, the refusal comes back to nobody: a
    notice about bounces must never itself become a bounce (and another notice).
    """
    queue.enqueue(
        conn,
        kind="notice",
        sender="",
        recipients=[site.site.admin],
        content=bytes(notice),
        now=now,
        subject=str(notice["Subject"]),
    )


def admin_notice(site: Site, subject: str, text: str) -> EmailMessage:
    # From postmaster@: a reply reaches the administrator, not the bounce address.
    return reports.notice(
        sender=formataddr(("clublist", f"postmaster@{site.domain}")),
        to=site.site.admin,
        subject=subject,
        text=text,
        message_id_domain=site.domain,
    )


def mail_text(opening: str, entries: Iterable[tuple[str, str]], closing: str) -> str:
    """Paragraphs and indented entries, wrapped to 76 columns so the mail stays plain 7-bit text."""

    def wrap(text: str, indent: str = "") -> str:
        return textwrap.fill(
            text,
            76,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )

    lines = [wrap(opening), ""]
    for heading, detail in entries:
        lines += [wrap(heading, "  "), wrap(detail, "    ")]
    return "\n".join([*lines, "", wrap(closing), ""])
