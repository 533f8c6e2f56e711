"""A post accepted with 250 is never lost: SIGKILL in the middle of a fan-out, start again, all arrive."""

from __future__ import annotations

import collections
import signal
import smtplib
from pathlib import Path

import pytest
from daemon import DaemonProcess
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.roster import member_import
from clublist.club.store import Store


# One round of 1,000 in the default run (the kill still lands with three quarters of the
# fan-out to go); CI's slow step (``pytest -m slow``) runs ten rounds of 2,000.
@pytest.mark.parametrize(("rounds", "members"), [(1, 1000), pytest.param(10, 2000, marks=pytest.mark.slow)])
def test_sigkill_mid_fan_out_loses_nothing(
    store: Store,
    club_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rounds: int,
    members: int,
) -> None:
    csv = "email,name,lists\n" + "".join(f"m{n}@example.org,M {n},youth\n" for n in range(members))
    member_import(store, Actor.shell(), csv)
    # Small transactions, two at a time, so a kill lands in the middle of the fan-out.
    config_set(store, Actor.shell(), "delivery.max_recipients_per_transaction", 20)
    config_set(store, Actor.shell(), "delivery.per_destination_concurrency", 2)
    state = tmp_path / "var" / "state.sqlite3"
    duplicates_per_round = []
    with RemoteMTA() as sink:
        smarthost = f"127.0.0.1:{sink.port}"
        for round_number in range(rounds):
            message_id = f"<crash{round_number}@example.org>"
            post = (
                f"From: M 0 <m0@example.org>\r\nSubject: round {round_number}\r\n"
                f"Message-ID: {message_id}\r\n\r\nhi\r\n"
            )

            def received(sink: RemoteMTA, message_id: str = message_id) -> collections.Counter[str]:
                return collections.Counter(
                    r for t in sink.transactions if t.message["Message-ID"] == message_id for r in t.rcpt_tos
                )

            daemon = DaemonProcess(club_dir, state, smarthost=smarthost).start()
            with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
                assert client.sendmail("m0@example.org", ["youth@myclub.org"], post) == {}
            assert sink.wait_for(lambda s: sum(received(s).values()) >= members // 4, timeout=60)
            daemon.stop(signal.SIGKILL)
            partial = sum(received(sink).values())
            with DaemonProcess(club_dir, state, smarthost=smarthost):
                assert sink.wait_for(lambda s: len(received(s)) == members, timeout=120), (
                    f"round {round_number}: {len(received(sink))} of {members} delivered"
                )
            counts = received(sink)
            assert set(counts) == {f"m{n}@example.org" for n in range(members)}
            assert partial < members, "the kill came after the fan-out had finished"
            duplicates_per_round.append(sum(c - 1 for c in counts.values()))
    with capsys.disabled():
        print(f"\nSIGKILL mid fan-out, {rounds} rounds of {members}: duplicates {duplicates_per_round}")
