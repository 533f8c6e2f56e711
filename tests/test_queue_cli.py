"""``clublist queue`` and ``clublist status`` as an administrator uses them: real subprocesses.

The queue is seeded through clublist.state.db and clublist.state.queue; ``flush``
delivers to a real SMTP sink on loopback, and a stand-in daemon holding the
state lock shows that retry and flush wake it with SIGUSR1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Ran, Runner
from mta import Behaviour, RemoteMTA

from clublist.actions import Actor
from clublist.cli import main
from clublist.cli.app import App
from clublist.state import db as state
from clublist.state import queue

MESSAGE = (
    b"From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: =?utf-8?q?Training_=C3=BCber?=\r\n"
    b"Message-ID: <1@example.org>\r\n\r\nTraining is at six.\r\n"
)
HOUR, DAY = 3600, 86400

# A stand-in for `clublist run`: holds the daemon lock and reports SIGUSR1.
DAEMON = """
import signal, sys
from pathlib import Path
from clublist.state.db import DaemonLock

DaemonLock(Path(sys.argv[1])).acquire()

def woken(*_):
    print("woken", flush=True)
    sys.exit(0)

signal.signal(signal.SIGUSR1, woken)
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere" / "queue.sqlite3"


@pytest.fixture
def clq(cli: Runner, state_path: Path) -> Runner:
    """The CLI on the fixture's lists.d and on a state database outside the default place."""

    def run(*args: str, input: str | None = None, check: bool = True) -> Ran:
        return cli("--state", str(state_path), *args, input=input, check=check)

    return run


def enqueue(path: Path, recipients: list[str], *, age: float = 0, subject: str = "Training") -> str:
    conn = state.connect(path)
    try:
        with state.transaction(conn):
            return queue.enqueue(
                conn,
                kind="post",
                sender="bounces@myclub.org",
                recipients=recipients,
                content=MESSAGE,
                now=time.time() - age,
                list_name="youth",
                subject=subject,
            )
    finally:
        conn.close()


def record(path: Path, queue_id: str, replies: dict[str, tuple[str, int, str]], *, now: float) -> None:
    """Store an outcome (status, code, reply) for some recipients of a message."""
    conn = state.connect(path)
    try:
        by_recipient = {r.recipient: r.id for r in queue.rows(conn, "all", queue_id)}
        outcomes = [
            queue.Outcome(by_recipient[rcpt], status, code, reply, "mx.example.org")  # type: ignore[arg-type]
            for rcpt, (status, code, reply) in replies.items()
        ]
        with state.transaction(conn):
            queue.record(conn, outcomes, now, queue.RetryPolicy())
    finally:
        conn.close()


@dataclass(frozen=True)
class Seeded:
    training: str  # 3h old: anna pending, bob deferred (next try in 5m), carl sent
    bounced: str  # 2d old: dora failed
    meeting: str  # 1d old: erik deferred (next try in 5m)


