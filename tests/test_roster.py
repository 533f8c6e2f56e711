"""member sync, import --update, export and bulk remove, through the CLI (CliRunner) on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from clublist.actions import Actor
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club.store import MEMBERS_FILE, Store


@pytest.fixture
def club(store: Store) -> Store:
    list_create(store, Actor.shell(), "trainer")
    admin = Actor.shell()
    for email, name, lists in [
        ("anna@example.org", "Anna", ("youth",)),
        ("ben@example.org", "Ben", ("youth", "trainer")),
        ("carl@example.org", "Carl", ("trainer",)),
        ("dora@example.org", "Dora", ("youth",)),
    ]:
        member_add(store, admin, email, name, lists)
    path = store.path(MEMBERS_FILE)
    path.write_text("# kept: the club's registry\n" + path.read_text("utf-8"), "utf-8")
    return store


def run(store: Store, *args: str, input: str | None = None, code: int = 0) -> Result:
    state = store.directory.parent / "var" / "clublist.sqlite3"
    result = CliRunner().invoke(
        main, ["--dir", str(store.directory), "--state", str(state), *args], input=input
    )
    assert result.exit_code == code, result.output
    return result


ROSTER = (
    "email,name,lists\n"
    "anna@example.org,Anna,youth\n"
    "ben@example.org,Benjamin,youth trainer\n"  # renamed
    "dora@example.org,Dora,youth\n"
    "eva@example.org,Eva,youth\n"
    "finn@example.org,Finn,trainer\n"
    "gabi@bücher.example,Gabi,youth;trainer\n"
)  # with hugo (added by each test), carl and hugo are the two to remove


def test_sync_dry_run_prints_the_plan_and_changes_nothing(club: Store, tmp_path: Path) -> None:
    member_add(club, Actor.shell(), "hugo@example.org", "Hugo", ("youth",))
    before = club.path(MEMBERS_FILE).read_text("utf-8")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, "utf-8")
    out = run(club, "member", "sync", str(roster), "--dry-run").output
    assert out.splitlines() == [
        "+ eva@example.org (youth)",
        "+ finn@example.org (trainer)",
        "+ gabi@bücher.example (youth trainer)",
        "- carl@example.org",
        "- hugo@example.org",
        "~ ben@example.org: name: 'Ben' -> 'Benjamin'",
        "would add 3, remove 2, update 1 members",
    ]
    assert club.path(MEMBERS_FILE).read_text("utf-8") == before


def test_sync_makes_the_registry_match_and_export_round_trips(club: Store, tmp_path: Path) -> None:
    member_add(club, Actor.shell(), "hugo@example.org", "Hugo", ("youth",))
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, "utf-8")
    out = run(club, "member", "sync", str(roster), "--yes", "--quiet").output
    assert out.splitlines()[-1] == "added 3, removed 2, updated 1 members"
    text = club.path(MEMBERS_FILE).read_text("utf-8")
    assert text.startswith("# kept: the club's registry\n")
    members = {m.email: (m.name, m.lists) for m in club.load().members}
    assert members == {
        "anna@example.org": ("Anna", ("youth",)),
        "ben@example.org": ("Benjamin", ("youth", "trainer")),
        "dora@example.org": ("Dora", ("youth",)),
        "eva@example.org": ("Eva", ("youth",)),
        "finn@example.org": ("Finn", ("trainer",)),
        "gabi@bücher.example": ("Gabi", ("youth", "trainer")),
    }
    # Every field survives export -> sync: aliases, role, delivery, limits, moderation.
    run(club, "member", "set", "anna@example.org", "--add-alias", "anna@home.example", "--moderated")
    run(club, "member", "set", "ben@example.org", "--role", "admin", "--daily-limit", "5")
    run(club, "member", "set", "dora@example.org", "--disable", "--reason", "on holiday")
    exported = tmp_path / "export.csv"
    run(club, "member", "export", "-o", str(exported))
    before = club.path(MEMBERS_FILE).read_text("utf-8")
    out = run(club, "member", "sync", str(exported), "--dry-run").output
    assert out == "would add 0, remove 0, update 0 members\n"
    run(club, "member", "sync", str(exported), "--yes")
    assert club.path(MEMBERS_FILE).read_text("utf-8") == before
    # ... and into an empty club through import, the same registry.
    fresh = tmp_path / "fresh" / "lists.d"
    fresh.mkdir(parents=True)
    for name in ("club.toml", "youth.toml", "trainer.toml"):
        (fresh / name).write_text(club.path(name).read_text("utf-8"), "utf-8")
    run(Store(fresh), "member", "import", str(exported), "--quiet")
    assert Store(fresh).load().members == club.load().members


def test_sync_of_one_list_takes_the_others_off_it_only(club: Store, tmp_path: Path) -> None:
    roster = tmp_path / "youth.csv"
    roster.write_text("anna@example.org\ncarl@example.org\nzoe@example.org\n", "utf-8")
    out = run(club, "member", "sync", str(roster), "--list", "youth", "--yes", "--json").output
    assert json.loads(out) == {
        "dry_run": False,
        "added": ["zoe@example.org"],
        "removed": [],
        "updated": ["ben@example.org", "carl@example.org", "dora@example.org"],
    }
    club_now = club.load()
    assert [m.email for m in club_now.members_of("youth")] == [
        "anna@example.org",
        "carl@example.org",
        "zoe@example.org",
    ]
    assert club_now.member("dora@example.org") is not None


def test_sync_refuses_a_bad_file_with_line_numbers(club: Store, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("email,name,lists\nanna@example.org,Anna,youth\nx@123.4.5.6,X,\nbo b@x.org,B,nope\n")
    before = club.path(MEMBERS_FILE).read_text("utf-8")
    out = run(club, "member", "sync", str(roster), "--yes", code=1).output
    assert "line 3: address 'x@123.4.5.6' is not usable" in out
    assert "line 4:" in out
    assert club.path(MEMBERS_FILE).read_text("utf-8") == before


def test_import_update_replaces_names_and_lists(club: Store) -> None:
    csv = "email,name,lists\nben@example.org,Benjamin,trainer\n"
    out = run(club, "member", "import", "-", input=csv, code=0).output
    assert out.splitlines()[-1] == "added 0, removed 0, updated 0 members"
    out = run(club, "member", "import", "-", "--update", "--quiet", input=csv).output
    assert out.splitlines() == [
        "~ ben@example.org: name: 'Ben' -> 'Benjamin'; lists: 'youth trainer' -> 'trainer'",
        "added 0, removed 0, updated 1 members",
    ]
    ben = club.load().member("ben@example.org")
    assert ben is not None and ben.name == "Benjamin" and ben.lists == ("trainer",)


def test_remove_several_asks_and_is_all_or_nothing(club: Store, tmp_path: Path) -> None:
    listing = tmp_path / "gone.txt"
    listing.write_text("# leaving this season\ncarl@example.org\n", "utf-8")
    out = run(club, "member", "remove", "anna@example.org", "nobody@example.org", "--yes", code=1).output
    assert "nobody@example.org is not a member" in out
    assert club.load().member("anna@example.org") is not None
    out = run(club, "member", "remove", "anna@example.org", "--from-file", str(listing), "--dry-run").output
    assert out == "would remove 2 members: anna@example.org, carl@example.org\n"
    assert len(club.load().members) == 4
    out = run(club, "member", "remove", "anna@example.org", input="n\n", code=1).output
    assert "Remove 1 members: anna@example.org?" in out
    assert club.load().member("anna@example.org") is not None
    run(club, "member", "remove", "anna@example.org", "--from-file", str(listing), "--quiet", input="y\n")
    assert [m.email for m in club.load().members] == ["ben@example.org", "dora@example.org"]
    run(club, "member", "remove", "ben@example.org", "--list", "youth", "--yes", "--quiet")
    ben = club.load().member("ben@example.org")
    assert ben is not None and ben.lists == ("trainer",)


def test_ls_search_finds_address_alias_and_name_in_any_case(club: Store) -> None:
    run(club, "member", "set", "carl@example.org", "--add-alias", "trainer.carl@home.example")
    out = run(club, "member", "ls", "--search", "HOME", "--json").output
    assert [m["email"] for m in json.loads(out)] == ["carl@example.org"]
    out = run(club, "member", "ls", "--search", "an", "--list", "youth", "--json").output
    assert [m["email"] for m in json.loads(out)] == ["anna@example.org"]
