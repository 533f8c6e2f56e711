"""``clublist remind`` as cron and an administrator run it: the real console script, real files,
one state database, and a real SMTP sink for ``--send``.

The reminders that must be due are written into reminders.toml by hand, ten minutes in the
past (within the default lateness of six hours), so no test waits on the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CLUBLIST, Ran, Runner
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.cli.app import App
from clublist.club.store import Store
from clublist.state import db as state


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "remind.sqlite3"


@pytest.fixture
def club(store: Store) -> Store:
    member_add(store, Actor.shell(), "anna@example.org", "Anna", ("youth",))
    member_add(store, Actor.shell(), "ben@example.org", "Ben", ("youth",))
    return store


@pytest.fixture
def clr(cli: Runner, state_path: Path, club: Store) -> Runner:
    """The CLI on the fixture's club (youth: anna, ben) and one state database."""

    def run(*args: str, input: str | None = None, check: bool = True) -> Ran:
        return cli("--state", str(state_path), *args, input=input, check=check)

    return run


def write_due_reminder(club_dir: Path, ago: timedelta = timedelta(minutes=10)) -> datetime:
    """A one-off reminder to youth that fell due *ago*, as a person would write it by hand."""
    due = (datetime.now(UTC) - ago).replace(microsecond=0)
    (club_dir / "reminders.toml").write_text(
        "# written by hand\n\n"
        '[[reminder]]\nid = "soon"\nto = "youth"\nsubject = "Training tonight"\ntext = "Hall 2."\n'
        f"at = {due.isoformat()}\nstart = {(due - timedelta(hours=1)).isoformat()}\n"
    )
    return due


def queued(clr: Runner) -> dict[str, set[str]]:
    """Queue id -> recipients, for every message in the queue whatever its state."""
    found: dict[str, set[str]] = {}
    for row in json.loads(clr("queue", "ls", "--recipients", "--status", "all", "--json").stdout):
        found.setdefault(row["queue_id"], set()).add(row["recipient"])
    return found


def test_remind_run_twice_queues_one_post(clr: Runner, club_dir: Path) -> None:
    write_due_reminder(club_dir)
    first = clr("remind")
    second = clr("remind")
    assert (
        first.stdout.startswith("queued soon of ")
        and "to youth@myclub.org 'Training tonight'" in first.stdout
    )
    assert first.stdout.rstrip().endswith("(2 recipients)")
    assert second.stdout == ""  # cron mails output: a run with nothing due is silent
    assert list(queued(clr).values()) == [{"anna@example.org", "ben@example.org"}]


