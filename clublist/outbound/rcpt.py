"""RCPT TO for the worker: one command per recipient, thousands per big post.

aiosmtplib's ``SMTP.rcpt`` re-parses every address with ``email.utils.parseaddr`` before
quoting it, which took about as long as the rest of clublist's work for a recipient (7-14 us).
The addresses clublist sends to were checked when they were added; one in plain dot-atom form,
for which that parse can only give the address back unchanged, goes out as it is.  Any other
(a quoted local part, UTF-8) takes aiosmtplib's own way.
"""

from __future__ import annotations

import aiosmtplib

from clublist.club.model import is_plain_address

_ACCEPTED = (250, 251)  # what aiosmtplib's rcpt() accepts


async def rcpt(smtp: aiosmtplib.SMTP, recipient: str) -> None:
    """``RCPT TO:<recipient>``; raises SMTPRecipientRefused on a refusal, as ``smtp.rcpt`` does."""
    if not is_plain_address(recipient):  # UTF-8 only goes where the transaction asked for SMTPUTF8
        await smtp.rcpt(recipient, encoding="ascii" if recipient.isascii() else "utf-8")
        return
    response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in _ACCEPTED:
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
