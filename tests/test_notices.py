"""Welcome, goodbye and owner notices: from templates, in the list's language, into the queue."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from clublist.actions import Actor
from clublist.actions.lists import list_create, list_set
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club.store import Store
from clublist.outbound.membership import send_owner_summaries
from clublist.state import db


@pytest.fixture
def club(store: Store) -> Store:
    list_set(store, Actor.shell(), "youth", "owners", "tom@example.org")
    list_create(store, Actor.shell(), "trainer", description="The trainers")
    member_add(store, Actor.shell(), "anna@example.org", "Anna")
    member_add(store, Actor.shell(), "tom@example.org", "Tom", ("youth",))
    return store


def state_path(store: Store) -> Path:
    return store.directory.parent / "var" / "clublist.sqlite3"


def run(store: Store, *args: str) -> str:
    result = CliRunner().invoke(
        main, ["--dir", str(store.directory), "--state", str(state_path(store)), *args]
    )
    assert result.exit_code == 0, result.output
    return result.output


def queued(store: Store) -> list[tuple[list[str], EmailMessage]]:
    """Every queued mail, once: its recipients and the message; the queue is emptied."""
    if not state_path(store).exists():
        return []
    conn = db.connect(state_path(store))
    rows = conn.execute("SELECT id, content FROM messages ORDER BY id").fetchall()
    out = []
    for message_id, content in rows:
        recipients = [
            r[0] for r in conn.execute("SELECT recipient FROM deliveries WHERE message_id = ?", (message_id,))
        ]
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        out.append((recipients, message))
    conn.execute("DELETE FROM messages")
    conn.close()
    return out


def test_join_sends_one_welcome_and_tells_the_owners(club: Store) -> None:
    run(club, "member", "join", "anna@example.org", "youth")
    (to_anna, welcome), (to_owner, notice) = queued(club)
    assert to_anna == ["anna@example.org"]
    assert welcome["Subject"] == "Welcome to Youth"
    assert welcome["From"] == "Youth <bot@myclub.org>"
    assert welcome["Reply-To"] == "youth-request@myclub.org"  # "unsubscribe" alone means youth
    body = welcome.get_content().replace("\r\n", "\n")
    assert "Hello Anna," in body and "unsubscribe youth" in body and "bot@myclub.org" in body
    assert to_owner == ["tom@example.org"]
    assert notice["Subject"] == "anna@example.org joined youth"
    assert "The list has 2 members now." in notice.get_content().replace("\r\n", "\n")


def test_leave_sends_one_goodbye_and_quiet_sends_nothing(club: Store) -> None:
    run(club, "member", "leave", "tom@example.org", "youth")
    (to, goodbye), (owners, _left) = queued(club)
    assert to == ["tom@example.org"] and goodbye["Subject"] == "You have left Youth"
    assert owners == ["tom@example.org"]
    run(club, "member", "join", "anna@example.org", "youth", "--quiet")
    run(club, "member", "remove", "anna@example.org", "--yes", "--quiet")
    run(club, "member", "add", "eva@example.org", "--list", "youth", "--quiet")
    assert queued(club) == []


def test_add_and_remove_welcome_and_say_goodbye_per_list(club: Store) -> None:
    run(club, "member", "add", "eva@example.org", "--name", "Eva", "--list", "youth", "--list", "trainer")
    sent = [(to, m["Subject"]) for to, m in queued(club)]
    assert sent == [
        (["eva@example.org"], "Welcome to Youth"),
        (["tom@example.org"], "eva@example.org joined youth"),
        (["eva@example.org"], "Welcome to Trainer"),
    ]
    run(club, "member", "remove", "eva@example.org", "--yes")
    sent = [(to, m["Subject"]) for to, m in queued(club)]
    assert sent == [
        (["eva@example.org"], "You have left Youth"),
        (["tom@example.org"], "eva@example.org left youth"),
        (["eva@example.org"], "You have left Trainer"),
    ]


def test_german_list_and_templates_in_lists_d(club: Store) -> None:
    run(club, "list", "set", "youth", "language", "de")
    run(club, "member", "join", "anna@example.org", "youth")
    (_, welcome), (_, notice) = queued(club)
    assert welcome["Subject"] == "Willkommen bei Youth"
    assert "Hallo Anna," in welcome.get_content().replace("\r\n", "\n")
    assert notice["Subject"] == "anna@example.org ist youth beigetreten"
    templates = club.directory / "templates"
    (templates / "youth").mkdir(parents=True)
    (templates / "welcome.txt").write_text("Subject: Hello from $club\n\nSite text for $name.\n", "utf-8")
    (templates / "youth" / "welcome.txt").write_text(
        "Subject: Servus in $list_title\n\n$name, schreib an $list_address.\n", "utf-8"
    )
    run(club, "member", "join", "anna@example.org", "trainer")
    run(club, "member", "leave", "anna@example.org", "youth", "--quiet")
    run(club, "member", "join", "anna@example.org", "youth")
    trainer_welcome, youth_welcome, _owner = (m for _to, m in queued(club))
    assert trainer_welcome["Subject"] == "Hello from My Club"
    assert trainer_welcome.get_content().replace("\r\n", "\n") == "Site text for Anna.\n"
    assert youth_welcome["Subject"] == "Servus in Youth"
    assert youth_welcome.get_content().replace("\r\n", "\n") == "Anna, schreib an youth@myclub.org.\n"


def test_daily_owner_summary(club: Store) -> None:
    run(club, "list", "set", "youth", "owner_notices", "daily")
    run(club, "member", "join", "anna@example.org", "youth")
    run(club, "member", "add", "eva@example.org", "--name", "Eva", "--list", "youth")
    run(club, "member", "leave", "anna@example.org", "youth")
    assert [to for to, _m in queued(club)] == [
        ["anna@example.org"],
        ["eva@example.org"],
        ["anna@example.org"],
    ]
    conn = db.connect(state_path(club))
    (first,) = conn.execute("SELECT MIN(created) FROM owner_changes").fetchone()
    loaded = club.load()
    with db.transaction(conn):
        assert send_owner_summaries(conn, loaded, first + 3600) == 0
    with db.transaction(conn):
        assert send_owner_summaries(conn, loaded, first + 24 * 3600) == 1
    with db.transaction(conn):
        assert send_owner_summaries(conn, loaded, first + 48 * 3600) == 0
    conn.close()
    ((to, summary),) = queued(club)
    assert to == ["tom@example.org"] and summary["Subject"] == "Changes to youth: 3"
    assert summary.get_content().replace("\r\n", "\n").splitlines()[-3:] == [
        "  + anna@example.org (Anna)",
        "  + eva@example.org (Eva)",
        "  - anna@example.org (Anna)",
    ]
