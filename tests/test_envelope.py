"""MAIL FROM and RCPT TO as the worker sends them: plain addresses as they are, others by aiosmtplib."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from mta import Behaviour, RemoteMTA, Transaction

from clublist.club.model import is_plain_address
from clublist.outbound.envelope import mail_from, rcpt

PLAIN = [
    "anna@example.org",
    "Anna.Berg+youth@Mail.Example.ORG",
    "o'brien@example.ie",
    "x_y-z=1#2@sub-domain.example",
    "a!b$c%d&e*f/g?h^i`j{k|l}m~n@example.org",
]
OTHER = [
    '"anna berg"@example.org',
    "jörg@bücher.example",
    "a..b@example.org",
    ".a@example.org",
    "a@[192.0.2.1]",
]


@pytest.mark.parametrize("address", PLAIN)
def test_a_plain_address_goes_out_as_aiosmtplib_would_quote_it(address: str) -> None:
    assert is_plain_address(address)
    assert quote_address(address) == f"<{address}>"


@pytest.mark.parametrize("address", OTHER)
def test_any_other_address_is_left_to_aiosmtplib(address: str) -> None:
    assert not is_plain_address(address)


@contextlib.asynccontextmanager
async def session(port: int) -> AsyncIterator[aiosmtplib.SMTP]:
    """An EHLO'd aiosmtplib connection to the test server; QUIT and closed at the end."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    try:
        await smtp.ehlo()
        yield smtp
        await smtp.quit()
    finally:
        smtp.close()


def test_replies_are_read_as_aiosmtplib_reads_them() -> None:
    replies = {"gone@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.7.1 greylisted"}
    replies["moved@example.org"] = "251 2.1.5 will forward"
    seen: list[str] = []

    def answer(address: str) -> str | None:
        seen.append(address)
        return replies.get(address)

    async def main(port: int) -> list[tuple[str, int | None]]:
        results: list[tuple[str, int | None]] = []
        async with session(port) as smtp:
            await smtp.mail("bounces@myclub.org")
            for address in ["anna@example.org", *replies, '"anna berg"@example.org']:
                try:
                    await rcpt(smtp, address)
                    results.append((address, None))
                except aiosmtplib.SMTPRecipientRefused as exc:
                    assert exc.recipient == address
                    results.append((address, exc.code))
        return results

    with RemoteMTA(Behaviour(rcpt=answer)) as mta:
        results = asyncio.run(main(mta.port))
    assert results == [
        ("anna@example.org", None),
        ("gone@example.org", 550),
        ("later@example.org", 451),
        ("moved@example.org", None),
        ('"anna berg"@example.org', None),
    ]
    assert seen == ["anna@example.org", *replies, '"anna berg"@example.org']


def test_mail_from_is_sent_and_refused_as_aiosmtplib_would() -> None:
    seen: list[tuple[str, list[str]]] = []
    refusing = "bounces+refused@myclub.org"

    def answer(sender: str) -> str | None:
        return "553 5.7.1 sender rejected" if sender == refusing else None

    async def main(port: int) -> list[tuple[str, int | None]]:
        results: list[tuple[str, int | None]] = []
        async with session(port) as smtp:
            for sender in ["bounces+anna=example.org@myclub.org", refusing, "", '"odd sender"@myclub.org']:
                try:
                    await mail_from(smtp, sender, ["BODY=8BITMIME"])
                    await rcpt(smtp, "anna@example.org")
                    await smtp.data(b"Subject: hi\r\n\r\nHi.\r\n")
                    results.append((sender, None))
                except aiosmtplib.SMTPSenderRefused as exc:
                    assert exc.sender == sender
                    results.append((sender, exc.code))
                    await smtp.rset()
        return results

    def delivered(transaction: Transaction) -> None:
        seen.append((transaction.mail_from, transaction.mail_options))

    with RemoteMTA(Behaviour(mail=answer, delivered=delivered)) as mta:
        results = asyncio.run(main(mta.port))
    assert results == [
        ("bounces+anna=example.org@myclub.org", None),
        (refusing, 553),
        ("", None),
        ('"odd sender"@myclub.org', None),
    ]
    assert seen == [
        ("bounces+anna=example.org@myclub.org", ["BODY=8BITMIME"]),
        ("<>", ["BODY=8BITMIME"]),
        ('"odd sender"@myclub.org', ["BODY=8BITMIME"]),
    ]