@pytest.fixture
def seeded(state_path: Path) -> Seeded:
    training = enqueue(state_path, ["anna@example.org", "bob@example.org", "carl@example.org"], age=3 * HOUR)
    bounced = enqueue(state_path, ["dora@example.org"], age=2 * DAY, subject="Old news")
    meeting = enqueue(state_path, ["erik@example.org"], age=DAY, subject="Meeting")
    # 30s ahead, so a retry planned 300s after it reads "in 5m" however long the CLI takes to start.
    later = time.time() + 30
    record(
        state_path,
        training,
        {
            "bob@example.org": ("deferred", 451, "451 4.2.0 mailbox busy"),
            "carl@example.org": ("sent", 250, "250 2.0.0 OK"),
        },
        now=later,
    )
    record(state_path, bounced, {"dora@example.org": ("failed", 550, "550 5.1.1 no such user")}, now=later)
    record(state_path, meeting, {"erik@example.org": ("deferred", 421, "421 4.7.0 slow down")}, now=later)
    return Seeded(training, bounced, meeting)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The plain table `queue ls --recipients` prints in a pipe, by recipient (columns split on 2+ spaces)."""
    lines = stdout.splitlines()
    assert lines[0].split() == [
        "queue",
        "id",
        "age",
        "recipient",
        "status",
        "attempts",
        "next",
        "try",
        "last",
        "error",
    ]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    return {row[2]: row for row in rows}


def as_time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return when


# --- queue ls ---------------------------------------------------------------------------


def test_ls_recipients_shows_the_waiting_deliveries_like_mailq(clq: Runner, seeded: Seeded) -> None:
    rows = table_rows(clq("queue", "ls", "--recipients").stdout)
    assert set(rows) == {"anna@example.org", "bob@example.org", "erik@example.org"}
    assert rows["anna@example.org"] == [seeded.training, "3h", "anna@example.org", "pending", "0", "now"]
    assert rows["bob@example.org"] == [
        seeded.training,
        "3h",
        "bob@example.org",
        "deferred",
        "1",
        "in 5m",
        "451 4.2.0 mailbox busy",
    ]
    assert rows["erik@example.org"][1] == "1d"


def test_ls_recipients_status_all_shows_sent_and_failed_too(clq: Runner, seeded: Seeded) -> None:
    rows = table_rows(clq("queue", "ls", "--recipients", "--status", "all").stdout)
    assert len(rows) == 5
    assert rows["dora@example.org"][1:5] == ["2d", "dora@example.org", "failed", "1"]
    assert rows["dora@example.org"][-1] == "550 5.1.1 no such user"
    assert rows["carl@example.org"][3] == "sent"


def test_ls_recipients_json_has_utc_times_and_the_raw_fields(clq: Runner, seeded: Seeded) -> None:
    rows = json.loads(clq("queue", "ls", "--recipients", "--status", "all", "--json").stdout)
    by_recipient = {r["recipient"]: r for r in rows}
    assert len(rows) == 5
    bob = by_recipient["bob@example.org"]
    assert {k: bob[k] for k in ("queue_id", "kind", "list_name", "status", "attempts", "last_code")} == {
        "queue_id": seeded.training,
        "kind": "post",
        "list_name": "youth",
        "status": "deferred",
        "attempts": 1,
        "last_code": 451,
    }
    assert (bob["last_reply"], bob["last_host"]) == ("451 4.2.0 mailbox busy", "mx.example.org")
    now = datetime.now(UTC)
    assert 3 * HOUR - 60 < (now - as_time(bob["created"])).total_seconds() < 3 * HOUR + 60
    assert 200 < (as_time(bob["next_attempt"]) - now).total_seconds() < 340
    assert by_recipient["carl@example.org"]["next_attempt"] is None
    failed = json.loads(clq("queue", "ls", "--recipients", "--status", "failed", "--json").stdout)
    assert [r["recipient"] for r in failed] == ["dora@example.org"]


def test_ls_on_an_empty_queue_says_so(clq: Runner) -> None:
    assert clq("queue", "ls", "--recipients").stdout == "the queue is empty\n"
    assert json.loads(clq("queue", "ls", "--recipients", "--json").stdout) == []


def message_lines(stdout: str) -> list[list[str]]:
    """The plain table `queue ls` prints in a pipe, one row per message."""
    lines = stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "queue id",
        "list",
        "age",
        "waiting",
        "deferred",
        "failed",
        "next try",
        "last reply",
    ]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_ls_shows_one_line_per_waiting_message_oldest_first(clq: Runner, seeded: Seeded) -> None:
    assert message_lines(clq("queue", "ls").stdout) == [
        [seeded.meeting, "youth", "1d", "0", "1", "0", "in 5m", "421 4.7.0 slow down"],
        [seeded.training, "youth", "3h", "1", "1", "0", "now", "451 4.2.0 mailbox busy"],
    ]


def test_ls_filters_by_status_and_limits(clq: Runner, seeded: Seeded) -> None:
    every = json.loads(clq("queue", "ls", "--status", "all", "--json").stdout)
    assert [m["queue_id"] for m in every] == [seeded.bounced, seeded.meeting, seeded.training]
    failed = json.loads(clq("queue", "ls", "--status", "failed", "--json").stdout)
    assert [m["queue_id"] for m in failed] == [seeded.bounced]
    assert [m["queue_id"] for m in json.loads(clq("queue", "ls", "--limit", "1", "--json").stdout)] == [
        seeded.meeting
    ]
    assert len(message_lines(clq("queue", "ls", "--status", "deferred", "--limit", "5").stdout)) == 2
    assert clq("queue", "ls", "--status", "inflight").stdout == "no inflight deliveries\n"
    assert clq("queue", "ls", "--limit", "0", check=False).returncode == 2


def test_ls_json_gives_each_message_its_counts(clq: Runner, seeded: Seeded) -> None:
    training, bounced = (
        next(
            m
            for m in json.loads(clq("queue", "ls", "--status", "all", "--json").stdout)
            if m["queue_id"] == q
        )
        for q in (seeded.training, seeded.bounced)
    )
    assert {
        k: training[k] for k in ("kind", "list_name", "subject", "waiting", "deferred", "failed", "sent")
    } == {
        "kind": "post",
        "list_name": "youth",
        "subject": "Training",
        "waiting": 1,
        "deferred": 1,
        "failed": 0,
        "sent": 1,
    }
    assert training["last_reply"] == "451 4.2.0 mailbox busy"
    assert 3 * HOUR - 60 < (datetime.now(UTC) - as_time(training["created"])).total_seconds() < 3 * HOUR + 60
    assert as_time(training["next_attempt"]) <= datetime.now(UTC)  # anna is due
    assert (bounced["failed"], bounced["next_attempt"], bounced["last_reply"]) == (
        1,
        None,
        "550 5.1.1 no such user",
    )


# --- queue show -------------------------------------------------------------------------


def test_show_gives_envelope_recipients_and_headers_but_not_the_body(clq: Runner, seeded: Seeded) -> None:
    out = clq("queue", "show", seeded.training.lower()).stdout
    assert f"queue_id         {seeded.training}" in out
    assert "envelope_sender  bounces@myclub.org" in out
    assert "3h ago" in out
    assert "Subject: Training über" in out  # the encoded word decoded
    assert "Message-ID: <1@example.org>" in out
    assert "Training is at six." not in out
    for recipient, status in (("anna", "pending"), ("bob", "deferred"), ("carl", "sent")):
        line = next(line for line in out.splitlines() if line.startswith(f"{recipient}@example.org"))
        assert status in line
    assert "250 2.0.0 OK" in out and "451 4.2.0 mailbox busy" in out


def test_show_json(clq: Runner, seeded: Seeded) -> None:
    shown = json.loads(clq("queue", "show", seeded.bounced, "--json").stdout)
    assert (shown["queue_id"], shown["kind"], shown["list"], shown["envelope_sender"], shown["subject"]) == (
        seeded.bounced,
        "post",
        "youth",
        "bounces@myclub.org",
        "Old news",
    )
    assert 2 * DAY - 60 < (datetime.now(UTC) - as_time(shown["created"])).total_seconds() < 2 * DAY + 60
    assert [(r["recipient"], r["status"], r["last_reply"]) for r in shown["recipients"]] == [
        ("dora@example.org", "failed", "550 5.1.1 no such user")
    ]
    assert {"name": "To", "value": "youth@myclub.org"} in shown["headers"]


def test_show_unknown_id_exits_1_and_says_where_to_look(clq: Runner, seeded: Seeded) -> None:
    result = clq("queue", "show", "NOPE", check=False)
    assert result.returncode == 1
    assert "no message NOPE in the queue" in result.stderr and "Traceback" not in result.stderr


# --- queue retry ------------------------------------------------------------------------


def next_attempts(clq: Runner) -> dict[str, datetime]:
    rows = json.loads(clq("queue", "ls", "--recipients", "--json").stdout)
    return {r["recipient"]: as_time(r["next_attempt"]) for r in rows}


def test_retry_one_message_makes_only_its_deliveries_due(clq: Runner, seeded: Seeded) -> None:
    result = clq("queue", "retry", seeded.training)
    assert result.stdout == "2 deliveries are due now\n"  # anna (pending) and bob (deferred)
    due = next_attempts(clq)
    now = datetime.now(UTC)
    assert due["bob@example.org"] <= now
    assert due["erik@example.org"] > now


def test_retry_all_makes_every_waiting_delivery_due(clq: Runner, seeded: Seeded) -> None:
    assert clq("queue", "retry", "--all").stdout == "3 deliveries are due now\n"
    now = datetime.now(UTC)
    assert all(when <= now for when in next_attempts(clq).values())
    assert table_rows(clq("queue", "ls", "--recipients").stdout)["erik@example.org"][5] == "now"


def test_retry_needs_an_id_or_all(clq: Runner, seeded: Seeded) -> None:
    assert clq("queue", "retry", check=False).returncode == 2
    assert clq("queue", "retry", seeded.training, "--all", check=False).returncode == 2
    unknown = clq("queue", "retry", "NOPE", check=False)
    assert unknown.returncode == 1 and "no message NOPE" in unknown.stderr


# --- queue drop -------------------------------------------------------------------------


def test_drop_yes_removes_the_message_and_all_its_rows(clq: Runner, seeded: Seeded) -> None:
    result = clq("queue", "drop", seeded.training, "--yes")
    assert result.stdout == f"dropped {seeded.training}; 2 waiting deliveries removed\n"
    rows = json.loads(clq("queue", "ls", "--recipients", "--status", "all", "--json").stdout)
    assert seeded.training not in {r["queue_id"] for r in rows}
    assert len(rows) == 2


def test_drop_asks_first(clq: Runner, seeded: Seeded) -> None:
    refused = clq("queue", "drop", seeded.meeting, input="n\n", check=False)
    assert refused.returncode == 1
    assert "Drop" in refused.stdout and "Meeting" in refused.stdout
    assert "erik@example.org" in clq("queue", "ls", "--recipients").stdout
    clq("queue", "drop", seeded.meeting, input="y\n")
    assert "erik@example.org" not in clq("queue", "ls", "--recipients").stdout


def test_drop_unknown_id_exits_1_with_a_clear_message(clq: Runner, seeded: Seeded) -> None:
    result = clq("queue", "drop", "DEADBEEF00", "--yes", check=False)
    assert result.returncode == 1
    assert "no message DEADBEEF00 in the queue; see 'clublist queue ls --status all'" in result.stderr
    assert "Traceback" not in result.stderr


# --- clublist status --------------------------------------------------------------------


def test_status_json_counts_the_queue_and_held_posts(clq: Runner, seeded: Seeded, state_path: Path) -> None:
    conn = state.connect(state_path)
    with state.transaction(conn):
        conn.execute(
            "INSERT INTO held (list_name, sender, author, reason, content, created)"
            " VALUES ('youth', 'x@example.org', 'x@example.org', 'not a member', x'00', 0)"
        )
    conn.close()
    shown = json.loads(clq("status", "--json").stdout)
    assert shown["counts"] == {"pending": 1, "inflight": 0, "deferred": 2, "sent": 1, "failed": 1}
    assert shown["held"] == 1
    assert shown["state_exists"] is True and shown["daemon_pid"] is None
    assert shown["state_path"] == str(state_path)
    assert DAY - 60 < shown["oldest_waiting_seconds"] < DAY + 60  # erik's meeting notice
    out = clq("status").stdout
    assert "1 pending, 0 inflight, 2 deferred, 1 sent, 1 failed" in out
    assert "oldest waiting  1d" in out and "not running" in out


def test_status_on_a_missing_database_says_so_and_creates_nothing(clq: Runner, state_path: Path) -> None:
    shown = json.loads(clq("status", "--json").stdout)
    assert shown["state_exists"] is False
    assert set(shown["counts"].values()) == {0} and shown["held"] == 0
    assert "not created yet" in clq("status").stdout
    assert not state_path.exists() and not state_path.parent.exists()


# --- with a daemon running --------------------------------------------------------------


@pytest.fixture
def daemon(state_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the daemon lock that prints "woken" and exits on SIGUSR1."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(state_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)


def woken(daemon: subprocess.Popen[str]) -> bool:
    out, _ = daemon.communicate(timeout=10)
    return out == "woken\n"


def test_retry_wakes_a_running_daemon(clq: Runner, seeded: Seeded, daemon: subprocess.Popen[str]) -> None:
    assert json.loads(clq("status", "--json").stdout)["daemon_pid"] == daemon.pid
    result = clq("queue", "retry", "--all")
    assert f"the running daemon (pid {daemon.pid}) is delivering now" in result.stdout
    assert woken(daemon)


def test_flush_with_a_daemon_running_leaves_the_work_to_it(
    clq: Runner, seeded: Seeded, daemon: subprocess.Popen[str]
) -> None:
    result = clq("queue", "flush")
    assert result.stdout == f"the running daemon (pid {daemon.pid}) is delivering now\n"
    assert woken(daemon)
    assert all(when <= datetime.now(UTC) for when in next_attempts(clq).values())
    assert json.loads(clq("status", "--json").stdout)["counts"]["sent"] == 1  # it sent nothing itself


# --- queue flush in the foreground ------------------------------------------------------


def use_smarthost(clq: Runner, mta: RemoteMTA) -> None:
    clq("config", "set", "delivery.mode", "smarthost")
    clq("config", "set", "delivery.smarthost", f"127.0.0.1:{mta.port}")


def test_flush_delivers_everything_to_the_smarthost(clq: Runner, state_path: Path) -> None:
    recipients = ["anna@example.org", "bob@example.net", "carl@example.com"]
    with RemoteMTA() as mta:
        use_smarthost(clq, mta)
        enqueue(state_path, recipients)
        result = clq("queue", "flush")
    assert result.stdout == "3 sent, 0 deferred, 0 failed\n"
    assert mta.delivered == set(recipients)
    sent = json.loads(clq("queue", "ls", "--recipients", "--status", "sent", "--json").stdout)
    assert sorted(r["recipient"] for r in sent) == sorted(recipients)
    assert clq("queue", "ls", "--recipients").stdout == "the queue is empty\n"


def test_flush_tries_deferred_mail_again_and_reports_each_outcome(clq: Runner, seeded: Seeded) -> None:
    replies = {"erik@example.org": "452 4.2.2 mailbox full", "bob@example.org": "550 5.1.1 gone"}
    with RemoteMTA(Behaviour(rcpt=lambda address: replies.get(address))) as mta:
        use_smarthost(clq, mta)
        result = clq("queue", "flush")
        # bob's failure is reported to the administrator in a later pass of the same flush.
        assert mta.delivered == {"anna@example.org", "admin@myclub.org"}
    assert result.stdout == "1 sent, 1 deferred, 1 failed\n"
    rows = {
        r["recipient"]: r
        for r in json.loads(clq("queue", "ls", "--recipients", "--status", "all", "--json").stdout)
    }
    assert (rows["erik@example.org"]["status"], rows["erik@example.org"]["attempts"]) == ("deferred", 2)
    assert rows["bob@example.org"]["last_reply"] == "550 5.1.1 gone"


# --- rights -------------------------------------------------------------------------------


def invoke(app: App, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), obj=app)
    return result.exit_code, result.output


def test_a_member_asking_by_mail_may_not_touch_the_queue(
    club_dir: Path, state_path: Path, seeded: Seeded
) -> None:
    member = App(club_dir, state_path, actor=Actor("anna@example.org", False), by_mail=True)
    for args in (["queue", "ls"], ["queue", "drop", seeded.training], ["status"]):
        code, output = invoke(member, *args)
        assert code == 1 and "only the club's administrator" in output, args


def test_drop_by_mail_never_prompts(club_dir: Path, state_path: Path, seeded: Seeded) -> None:
    admin = App(club_dir, state_path, actor=Actor("admin@myclub.org", True), by_mail=True)
    code, output = invoke(admin, "queue", "drop", seeded.meeting)
    assert (code, output) == (0, f"dropped {seeded.meeting}; 1 waiting delivery removed\n")
