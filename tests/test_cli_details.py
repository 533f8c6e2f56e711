"""Small things at the shell: completion, TOML echoes, values that start with '-', times with zones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from clublist.actions import Actor
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club.store import Store
from clublist.mail.moderation import hold
from clublist.state import db


def complete(club_dir: Path, words: str) -> list[str]:
    env = {
        "_CLUBLIST_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        "CLUBLIST_DIR": str(club_dir),
    }
    result = CliRunner().invoke(main, [], env=env, prog_name="clublist")
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_completion_offers_list_names_and_member_addresses(store: Store, club_dir: Path) -> None:
    list_create(store, Actor.shell(), "yoga")
    list_create(store, Actor.shell(), "trainer")
    member_add(store, Actor.shell(), "anna@example.org", "Anna")
    member_add(store, Actor.shell(), "andy@example.org", "Andy")
    member_add(store, Actor.shell(), "ben@example.org", "Ben")
    assert complete(club_dir, "clublist member add x --list y") == ["yoga", "youth"]
    assert complete(club_dir, "clublist member add x --list ") == ["trainer", "yoga", "youth"]
    assert complete(club_dir, "clublist member join an") == ["anna@example.org", "andy@example.org"]
    assert complete(club_dir, "clublist member join anna@example.org t") == ["trainer"]
    assert complete(club_dir, "clublist member remove b") == ["ben@example.org"]


def run(club_dir: Path, *args: str, state: Path | None = None) -> str:
    options = ["--dir", str(club_dir)] + (["--state", str(state)] if state else [])
    result = CliRunner().invoke(main, [*options, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_set_echoes_toml_and_takes_values_starting_with_a_dash(club_dir: Path) -> None:
    assert (
        run(club_dir, "list", "set", "youth", "footer", "-- Youth list")
        == 'youth: footer = "-- Youth list"\n'
    )
    assert Store(club_dir).load().lists["youth"].footer == "-- Youth list"
    assert run(club_dir, "list", "set", "youth", "self_subscribe", "no") == "youth: self_subscribe = false\n"
    assert run(club_dir, "list", "set", "youth", "owners", "a@example.org,b@example.org") == (
        'youth: owners = ["a@example.org", "b@example.org"]\n'
    )
    assert run(club_dir, "config", "set", "retry.schedule", "300,900") == "retry.schedule = [300, 900]\n"
    assert run(club_dir, "config", "set", "tls.require", "true") == "tls.require = true\n"
    assert run(club_dir, "config", "set", "site.name", "-Club-") == 'site.name = "-Club-"\n'
    run(club_dir, "member", "add", "x@example.org", "--name", "-X-", "--quiet")
    assert Store(club_dir).load().members[0].name == "-X-"


def test_times_in_the_site_zone_and_json_in_utc(store: Store, club_dir: Path, tmp_path: Path) -> None:
    loaded = store.load()
    state = tmp_path / "state.sqlite3"
    conn = db.connect(state)
    with db.transaction(conn):
        hold(
            conn,
            loaded,
            loaded.lists["youth"],
            sender="x@example.org",
            author="x@example.org",
            subject="Hi",
            reason="moderated",
            content=b"Subject: Hi\r\n\r\nhi\r\n",
            now=datetime(2026, 12, 1, 17, 0, tzinfo=UTC).timestamp(),
        )
    conn.close()
    listing = run(club_dir, "held", "ls", state=state)
    assert "2026-12-01 18:00:00 +0100" in listing
    (row,) = json.loads(run(club_dir, "held", "ls", "--json", state=state))
    assert row["created"] == "2026-12-01T17:00:00+00:00"
