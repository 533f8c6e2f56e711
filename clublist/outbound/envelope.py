"""MAIL FROM and RCPT TO for the worker: one RCPT per recipient, one MAIL per VERP recipient.

aiosmtplib's ``SMTP.mail`` and ``SMTP.rcpt`` re-parse every address with
``email.utils.parseaddr`` before quoting it, which took about as long as the rest of
clublist's work for a recipient (7-14 us a RCPT, more for a MAIL).  The addresses clublist
sends from and to were checked when they were made or added; one in plain dot-atom form,
for which that parse can only give the address back unchanged, goes out as it is.  Any other
(a quoted local part, UTF-8, the null sender) takes aiosmtplib's own way.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosmtplib

from clublist.club.model import is_plain_address

_ACCEPTED = (250, 251)  # what aiosmtplib's rcpt() accepts


async def mail_from(smtp: aiosmtplib.SMTP, sender: str, options: Sequence[str] = ()) -> None:
    """``MAIL FROM:<sender>`` with *options*; raises SMTPSenderRefused on a refusal, as ``smtp.mail`` does."""
    if not is_plain_address(sender) or smtp.is_ehlo_or_helo_needed:  # aiosmtplib says EHLO first
        await smtp.mail(sender, options=list(options))
        return
    arguments = [option.encode("ascii") for option in options]
    response = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *arguments)
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def rcpt(smtp: aiosmtplib.SMTP, recipient: str) -> None:
    """``RCPT TO:<recipient>``; raises SMTPRecipientRefused on a refusal, as ``smtp.rcpt`` does."""
    if not is_plain_address(recipient):  # UTF-8 only goes where the transaction asked for SMTPUTF8
        await smtp.rcpt(recipient, encoding="ascii" if recipient.isascii() else "utf-8")
        return
    response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in _ACCEPTED:
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
