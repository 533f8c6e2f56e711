"""lists.d: validation, comments kept, atomic and locked writes, rights in the actions."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.lists import list_create, list_set
from clublist.actions.members import (
    MemberChanges,
    member_add,
    member_join,
    member_leave,
    member_ls,
    member_remove,
    member_set,
)
from clublist.club.model import Member
from clublist.club.store import Store, render_member
from clublist.errors import ClublistError, PermissionDenied


def test_comment_in_members_survives_add_and_remove(store: Store, club_dir: Path) -> None:
    admin = Actor.shell()
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    path = club_dir / "members.toml"
    path.write_text(path.read_text() + "\n# Bob pays by cash, ask Tom.\n")
    member_add(store, admin, "bob@example.org", "Bob", ("youth",))
    member_remove(store, admin, ["anna@example.org"])
    member_set(store, admin, "bob@example.org", MemberChanges(name="Bob B"))
    text = path.read_text()
    assert "# Bob pays by cash, ask Tom." in text
    assert "# The club's members" in text
    assert "anna@example.org" not in text
    assert [m.name for m in store.load().members] == ["Bob B"]


def test_addresses_compare_case_insensitively_and_keep_their_spelling(store: Store) -> None:
    admin = Actor.shell()
    member_add(store, admin, "Anna.Smith@Example.org", lists=("youth",))
    with pytest.raises(ClublistError, match="already a member"):
        member_add(store, admin, "anna.smith@example.org")
    club = store.load()
    assert club.member("ANNA.SMITH@example.ORG").email == "Anna.Smith@Example.org"


def test_alias_finds_its_member_and_cannot_be_reused(store: Store) -> None:
    admin = Actor.shell()
    member_add(store, admin, "anna@example.org", aliases=("anna@work.example",))
    assert store.load().member("Anna@Work.example").email == "anna@example.org"
    with pytest.raises(ClublistError, match="already a member"):
        member_add(store, admin, "anna@work.example")


def test_unknown_key_in_hand_edited_list_file_names_file_and_line(store: Store, club_dir: Path) -> None:
    (club_dir / "youth.toml").write_text('description = "x"\ncolour = "red"\n')
    with pytest.raises(ClublistError, match=r"youth\.toml:2: unknown list setting 'colour'"):
        store.load()


def test_duplicate_member_in_file_is_reported_with_line(store: Store, club_dir: Path) -> None:
    path = club_dir / "members.toml"
    path.write_text('[[member]]\nemail = "a@example.org"\n\n[[member]]\nemail = "A@example.org"\n')
    with pytest.raises(ClublistError, match=r"members\.toml:4: A@example.org is already used"):
        store.load()


def test_joining_a_missing_list_changes_nothing(store: Store, club_dir: Path) -> None:
    member_add(store, Actor.shell(), "anna@example.org")
    before = (club_dir / "members.toml").read_text()
    with pytest.raises(ClublistError, match="no list named 'nolist'"):
        member_join(store, Actor.shell(), "anna@example.org", "nolist")
    assert (club_dir / "members.toml").read_text() == before


def test_members_act_on_themselves_only(store: Store) -> None:
    admin = Actor.shell()
    list_create(store, admin, "trainer", owners=["tom@example.org"], self_subscribe=False)
    member_add(store, admin, "anna@example.org", lists=("youth",))
    member_add(store, admin, "bob@example.org", lists=("youth",))
    member_add(store, admin, "tom@example.org", lists=("trainer",))
    club = store.load()
    anna = Actor.for_sender(club, "anna@example.org")
    tom = Actor.for_sender(club, "tom@example.org")
    with pytest.raises(PermissionDenied):
        member_leave(store, anna, "bob@example.org", "youth")
    with pytest.raises(PermissionDenied, match="closed"):
        member_join(store, anna, "anna@example.org", "trainer")
    with pytest.raises(PermissionDenied):
        member_ls(store, anna)
    assert [m.email for m in member_ls(store, anna, "youth")] == [
        "anna@example.org",
        "bob@example.org",
    ]
    member_leave(store, anna, "anna@example.org", "youth")
    member_join(store, tom, "bob@example.org", "trainer")
    with pytest.raises(PermissionDenied):
        list_set(store, tom, "trainer", "owners", "anna@example.org")
    with pytest.raises(PermissionDenied):
        member_set(store, anna, "anna@example.org", MemberChanges(role="admin"))
    assert store.load().member("bob@example.org").lists == ("youth", "trainer")


def test_write_that_would_break_the_club_is_refused(store: Store, club_dir: Path) -> None:
    with pytest.raises(ClublistError):
        config_set(store, Actor.shell(), "site.timezone", "Mars/Olympus")
    assert store.load().site.site.timezone == "Europe/Berlin"


def test_an_alias_cannot_borrow_an_owners_or_the_administrators_rights(store: Store) -> None:
    admin = Actor.shell()
    list_create(store, admin, "news", owners=["carol@example.org"], posting="owners")
    member_add(store, admin, "anna@example.org", lists=("youth",))
    anna = Actor.for_sender(store.load(), "anna@example.org")
    for address in ("carol@example.org", "admin@myclub.org"):
        with pytest.raises(ClublistError, match=r"owns news|administrator's address"):
            member_set(store, anna, "anna@example.org", MemberChanges(add_aliases=(address,)))
    with pytest.raises(ClublistError, match="owns news"):
        member_add(store, admin, "bob@example.org", aliases=("Carol@Example.org",))
    member_add(store, admin, "carol@example.org", lists=("news",))  # the owner herself may join
    assert store.load().member("anna@example.org").aliases == ()


@pytest.mark.parametrize(
    "member",
    [
        Member(email="anna@example.org"),
        Member(email="anna@example.org", name="Anna Berg", lists=("youth", "trainer")),
        Member(
            email="jörg@bücher.example",
            name='Jörg "J" Müller \\ Sohn',
            lists=("youth",),
            aliases=("joerg@work.example",),
            role="trainer",
            delivery="disabled",
            disabled_reason="bounces",
            daily_limit=0,
            moderated=True,
            digest=("youth",),
        ),
        Member(email="o'brien@example.ie", name="Tab\there, line\nbreak"),
    ],
)
def test_a_new_member_block_is_written_as_a_tomlkit_document_would_write_it(member: Member) -> None:
    table = tomlkit.table()
    for key, value in member.to_toml().items():
        table[key] = value
    array = tomlkit.aot()
    array.append(table)
    document = tomlkit.document()
    document["member"] = array
    assert render_member(member) == "\n" + tomlkit.dumps(document)
    assert tomlkit.parse(render_member(member))["member"][0].unwrap() == member.to_toml()
