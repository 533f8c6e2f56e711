"""Reminders with an injected clock: each occurrence queued exactly once, late ones caught up
within the lateness and skipped past it, local times kept across daylight saving, and the
membership reminder's personal messages.  The club's time zone is Europe/Berlin."""

from __future__ import annotations

import email
import email.policy
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from module_club import copy_club, start_club

from clublist.actions import Actor
from clublist.actions.cron import RunResult, parse_duration, read_reminder_runs, run_due
from clublist.actions.lists import list_create, list_delete, list_set
from clublist.actions.members import MemberChanges, member_add, member_leave, member_set
from clublist.actions.reminders import remind_add, remind_ls, remind_rm
from clublist.club.reminders import Reminder
from clublist.club.store import REMINDERS_FILE, Store
from clublist.errors import ClublistError, PermissionDenied
from clublist.mail import enqueue as posting
from clublist.state import db as state

BERLIN = ZoneInfo("Europe/Berlin")
ADMIN = Actor.shell()
CREATED = datetime(2026, 11, 18, 12, 0, tzinfo=BERLIN)  # a Wednesday, standard time


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.fixture(scope="module")
def members_club(club_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """youth (anna, ben) and trainer (ben, carl; owned by tom, who is not a member), built once."""
    root = tmp_path_factory.mktemp("reminders-club")
    store = start_club(club_template, root, "state.sqlite3")
    list_create(store, ADMIN, "trainer", owners=["tom@example.org"], description="Trainers")
    member_add(store, ADMIN, "anna@example.org", "Anna", ("youth",))
    member_add(store, ADMIN, "ben@example.org", "Ben", ("youth", "trainer"))
    member_add(store, ADMIN, "carl@example.org", "Carl", ("trainer",))
    return root


@pytest.fixture
def club_dir(members_club: Path, tmp_path: Path) -> Path:
    return copy_club(members_club, tmp_path)


@pytest.fixture
def club(store: Store) -> Store:
    """This test's copy of the module's club."""
    return store


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = state.connect(tmp_path / "var" / "state.sqlite3")
    yield connection
    connection.close()


def add(store: Store, actor: Actor = ADMIN, now: datetime = CREATED, **kwargs: object) -> Reminder:
    kwargs.setdefault("subject", "Training tonight")
    kwargs.setdefault("text", "Hall 2, bring shoes.")
    done = remind_add(store, actor, now=now, **kwargs)  # type: ignore[arg-type]
    return done.record


def run(store: Store, conn: sqlite3.Connection, now: datetime, **kwargs: object) -> RunResult:
    return run_due(store, conn, ADMIN, now=now, **kwargs)  # type: ignore[arg-type]


def queued(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM messages ORDER BY id").fetchall()


def recipients(conn: sqlite3.Connection, message_id: int) -> list[str]:
    rows = conn.execute("SELECT recipient FROM deliveries WHERE message_id = ? ORDER BY id", (message_id,))
    return [r[0] for r in rows]


def parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


def runs(conn: sqlite3.Connection, reminder_id: str) -> list[tuple[datetime, bool]]:
    return [
        (datetime.fromisoformat(occurrence).astimezone(BERLIN), skipped)
        for occurrence, skipped, _queue_id in read_reminder_runs(conn, reminder_id)
    ]


# --- exactly once ------------------------------------------------------------------------------


def test_a_one_off_reminder_is_queued_once_however_often_remind_runs(
    club: Store, conn: sqlite3.Connection
) -> None:
    reminder = add(club, to="youth", at="2026-12-01 18:00")
    due = berlin(2026, 12, 1, 18, 0)
    clock = [
        due - timedelta(hours=1),
        due - timedelta(seconds=1),
        due,
        due,
        due + timedelta(minutes=5),
        due + timedelta(hours=5),
        due + timedelta(days=2),  # long past the lateness: already sent, so not "skipped" either
        due + timedelta(days=30),
    ]
    results = [run(club, conn, now) for now in clock]
    assert [len(r.queued) for r in results] == [0, 0, 1, 0, 0, 0, 0, 0]
    assert all(not r.skipped for r in results)
    assert len(queued(conn)) == 1
    assert runs(conn, reminder.id) == [(due, False)]


def test_a_weekly_reminder_is_queued_once_a_week(club: Store, conn: sqlite3.Connection) -> None:
    reminder = add(club, to="youth", every="monday 18:00")
    now = CREATED
    while now < berlin(2026, 12, 9, 12, 0):  # three Mondays, cron every 2 hours
        run(club, conn, now)
        now += timedelta(hours=2)
    mondays = [berlin(2026, 11, 23, 18, 0), berlin(2026, 11, 30, 18, 0), berlin(2026, 12, 7, 18, 0)]
    assert runs(conn, reminder.id) == [(m, False) for m in mondays]
    messages = queued(conn)
    assert len(messages) == 3
    assert {m["kind"] for m in messages} == {"post"}


def test_two_overlapping_runs_queue_it_once(
    club: Store, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run A is held inside its transaction, after queuing, until run B has reached the database."""
    add(club, to="youth", at="2026-12-01 18:00")
    now = berlin(2026, 12, 1, 18, 1)
    b_reached_the_database = threading.Event()
    enqueue_post = posting.enqueue_post

    def slow_enqueue(*args: object, **kwargs: object) -> str:
        queue_id = enqueue_post(*args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread().name == "run-a":
            b_thread.start()
            assert b_reached_the_database.wait(10), "run B never started"
        return queue_id

    monkeypatch.setattr(posting, "enqueue_post", slow_enqueue)
    results: dict[str, RunResult] = {}
    errors: list[BaseException] = []

    def run_in_thread(name: str, on_statement: threading.Event | None = None) -> None:
        connection = state.connect(tmp_path / "var" / "state.sqlite3")
        if on_statement is not None:
            connection.set_trace_callback(lambda _sql: on_statement.set())
        try:
            results[name] = run(club, connection, now)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    a_thread = threading.Thread(target=run_in_thread, args=("a",), name="run-a")
    b_thread = threading.Thread(target=run_in_thread, args=("b", b_reached_the_database), name="run-b")
    a_thread.start()
    a_thread.join(30)
    b_thread.join(30)
    assert not errors
    assert sorted(len(r.queued) for r in results.values()) == [0, 1]
    assert len(queued(conn)) == 1


# --- late and missed ---------------------------------------------------------------------------


def test_a_missed_day_is_caught_up_within_the_lateness_and_skipped_past_it(
    club: Store, conn: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    reminder = add(club, to="youth", every="day 18:00")
    run(club, conn, CREATED + timedelta(minutes=5))  # cron ran, then stopped for two days
    caplog.set_level("WARNING", logger="clublist.actions.cron")
    result = run(club, conn, berlin(2026, 11, 20, 21, 0))
    assert [f.occurrence for f in result.skipped] == [
        berlin(2026, 11, 18, 18, 0),
        berlin(2026, 11, 19, 18, 0),
    ]
    assert [f.occurrence for f in result.queued] == [berlin(2026, 11, 20, 18, 0)]  # 3 hours late: sent
    assert "skipped" in caplog.text and "2026-11-19 18:00" in caplog.text
    # Stopped again: the 21st is 7 hours late at 01:00 on the 22nd, more than the 6 allowed.
    result = run(club, conn, berlin(2026, 11, 22, 1, 0))
    assert ([f.occurrence for f in result.skipped], result.queued) == ([berlin(2026, 11, 21, 18, 0)], [])
    result = run(club, conn, berlin(2026, 11, 22, 23, 0))
    assert [f.occurrence for f in result.queued] == [berlin(2026, 11, 22, 18, 0)]
    assert runs(conn, reminder.id) == [
        (berlin(2026, 11, 18, 18, 0), True),
        (berlin(2026, 11, 19, 18, 0), True),
        (berlin(2026, 11, 20, 18, 0), False),
        (berlin(2026, 11, 21, 18, 0), True),
        (berlin(2026, 11, 22, 18, 0), False),
    ]
    assert len(queued(conn)) == 2


def test_the_lateness_is_a_parameter(club: Store, conn: sqlite3.Connection) -> None:
    add(club, to="youth", every="day 18:00")
    run(club, conn, CREATED)
    result = run(club, conn, berlin(2026, 11, 18, 21, 0), max_late=timedelta(hours=1))
    assert (len(result.queued), len(result.skipped)) == (0, 1)
    assert "missed by 3h" in result.skipped[0].reason


def test_the_first_run_ever_looks_back_only_the_lateness(club: Store, conn: sqlite3.Connection) -> None:
    add(club, to="youth", every="day 18:00")
    result = run(club, conn, berlin(2026, 11, 25, 19, 0))
    assert [f.occurrence for f in result.queued] == [berlin(2026, 11, 25, 18, 0)]
    assert result.skipped == []


# --- daylight saving ---------------------------------------------------------------------------


def test_a_reminder_across_the_spring_change_fires_at_the_same_local_time(
    club: Store, conn: sqlite3.Connection
) -> None:
    """Berlin goes from +01:00 to +02:00 at 02:00 on 29 March 2026: 18:00 stays 18:00."""
    reminder = add(club, to="youth", every="day 18:00", now=berlin(2026, 3, 27, 12, 0))
    assert not run(club, conn, datetime(2026, 3, 28, 16, 59, tzinfo=UTC)).queued  # 17:59 CET
    assert run(club, conn, datetime(2026, 3, 28, 17, 1, tzinfo=UTC)).queued  # 18:01 CET
    assert not run(club, conn, datetime(2026, 3, 29, 15, 59, tzinfo=UTC)).queued  # 17:59 CEST
    result = run(club, conn, datetime(2026, 3, 29, 16, 1, tzinfo=UTC))  # 18:01 CEST
    assert [f.occurrence.astimezone(UTC) for f in result.queued] == [datetime(2026, 3, 29, 16, 0, tzinfo=UTC)]
    assert [(when.hour, when.minute) for when, _ in runs(conn, reminder.id)] == [(18, 0), (18, 0)]


def test_a_cron_reminder_in_the_repeated_hour_fires_once_in_autumn(
    club: Store, conn: sqlite3.Connection
) -> None:
    """02:30 happens twice on 25 October 2026 in Berlin; the reminder goes out once that day."""
    reminder = add(club, to="youth", cron="30 2 * * *", now=berlin(2026, 10, 23, 12, 0))
    now = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    while now < datetime(2026, 10, 27, 12, 0, tzinfo=UTC):
        run(club, conn, now)
        now += timedelta(minutes=20)
    fired = [when for when, _ in runs(conn, reminder.id)]
    assert [(w.day, w.hour, w.minute) for w in fired] == [(24, 2, 30), (25, 2, 30), (26, 2, 30), (27, 2, 30)]
    assert fired[1].utcoffset() == timedelta(hours=2)  # the first 02:30 of the 25th


# --- what goes out -----------------------------------------------------------------------------


def test_a_list_reminder_is_a_decorated_list_post_from_the_bot(club: Store, conn: sqlite3.Connection) -> None:
    list_set(club, ADMIN, "youth", "footer", "Youth section of My Club")
    add(club, to="youth", at="2026-12-01 18:00", subject="Training tonight", text="Hall 2.\nBring shoes.")
    run(club, conn, berlin(2026, 12, 1, 18, 0))
    (row,) = queued(conn)
    assert (row["kind"], row["list_name"], row["sender"]) == ("post", "youth", "bounces@myclub.org")
    assert recipients(conn, row["id"]) == ["anna@example.org", "ben@example.org"]
    message = parse(row["content"])
    assert message["From"].addresses[0].addr_spec == "bot@myclub.org"
    assert message["From"].addresses[0].display_name == "My Club reminders"
    assert message["Subject"] == "[Youth] Training tonight"
    assert message["List-Id"] == "Youth <youth.myclub.org>"
    assert message["List-Unsubscribe"] == "<mailto:bot@myclub.org?subject=unsubscribe%20youth>"
    assert message["Reply-To"] == "youth@myclub.org"
    assert message["Auto-Submitted"] == "auto-generated"
    text = body(message)
    assert "Hall 2.\nBring shoes." in text and "Youth section of My Club" in text


def test_a_reminder_to_a_member_goes_to_that_member_alone(club: Store, conn: sqlite3.Connection) -> None:
    add(club, to="ben@example.org", at="2026-12-01 18:00", subject="Fees", text="Please pay.")
    run(club, conn, berlin(2026, 12, 1, 18, 0))
    (row,) = queued(conn)
    assert (row["kind"], row["list_name"], row["sender"]) == ("reminder", None, "bounces@myclub.org")
    assert recipients(conn, row["id"]) == ["ben@example.org"]
    message = parse(row["content"])
    assert message["To"].addresses[0].addr_spec == "ben@example.org"
    assert message["List-Id"] is None and message["Subject"] == "Fees"
    assert body(message) == "Please pay.\n"


def test_dry_run_shows_what_is_due_and_writes_nothing(club: Store, conn: sqlite3.Connection) -> None:
    reminder = add(club, to="youth", every="day 18:00")
    run(club, conn, CREATED)
    result = run(club, conn, berlin(2026, 11, 20, 21, 0), dry_run=True)
    assert result.dry_run
    assert [f.occurrence.day for f in result.skipped] == [18, 19]
    assert [(f.occurrence.day, f.recipients) for f in result.queued] == [(20, 2)]
    assert queued(conn) == [] and runs(conn, reminder.id) == []
    assert len(run(club, conn, berlin(2026, 11, 20, 21, 0)).queued) == 1


def test_a_reminder_to_a_deleted_list_is_recorded_as_not_sent(club: Store, conn: sqlite3.Connection) -> None:
    reminder = add(club, to="trainer", at="2026-12-01 18:00")
    list_delete(club, ADMIN, "trainer")
    result = run(club, conn, berlin(2026, 12, 1, 18, 5))
    assert [f.reason for f in result.skipped] == ["there is no list 'trainer' any more"]
    assert runs(conn, reminder.id) == [(berlin(2026, 12, 1, 18, 0), True)]
    assert queued(conn) == []


# --- the membership reminder -------------------------------------------------------------------


def test_the_membership_reminder_sends_each_member_exactly_their_lists(
    club: Store, conn: sqlite3.Connection
) -> None:
    add(club, membership=True, every="first monday of the month 10:00", subject="", text="")
    result = run(club, conn, berlin(2026, 12, 7, 10, 1))
    assert [f.recipients for f in result.queued] == [3]
    rows = queued(conn)
    assert len(rows) == 3
    lists_of = {
        "anna@example.org": {"youth"},
        "ben@example.org": {"youth", "trainer"},
        "carl@example.org": {"trainer"},
    }
    seen = set()
    for row in rows:
        assert (row["kind"], row["list_name"], row["sender"]) == ("reminder", None, "bounces@myclub.org")
        (recipient,) = recipients(conn, row["id"])
        message = parse(row["content"])
        assert message["To"].addresses[0].addr_spec == recipient
        assert message["From"].addresses[0].addr_spec == "bot@myclub.org"
        text = body(message)
        named = {name for name in ("youth", "trainer") if f"{name}@myclub.org" in text}
        assert named == lists_of[recipient], recipient
        for name in named:
            assert f"send 'unsubscribe {name}' to bot@myclub.org" in text
            assert f"mailto:bot@myclub.org?subject=unsubscribe%20{name}" in text
        assert f"you receive it at: {recipient}" in text
        seen.add(recipient)
    assert seen == set(lists_of)


def test_the_membership_reminder_skips_members_whose_delivery_is_disabled(
    club: Store, conn: sqlite3.Connection
) -> None:
    member_set(club, ADMIN, "carl@example.org", MemberChanges(enable=False, reason="bounces"))
    add(club, membership=True, every="day 10:00", subject="", text="")
    run(club, conn, berlin(2026, 11, 19, 10, 0))
    addressed = {recipients(conn, row["id"])[0] for row in queued(conn)}
    assert addressed == {"anna@example.org", "ben@example.org"}


# --- adding, listing, removing -----------------------------------------------------------------


def test_add_writes_a_commented_file_that_reads_back(club: Store) -> None:
    first = add(club, to="youth", every="Mondays at 18:00", until="2026-12-31 18:00")
    second = add(
        club, to="anna@example.org", at="tomorrow 18:00", subject="Fees", text="line one\nline two\n"
    )
    text = club.path(REMINDERS_FILE).read_text()
    assert text.startswith("# Reminders: one [[reminder]] table each")
    assert 'every = "monday 18:00"' in text and "until = 2026-12-31T18:00:00+01:00" in text
    assert "at = 2026-11-19T18:00:00+01:00" in text
    assert club.reminders() == [first, second]
    assert first.id != second.id and first.created_by == "admin@myclub.org"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": "2026-11-01 18:00"}, "in the past"),
        ({"at": "2026-03-29 02:30"}, "does not exist"),
        ({"at": "2026-10-25 02:30"}, "happens twice"),
        ({"every": "someday 18:00"}, "cannot understand"),
        ({"cron": "0 18 * *"}, "has 4 field"),
        ({"at": "tomorrow 18:00", "every": "monday 18:00"}, "one of --at"),
        ({}, "one of --at"),
        ({"at": "tomorrow 18:00", "count": 2}, "for recurring reminders"),
        ({"every": "monday 18:00", "until": "2026-11-20 12:00"}, "never fires"),
        ({"every": "monday 18:00", "subject": ""}, "needs a subject"),
        ({"every": "monday 18:00", "to": "nosuchlist"}, "no list named"),
        ({"every": "monday 18:00", "to": "stranger@example.org"}, "not a member"),
    ],
)
def test_add_refuses_a_bad_reminder_and_says_why(
    club: Store, kwargs: dict[str, object], message: str
) -> None:
    kwargs = {"to": "youth", **kwargs}
    with pytest.raises(ClublistError, match=message):
        add(club, **kwargs)
    assert not club.path(REMINDERS_FILE).exists()


def test_who_may_add_a_reminder(club: Store) -> None:
    anna = Actor.for_sender(club.load(), "anna@example.org")
    tom = Actor.for_sender(club.load(), "tom@example.org")
    add(club, anna, to="youth", every="monday 18:00")  # a member, to a list she may post to
    add(club, anna, to="anna@example.org", every="monday 18:00")  # herself
    add(club, tom, to="trainer", every="monday 18:00")  # an owner, not a member
    with pytest.raises(PermissionDenied):
        add(club, anna, to="trainer", every="monday 18:00")
    with pytest.raises(PermissionDenied):
        add(club, anna, to="ben@example.org", every="monday 18:00")
    with pytest.raises(PermissionDenied):
        add(club, anna, membership=True, every="day 10:00")
    with pytest.raises(PermissionDenied):
        run_due(club, sqlite3.connect(":memory:"), anna, now=CREATED)
    assert [r.created_by for r in club.reminders()] == [
        "anna@example.org",
        "anna@example.org",
        "tom@example.org",
    ]


def test_who_sees_and_removes_which_reminders(club: Store) -> None:
    loaded = club.load()
    anna, carl, tom = (
        Actor.for_sender(loaded, a) for a in ("anna@example.org", "carl@example.org", "tom@example.org")
    )
    to_youth = add(club, anna, to="youth", every="monday 18:00")
    to_trainer = add(club, to="trainer", every="monday 18:00")
    to_ben = add(club, to="ben@example.org", every="monday 18:00")
    membership = add(club, membership=True, every="day 10:00", subject="", text="")
    ids = lambda actor: [info.reminder.id for info in remind_ls(club, actor, CREATED)]  # noqa: E731
    assert ids(ADMIN) == [to_youth.id, to_trainer.id, to_ben.id, membership.id]
    assert ids(anna) == [to_youth.id]
    assert ids(carl) == [to_trainer.id]
    assert ids(tom) == [to_trainer.id]
    assert ids(Actor.for_sender(loaded, "ben@example.org")) == [to_youth.id, to_trainer.id, to_ben.id]
    info = remind_ls(club, ADMIN, CREATED)[0]
    assert info.next == berlin(2026, 11, 23, 18, 0) and info.schedule == "every monday 18:00"
    with pytest.raises(PermissionDenied):
        remind_rm(club, carl, to_youth.id)
    with pytest.raises(PermissionDenied):
        remind_rm(club, carl, to_trainer.id)
    remind_rm(club, anna, to_youth.id)  # her own
    remind_rm(club, tom, to_trainer.id)  # his list's
    with pytest.raises(ClublistError, match="no reminder"):
        remind_rm(club, ADMIN, to_youth.id)
    remind_rm(club, ADMIN, to_ben.id)
    remind_rm(club, ADMIN, membership.id)
    assert club.reminders() == []
    assert club.path(REMINDERS_FILE).read_text().startswith("# Reminders:")  # the comments stay


def test_removing_keeps_a_persons_comments(club: Store) -> None:
    first = add(club, to="youth", every="monday 18:00")
    path = club.path(REMINDERS_FILE)
    path.write_text(path.read_text() + "\n# Wednesday training, ask Tom before changing\n")
    add(club, to="youth", every="wednesday 18:00")
    remind_rm(club, ADMIN, first.id)
    assert "# Wednesday training, ask Tom before changing" in path.read_text()
    assert [r.schedule.expr for r in club.reminders()] == ["wednesday 18:00"]


def test_removing_takes_the_comment_above_a_reminder_and_its_whole_text(club: Store) -> None:
    path = club.path(REMINDERS_FILE)
    path.write_text(
        "# my reminders\n\n"
        "# fees: ask the treasurer\n"
        '[[reminder]]\nid = "fees"\nto = "youth"\nsubject = "Fees"\n'
        'text = """Please pay.\n\n[[reminder]] is not a header in here.\n\nThanks"""\n'
        "at = 2026-12-01T18:00:00+01:00\n"
        "\n# keep me\n\n"
        '[[reminder]]\nid = "training"  # weekly\nto = "youth"\nsubject = "T"\ntext = "t"\n'
        'every = "monday 18:00"\n'
    )
    remind_rm(club, ADMIN, "fees")
    assert path.read_text() == (
        "# my reminders\n\n# keep me\n\n"
        '[[reminder]]\nid = "training"  # weekly\nto = "youth"\nsubject = "T"\ntext = "t"\n'
        'every = "monday 18:00"\n'
    )
    remind_rm(club, ADMIN, "training")
    assert path.read_text() == "# my reminders\n\n# keep me\n\n"


# --- a file written by hand --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "monday 18:00"\ncolour = "red"',
            "colour",
        ),
        ('id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "moonday 18:00"', "moonday"),
        ('id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"\ncron = "61 * * * *"', "cron"),
        ('id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"', "exactly one of at, every and cron"),
        ('id = "X Y"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "day 10:00"', "not a reminder id"),
        ('id = "x"\nsubject = "s"\ntext = "t"\nevery = "day 10:00"', "'to' is missing"),
        (
            'id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "day 10:00"\ncount = 3',
            "needs a start",
        ),
        (
            'id = "x"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "day 10:00"\n'
            "until = 2026-12-01T10:00:00",
            "time zone",
        ),
    ],
)
def test_a_bad_hand_written_reminder_is_reported_with_file_and_line(
    club: Store, conn: sqlite3.Connection, table: str, message: str
) -> None:
    good = (
        '[[reminder]]\nid = "ok"\nto = "youth"\nsubject = "s"\ntext = "t"\nat = 2026-12-01T18:00:00+01:00\n'
    )
    path = club.path(REMINDERS_FILE)
    path.write_text(f"# hand written\n{good}\n[[reminder]]\n{table}\n")
    with pytest.raises(ClublistError, match=message) as caught:
        run(club, conn, CREATED)
    assert str(caught.value).startswith(f"{path}:9: ")
    before = path.read_text()
    with pytest.raises(ClublistError):  # a broken file is never written over
        add(club, to="youth", every="monday 18:00")
    assert path.read_text() == before


def test_duplicate_ids_are_refused(club: Store, conn: sqlite3.Connection) -> None:
    table = '[[reminder]]\nid = "ok"\nto = "youth"\nsubject = "s"\ntext = "t"\nevery = "day 10:00"\n'
    club.path(REMINDERS_FILE).write_text(table + "\n" + table)
    with pytest.raises(ClublistError, match="used twice"):
        club.reminders()


def test_a_hand_written_local_time_is_read_in_the_site_time_zone(
    club: Store, conn: sqlite3.Connection
) -> None:
    club.path(REMINDERS_FILE).write_text(
        '[[reminder]]\nid = "local"\nto = "youth"\nsubject = "s"\ntext = "t"\nat = 2026-12-01T18:00:00\n'
    )
    assert not run(club, conn, datetime(2026, 12, 1, 16, 59, tzinfo=UTC)).queued
    assert run(club, conn, datetime(2026, 12, 1, 17, 0, tzinfo=UTC)).queued  # 18:00 in Berlin


def test_parse_duration() -> None:
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("45") == timedelta(seconds=45)
    with pytest.raises(ClublistError, match="not a duration"):
        parse_duration("soon")


def test_a_members_reminder_stops_when_they_may_no_longer_post(club: Store, conn: sqlite3.Connection) -> None:
    anna = Actor.for_sender(club.load(), "anna@example.org")
    add(club, anna, to="youth", every="day 18:00")
    run(club, conn, berlin(2026, 11, 18, 18, 30))
    assert len(queued(conn)) == 1
    member_leave(club, anna, "anna@example.org", "youth")
    result = run(club, conn, berlin(2026, 11, 19, 18, 30))
    assert len(queued(conn)) == 1
    assert any("may no longer post to youth" in f.reason for f in [*result.queued, *result.skipped])
