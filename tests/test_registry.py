"""The registry read from the cache as columns answers as the parsed records do."""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clublist.actions import Actor
from clublist.actions.lists import list_set
from clublist.actions.members import MemberChanges, member_add, member_ls, member_set
from clublist.cli import render
from clublist.cli.app import App
from clublist.club import cache
from clublist.club.model import MEMBER_KEYS, Member
from clublist.club.registry import Registry
from clublist.club.store import MEMBERS_FILE, MembersChange, Store

ADMIN = Actor.shell()

MEMBERS = [
    Member("Anna.Berg@Example.org", "Anna Berg", ("youth", "board"), ("anna@home.example",), role="admin"),
    Member("bo@example.org", 'Bo "Quoted" \\ Back', ("youth",), delivery="disabled", disabled_reason="x\ty"),
    Member("carl@bücher.example", "Çarl Ünïcode", ("board",), daily_limit=0, moderated=True),
    Member("dora@example.org", "50% off", ("youth", "board"), ("D@Other.example", "d2@other.example")),
    Member("eve@example.org", lists=("youth",), daily_limit=7, digest=("youth",)),
]


def from_cache(tmp_path: Path, members: list[Member]) -> Registry:
    source = (1, 2, 3, 4)
    cache.write(tmp_path, source, members)
    registry = cache.read_registry(tmp_path, source)
    assert registry is not None
    return registry


def test_look_ups_in_the_columns_find_what_the_records_find(tmp_path: Path) -> None:
    columns, records = from_cache(tmp_path, MEMBERS), Registry(MEMBERS)
    addresses = [
        "anna.berg@example.org",
        "ANNA@HOME.EXAMPLE",
        "carl@xn--bcher-kva.example",
        "d@other.example",
        "D2@other.example",
        "nobody@example.org",
        "eve@example.org",
        "bo@example.org",
    ]
    for address in addresses:  # the first look-ups search the columns ...
        assert columns.find(address) == records.find(address)
    assert columns._index is None
    for address in addresses:  # ... and later ones build the index
        assert columns.find(address) == records.find(address)
    assert columns._index is not None
    assert columns.find("ANNA@home.example").email == "Anna.Berg@Example.org"
    assert columns.find("nobody@example.org") is None


def test_records_read_from_columns(tmp_path: Path) -> None:
    columns = from_cache(tmp_path, MEMBERS)
    assert len(columns) == len(MEMBERS)
    assert columns.records([3, 1]) == [MEMBERS[3], MEMBERS[1]]
    assert columns.record(4) == MEMBERS[4]
    assert columns.column("_key")[0] == "anna.berg@example.org"
    assert columns.members == tuple(MEMBERS)


def test_a_column_kept_as_the_few_rows_that_differ_comes_back_whole(tmp_path: Path) -> None:
    members = [Member(f"m{n}@example.org", f"M {n}", ("youth",)) for n in range(40)]
    members[3] = Member("m3@example.org", lists=("youth",), aliases=("three@home.example",))
    members[7] = Member("m7@example.org", delivery="disabled", disabled_reason="bounces: 5.1.1")
    members[11] = Member("M11@Example.org", daily_limit=0, moderated=True, digest=("youth",), role="admin")
    registry = from_cache(tmp_path, members)
    assert registry.members == tuple(members)
    assert [m.key for m in registry.members] == [m.key for m in members]
    assert registry.find("THREE@home.example") == members[3]
    packed = cache._pack(Registry(members).columns())
    assert sum(isinstance(column, tuple) for column in packed) == 8  # all but email, name and lists


@pytest.mark.parametrize(
    "added, replaced, removed",
    [
        ([Member("new@example.org", lists=("youth",))], {}, set()),
        ([], {"bo@example.org": Member("bo@example.org", "Bo", ("board",))}, set()),
        ([], {}, {"anna.berg@example.org", "eve@example.org"}),
        (
            [Member("new@example.org")],
            {"dora@example.org": Member("dora@example.org", lists=())},
            {"bo@example.org"},
        ),
    ],
)
def test_an_edit_of_the_columns_is_the_edit_of_the_records(
    tmp_path: Path, added: list[Member], replaced: dict[str, Member], removed: set[str]
) -> None:
    edited = from_cache(tmp_path, MEMBERS).edited(added, replaced, removed)
    expected = [replaced.get(m.key, m) for m in MEMBERS if m.key not in removed] + added
    assert edited.members == tuple(expected)
    assert Registry(MEMBERS).edited(added, replaced, removed).members == tuple(expected)
    assert [m.key for m in edited.members] == [m.key for m in expected]