def test_two_remind_processes_started_together_queue_one_post(
    clr: Runner, club_dir: Path, state_path: Path
) -> None:
    write_due_reminder(club_dir)
    # No state database yet: the runs also race to create and migrate it.
    env = {**os.environ, "CLUBLIST_DIR": str(club_dir), "NO_COLOR": "1"}
    command = [CLUBLIST, "--state", str(state_path), "remind"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert sorted(out.count("queued soon") for out, _err in outputs) == [0, 0, 0, 1]
    assert len(queued(clr)) == 1


def test_dry_run_shows_what_would_go_and_changes_nothing(clr: Runner, club_dir: Path) -> None:
    write_due_reminder(club_dir)
    result = clr("remind", "--dry-run")
    assert result.stdout.startswith("would queue soon of ") and "(2 recipients)" in result.stdout
    assert clr("remind", "--dry-run").stdout == result.stdout
    assert queued(clr) == {}
    assert clr("remind").stdout.startswith("queued soon")


def test_an_occurrence_missed_by_more_than_max_late_is_skipped_and_reported(
    clr: Runner, club_dir: Path, state_path: Path
) -> None:
    clr("remind")
    write_due_reminder(club_dir, ago=timedelta(hours=2))
    conn = state.connect(state_path)  # the cron job last ran three hours ago, then stopped
    with state.transaction(conn):
        conn.execute("UPDATE reminder_cursor SET last_run = ?", (time.time() - 3 * 3600,))
    conn.close()
    result = clr("remind", "--max-late", "1h")
    assert result.stdout.startswith("skipped soon of ") and "missed by 2h" in result.stdout
    assert clr("remind").stdout == ""  # recorded: never sent late afterwards
    assert queued(clr) == {}
    bad = clr("remind", "--max-late", "soon", check=False)
    assert bad.returncode == 1 and "not a duration" in bad.stderr


def test_json_output_of_a_run(clr: Runner, club_dir: Path) -> None:
    due = write_due_reminder(club_dir)
    result = json.loads(clr("remind", "--json").stdout)
    (firing,) = result["queued"]
    assert firing["reminder_id"] == "soon" and firing["recipients"] == 2
    assert datetime.fromisoformat(firing["occurrence"]) == due
    assert datetime.fromisoformat(firing["occurrence"]).utcoffset() in (
        timedelta(hours=1),
        timedelta(hours=2),
    )
    assert result["skipped"] == [] and result["dry_run"] is False


def test_send_delivers_the_decorated_post_at_once(clr: Runner, club_dir: Path) -> None:
    write_due_reminder(club_dir)
    with RemoteMTA() as mta:
        clr("config", "set", "delivery.mode", "smarthost")
        clr("config", "set", "delivery.smarthost", f"127.0.0.1:{mta.port}")
        result = clr("remind", "--send")
    assert result.stdout.endswith("reminders: 2 sent, 0 deferred, 0 failed\n")
    assert mta.delivered == {"anna@example.org", "ben@example.org"}
    message = mta.transactions[0].message
    assert message["Subject"] == "[Youth] Training tonight"
    assert message["List-Id"] == "Youth <youth.myclub.org>"
    assert message["From"].addresses[0].addr_spec == "bot@myclub.org"
    assert mta.transactions[0].mail_from == "bounces@myclub.org"


def test_add_ls_rm_round_trip(clr: Runner, club_dir: Path, tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text("Hall 2.\n\nBring shoes.\n")
    added = clr(
        "remind", "add", "--to", "youth", "--every", "monday 18:00", "--subject", "Training",
        "--text-file", str(text_file), "--count", "4", "--json",
    )  # fmt: skip
    record = json.loads(added.stdout)
    assert record["ok"] and record["message"].startswith("added reminder ")
    reminder_id = record["record"]["id"]
    clr(
        "remind",
        "add",
        "--to",
        "anna@example.org",
        "--at",
        "tomorrow 18:00",
        "--subject",
        "Fees",
        "--text",
        "Pay.",
    )
    rows = json.loads(clr("remind", "ls", "--json").stdout)
    assert rows[0]["id"] == reminder_id
    weekly = rows[0]
    assert (weekly["kind"], weekly["expr"], weekly["count"]) == ("every", "monday 18:00", 4)
    assert weekly["text"] == "Hall 2.\n\nBring shoes.\n"
    following = datetime.fromisoformat(weekly["next"])
    assert (following.weekday(), following.hour, following.minute) == (0, 18, 0)
    assert following.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # shown in Europe/Berlin
    table = clr("remind", "ls").stdout
    assert "every monday 18:00, 4 times" in table and "anna@example.org" in table
    assert clr("remind", "rm", reminder_id).stdout.startswith(f"removed reminder {reminder_id}")
    assert [r["to"] for r in json.loads(clr("remind", "ls", "--json").stdout)] == ["anna@example.org"]


def test_text_from_standard_input(clr: Runner) -> None:
    clr(
        "remind",
        "add",
        "--to",
        "youth",
        "--at",
        "in 2 hours",
        "--subject",
        "S",
        "--text-file",
        "-",
        input="From stdin\n",
    )
    assert json.loads(clr("remind", "ls", "--json").stdout)[0]["text"] == "From stdin\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "2020-01-01 18:00"], "in the past"),
        (["--at", "2026-10-25 02:30"], "happens twice"),
        (["--every", "moonday 18:00"], "cannot understand"),
        (["--at", "tomorrow 18:00", "--cron", "0 18 * * 1"], "not --at and --cron"),
    ],
)
def test_add_errors_say_why_without_a_traceback(clr: Runner, args: list[str], message: str) -> None:
    result = clr("remind", "add", "--to", "youth", "--subject", "S", "--text", "T", *args, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_run_options_belong_to_the_bare_command(clr: Runner) -> None:
    result = clr("remind", "--dry-run", "ls", check=False)
    assert result.returncode == 2 and "bare 'clublist remind'" in result.stderr


def test_by_mail_text_files_are_refused(
    club: Store, club_dir: Path, state_path: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not mail me")
    anna = App(club_dir, state_path, actor=Actor("anna@example.org", False), by_mail=True)
    args = ["remind", "add", "--to", "youth", "--every", "monday 18:00", "--subject", "S", "--text-file"]
    result = CliRunner().invoke(main, [*args, str(secret)], obj=anna)
    assert result.exit_code == 1 and "reads a file on the server" in result.output
    result = CliRunner().invoke(main, [*args[:-1], "--text", "Bring shoes"], obj=anna)
    assert result.exit_code == 0, result.output
    assert "do not mail me" not in (club_dir / "reminders.toml").read_text()
    result = CliRunner().invoke(main, ["remind"], obj=anna)
    assert result.exit_code == 1 and "only the club's administrator" in result.output
