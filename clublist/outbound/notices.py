"""Notices to people (members, list owners, the administrator), built once and queued like any mail.

Texts members and owners receive come from templates (:mod:`clublist.club.templates`);
the RFC 3464 reports are :mod:`clublist.outbound.reports`.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from email.utils import formataddr

from clublist.club import templates
from clublist.club.model import MailingList, Site
from clublist.club.store import Club
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


def queue_template(
    conn: sqlite3.Connection,
    club: Club,
    mailing_list: MailingList | None,
    template: str,
    to: Sequence[str],
    variables: dict[str, str],
    now: float,
    *,
    reply_to: str = "",
    message_id: str = "",
) -> str:
    """Render a template (:mod:`clublist.club.templates`) and queue it to *to*, from the bot.

    Sent from bot@, so a reply to a welcome ("unsubscribe") or a hold notice ("approve")
    reaches the bot; bounces go to the bounce address.  Returns the queue id.
    """
    text = templates.render(club.directory, club.site, mailing_list, template, variables)
    title = mailing_list.display_name if mailing_list is not None else club.site.site.name
    notice = reports.notice(
        sender=formataddr((title, club.site.bot_address)),
        to=list(to),
        subject=reports.one_line(text.subject),
        text=text.body,
        message_id_domain=club.site.domain,
    )
    if reply_to:
        reports.put_header(notice, "Reply-To", reply_to)
    if message_id:
        notice.replace_header("Message-ID", message_id)
    return queue.enqueue(
        conn,
        kind="notice",
        sender=club.site.bounce_address,
        recipients=to,
        content=bytes(notice),
        now=now,
        list_name=mailing_list.name if mailing_list is not None else None,
        subject=str(notice["Subject"]),
    )