@pytest.fixture
def cached(store: Store, tmp_path: Path) -> Store:
    return Store(store.directory, cache_dir=tmp_path / "var")


def test_the_club_after_a_change_is_the_club_read_again(cached: Store) -> None:
    member_add(cached, ADMIN, "anna@example.org", "Anna", ("youth",), aliases=("a@home.example",))
    edit = cached.change_members(lambda club: MembersChange(added=[Member("bo@example.org")]))
    assert edit.club is not None
    again = cached.load()
    assert edit.club.members == again.members
    assert edit.club.warnings == again.warnings
    assert edit.club.member("A@HOME.example") == again.member("a@home.example")


def test_advice_from_the_cache_is_the_advice_from_the_file(cached: Store) -> None:
    member_add(cached, ADMIN, "owner@example.org", "Owner", ("youth",))
    list_set(cached, ADMIN, "youth", "owners", ["owner@example.org"])
    member_set(cached, ADMIN, "owner@example.org", MemberChanges(enable=False))
    path = cached.path(MEMBERS_FILE)
    path.write_text(path.read_text() + '\n[[member]]\nemail = "stray@example.org"\nlists = ["gone"]\n')
    parsed = cached.load()  # the file changed: parsed, and cached again
    from_columns = cached.load()
    assert not from_columns.registry._members  # read as columns, no record built
    texts = [advice.detail for advice in from_columns.warnings]
    assert texts == [advice.detail for advice in parsed.warnings]
    assert any("stray@example.org is on list 'gone'" in text for text in texts)
    assert any("owner owner@example.org has delivery disabled" in text for text in texts)


def test_a_listing_is_read_from_the_columns(cached: Store) -> None:
    member_add(cached, ADMIN, "anna@example.org", "Anna Berg", ("youth",), aliases=("berg@home.example",))
    member_add(cached, ADMIN, "bo@example.org", "Bo", ())
    member_add(cached, ADMIN, "Carl.Berg@Example.org", "Carl", ("youth",))
    everyone = member_ls(cached, ADMIN)
    youth_bergs = member_ls(cached, ADMIN, "youth", "BERG")
    assert youth_bergs._members is None  # read from the columns: no record built to answer
    assert youth_bergs.column("name") == ["Anna Berg", "Carl"]
    assert [m.email for m in everyone] == ["anna@example.org", "bo@example.org", "Carl.Berg@Example.org"]
    assert [m.email for m in youth_bergs] == ["anna@example.org", "Carl.Berg@Example.org"]
    assert [m.email for m in member_ls(cached, ADMIN, search="home.example")] == ["anna@example.org"]
    assert list(Registry(everyone).select([2, 0])) == [everyone.record(2), everyone.record(0)]


@dataclass(frozen=True)
class Nested:
    when: datetime
    tags: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


def test_columns_print_as_json_out_prints_their_records(tmp_path: Path) -> None:
    app = App(tmp_path, tmp_path / "state.sqlite3")
    nested = [
        Nested(datetime(2026, 12, 1, 18, 0, tzinfo=UTC), ("a", "%s"), {"k": [1, True, None]}),
        Nested(datetime(2026, 12, 2, tzinfo=UTC)),
    ]
    for records in (MEMBERS, [MEMBERS[0]], [MEMBERS[3]], [MEMBERS[3]] * 3, [], nested):
        names = [f.name for f in dataclasses.fields(Nested if records is nested else Member)]
        slow, fast = io.StringIO(), io.StringIO()
        app.out = slow
        render.json_out(app, list(records))
        app.out = fast
        render.json_columns(app, names, [[getattr(r, name) for r in records] for name in names])
        assert fast.getvalue() == slow.getvalue()
    app.out = fast = io.StringIO()
    registry = from_cache(tmp_path, MEMBERS)
    render.json_columns(app, MEMBER_KEYS, [registry.column(name) for name in MEMBER_KEYS])
    expected = json.dumps([render.to_plain(m) for m in MEMBERS], indent=2, ensure_ascii=False)
    assert fast.getvalue() == expected + "\n"
