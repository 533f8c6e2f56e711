"""Confirmation tokens: single use, bound to one address, and they expire (with an injected clock)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from pathlib import Path

from clublist.actions import Actor
from clublist.actions.members import member_add
from clublist.bot import CONFIRM_SECONDS, BotProcessor
from clublist.cli import main as command_group
from clublist.club.store import Store
from clublist.mail.handler import Target
from clublist.state import db as state

NOW = 1_800_000_000.0


def mail_bot(
    processor: BotProcessor,
    writer: state.Writer,
    store: Store,
    sender: str,
    body: str,
    now: float,
    *,
    authenticated: bool = False,
) -> str:
    raw = f"From: {sender}\r\nSubject: x\r\nMessage-ID: <{now}@example.org>\r\n\r\n{body}\r\n".encode()

    async def run() -> str:
        target = Target("bot", "bot@myclub.org")
        job = await processor.process(store.load(), target, sender, raw, now, authenticated=authenticated)
        await writer.run(job)
        row = await writer.run(
            lambda conn: conn.execute("SELECT content FROM messages ORDER BY id DESC LIMIT 1").fetchone()
        )
        return email.message_from_bytes(bytes(row[0]), policy=email.policy.default).get_content()

    return asyncio.run(run())


def test_a_token_expires(store: Store, club_dir: Path, tmp_path: Path) -> None:
    member_add(store, Actor.shell(), "anna@example.org", "Anna")
    path = tmp_path / "state.sqlite3"
    writer = state.Writer(path)
    try:
        processor = BotProcessor(command_group, club_dir, path, writer.run)
        asked = mail_bot(processor, writer, store, "anna@example.org", "join youth", NOW)
        token = re.search(r"confirm ([0-9a-f]{12})", asked)[1]  # type: ignore[index]
        late = mail_bot(
            processor, writer, store, "anna@example.org", f"confirm {token}", NOW + CONFIRM_SECONDS + 1
        )
        assert "already used or has expired" in late
        assert store.load().member("anna@example.org").lists == ()
        fresh = mail_bot(processor, writer, store, "anna@example.org", "join youth", NOW + 10)
        token = re.search(r"confirm ([0-9a-f]{12})", fresh)[1]  # type: ignore[index]
        done = mail_bot(processor, writer, store, "anna@example.org", f"confirm {token}", NOW + 20)
        assert "joined youth" in done
        assert store.load().member("anna@example.org").lists == ("youth",)
    finally:
        writer.close()


def test_an_authenticated_sender_needs_no_confirmation(store: Store, club_dir: Path, tmp_path: Path) -> None:
    member_add(store, Actor.shell(), "anna@example.org", "Anna")
    path = tmp_path / "state.sqlite3"
    writer = state.Writer(path)
    try:
        processor = BotProcessor(command_group, club_dir, path, writer.run)
        done = mail_bot(processor, writer, store, "anna@example.org", "join youth", NOW, authenticated=True)
        assert "joined youth" in done and "confirm" not in done
        assert store.load().member("anna@example.org").lists == ("youth",)
        asked = mail_bot(processor, writer, store, "anna@example.org", "leave youth", NOW + 10)
        assert "confirm" in asked and store.load().member("anna@example.org").lists == ("youth",)
    finally:
        writer.close()
