"""The daemon's log: one JSON object a line with --log-format json, and none lost when it stops."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

from daemon import DaemonProcess


def test_every_line_is_written_by_the_time_the_daemon_has_stopped(club_dir: Path, tmp_path: Path) -> None:
    daemon = DaemonProcess(club_dir, tmp_path / "state.sqlite3", extra=["--log-format", "json"]).start()
    for n in range(20):  # refused senders: a line each, logged while the daemon runs
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.ehlo()
            client.mail(f"stranger{n}@example.com")
            code, _ = client.rcpt("youth@myclub.org")
            assert code == 550
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.lines]  # each line one JSON object
    messages = [entry["message"] for entry in entries]
    refused = [m for m in messages if m.startswith("refused RCPT youth@myclub.org from stranger")]
    assert len(refused) == 20
    assert messages[-2].startswith("shutting down") and messages[-1] == "stopped"
    assert {entry["logger"].split(".")[0] for entry in entries} == {"clublist"}
