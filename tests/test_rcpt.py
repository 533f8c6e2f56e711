"""RCPT TO as the worker sends it: the plain address as it is, anything else through aiosmtplib."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from mta import Behaviour, RemoteMTA

from clublist.club.model import is_plain_address
from clublist.outbound.rcpt import rcpt

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


def test_replies_are_read_as_aiosmtplib_reads_them() -> None:
    replies = {"gone@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.7.1 greylisted"}
    replies["moved@example.org"] = "251 2.1.5 will forward"
    seen: list[str] = []

    def answer(address: str) -> str | None:
        seen.append(address)
        return replies.get(address)

    async def main(port: int) -> list[tuple[str, int | None]]:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        results: list[tuple[str, int | None]] = []
        try:
            await smtp.ehlo()
            await smtp.mail("bounces@myclub.org")
            for address in ["anna@example.org", *replies, '"anna berg"@example.org']:
                try:
                    await rcpt(smtp, address)
                    results.append((address, None))
                except aiosmtplib.SMTPRecipientRefused as exc:
                    assert exc.recipient == address
                    results.append((address, exc.code))
            await smtp.quit()
        finally:
            smtp.close()
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
