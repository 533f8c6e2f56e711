"""An internal error answers 451 and loses nothing: the sender's retry is delivered."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from pathlib import Path

import pytest
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.members import member_add
from clublist.club.store import Store
from clublist.daemon import Daemon, Overrides
from clublist.mail import rules

POST = "From: Anna <anna@example.org>\r\nSubject: hello\r\nMessage-ID: <f1@example.org>\r\n\r\nhi\r\n"


def test_a_rule_that_raises_answers_451_and_the_retry_is_delivered(
    store: Store, club_dir: Path, tmp_path: Path
) -> None:
    member_add(store, Actor.shell(), "anna@example.org", "Anna", ("youth",))
    member_add(store, Actor.shell(), "ben@example.org", "Ben", ("youth",))
    broken = threading.Event()
    broken.set()

    def explode(post: rules.Post) -> rules.Verdict | None:
        if broken.is_set():
            raise RuntimeError("a bug in a rule")
        return None

    faulty = (rules.Rule("explode", "raises while the test says so", explode), *rules.RULES)
    ready = threading.Event()
    with RemoteMTA() as sink:
        daemon = Daemon(
            club_dir,
            tmp_path / "state.sqlite3",
            Overrides(listen=("127.0.0.1", 0), smarthost=f"127.0.0.1:{sink.port}"),
            rules_in_force=faulty,
            on_ready=lambda d: ready.set(),
        )
        thread = threading.Thread(target=asyncio.run, args=(daemon.serve(),))
        thread.start()
        try:
            assert ready.wait(30)
            with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("anna@example.org", ["youth@myclub.org"], POST)
                assert refused.value.smtp_code == 451
                assert refused.value.smtp_error.startswith(b"4.3.0")
                assert b"Traceback" not in refused.value.smtp_error
                broken.clear()
                assert client.sendmail("anna@example.org", ["youth@myclub.org"], POST) == {}
            assert sink.wait_for(lambda s: s.delivered == {"anna@example.org", "ben@example.org"})
            assert len(sink.transactions) == 1
        finally:
            daemon.loop.call_soon_threadsafe(daemon.request_exit)
            thread.join(60)
    assert not thread.is_alive()
