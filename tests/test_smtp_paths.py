"""The listener reads MAIL FROM and RCPT TO paths as aiosmtpd does, plain ones without its parser."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP

from clublist.mail.handler import Listener, SessionLimits

PATHS = [
    "<anna@example.org>",
    "<anna@example.org> SIZE=3000 BODY=8BITMIME",
    "  <Anna.Berg+youth@Mail.Example.ORG>",
    "<o'brien@example.ie> SMTPUTF8",
    "<anna@example.org>X",
    "<anna@example.org> (a comment) SIZE=10",
    "<anna@example.org>\t SIZE=10 ",
    "<>",
    "",
    "anna@example.org",
    "anna@example.org SIZE=10",
    '<"anna berg"@example.org>',
    "<jörg@bücher.example>",
    "<a..b@example.org>",
    "<@relay.example:anna@example.org>",
    "<anna@localhost>",
    "<anna@[192.0.2.1]>",
    "<anna@example.org",
    "<" + "a" * 65 + "@example.org>",
    "<" + "a" * 64 + "@example.org>",
    "<anna>@example.org>",
]


@pytest.fixture(scope="module")
def listener() -> Listener:
    loop = asyncio.new_event_loop()
    try:
        return Listener(object(), limits=SessionLimits(10, 10), loop=loop)
    finally:
        loop.close()


@pytest.mark.parametrize("path", PATHS)
def test_a_path_is_read_as_aiosmtpd_reads_it(listener: Listener, path: str) -> None:
    assert listener._getaddr(path) == SMTP._getaddr(listener, path)


def test_a_plain_path_is_read_without_the_header_parser(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: SMTP, arg: str) -> None:
        raise AssertionError(f"aiosmtpd's parser was asked for {arg!r}")

    monkeypatch.setattr(SMTP, "_getaddr", refuse)
    assert listener._getaddr("<anna@example.org> SIZE=3000") == ("anna@example.org", "SIZE=3000")
