"""The parsed registry kept in var/: used while members.toml is the same file, never after."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from clublist.actions import Actor
from clublist.actions.members import MemberChanges, member_add, member_remove, member_set
from clublist.club import cache
from clublist.club import store as store_module
from clublist.club.model import Member
from clublist.club.store import MEMBERS_FILE, Store, parse_members
from clublist.errors import ClublistError

ADMIN = Actor.shell()


@pytest.fixture
def cached(store: Store, tmp_path: Path) -> Store:
    return Store(store.directory, cache_dir=tmp_path / "var")


def parsed(store: Store) -> list[dict[str, object]]:
    path = store.path(MEMBERS_FILE)
    return [m.to_toml() for m in parse_members(path, path.read_text())]


def loaded(store: Store) -> list[dict[str, object]]:
    return [m.to_toml() for m in store.load().members]


def test_changes_keep_the_cache_equal_to_the_file(cached: Store) -> None:
    for n in range(5):
        member_add(cached, ADMIN, f"m{n}@example.org", f"M {n}", ("youth",))
    member_remove(cached, ADMIN, "m2@example.org")
    member_set(cached, ADMIN, "m3@example.org", MemberChanges(name="Renamed"))
    assert (cached.cache_dir / cache.CACHE_FILE).exists()
    assert loaded(cached) == parsed(cached)
    assert [m["email"] for m in loaded(cached)] == [f"m{n}@example.org" for n in (0, 1, 3, 4)]
    assert cached.load().member("m3@example.org").name == "Renamed"


def test_a_hand_edit_of_the_same_size_is_read_not_the_cache(cached: Store) -> None:
    member_add(cached, ADMIN, "anna@example.org", "Anna", ("youth",))
    cached.load()  # the cache now holds Anna
    path = cached.path(MEMBERS_FILE)
    text = path.read_text()
    stat = path.stat()
    # Same length, same modification time, written in place: only the change time tells.
    path.write_text(text.replace('"Anna"', '"Arno"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert cached.load().member("anna@example.org").name == "Arno"


def test_a_damaged_or_foreign_cache_is_passed_over(cached: Store) -> None:
    member_add(cached, ADMIN, "anna@example.org", "Anna", ("youth",))
    cache_file = cached.cache_dir / cache.CACHE_FILE
    for damage in (b"", b"\x00garbage", cache_file.read_bytes()[:-7]):
        cache_file.write_bytes(damage)
        assert loaded(cached) == parsed(cached)


def test_the_cache_is_what_a_reader_gets_while_the_file_is_unchanged(cached: Store) -> None:
    """Proof the cache is read at all: a record planted in it shows while the file stays the same."""
    member_add(cached, ADMIN, "anna@example.org", "Anna", ("youth",))
    path = cached.path(MEMBERS_FILE)
    members = cached.load().members
    planted = [type(members[0])(email="planted@example.org", name="From the cache")]
    cache.write(cached.cache_dir, cache.identity(path.stat()), planted)
    assert [m.email for m in cached.load().members] == ["planted@example.org"]
    path.write_text(path.read_text())  # any write: the file is read again
    assert [m.email for m in cached.load().members] == ["anna@example.org"]


def test_every_field_survives_the_cache(cached: Store) -> None:
    everything = Member(
        email="Anna.Berg@Example.org",
        name="Anna Berg",
        lists=("youth", "board"),
        aliases=("anna@home.example",),
        role="admin",
        delivery="disabled",
        disabled_reason="bounces: 5.1.1",
        daily_limit=3,
        moderated=True,
        digest=("board",),
    )
    plain = Member(email="bo@example.org", lists=("youth", "board"))
    source = cache.identity(cached.path(MEMBERS_FILE).stat())
    cache.write(cached.cache_dir, source, [everything, plain])
    registry = cache.read_registry(cached.cache_dir, source)
    assert registry is not None
    read = list(registry.members)
    assert read == [everything, plain]
    # Every field differs from its default in the first record, so none can be lost unseen.
    assert all(getattr(read[0], f.name) != f.default for f in dataclasses.fields(Member) if f.name != "email")
    assert [m.key for m in read] == ["anna.berg@example.org", "bo@example.org"]
    assert read[0].lists is read[1].lists  # one tuple for the same lists, as parsing shares them
    assert not hasattr(read[0], "__dict__")


def test_a_registry_read_in_pieces_is_the_file_read_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A [[member]] line inside a multi-line string is not a place to cut the file."""
    monkeypatch.setattr(store_module, "_PIECE", 2)
    blocks = [f'[[member]]\nemail = "m{n}@example.org"\nlists = ["youth"]\n' for n in range(7)]
    blocks[3] += 'disabled_reason = """bounced\n[[member]]\nemail = "x@example.org"\n"""\n'
    text = "# members\n" + "\n".join(blocks)
    path = tmp_path / MEMBERS_FILE
    members = parse_members(path, text)
    assert [m.email for m in members] == [f"m{n}@example.org" for n in range(7)]
    assert members[3].disabled_reason == 'bounced\n[[member]]\nemail = "x@example.org"\n'
    assert members[0].lists is members[6].lists


def test_a_wrong_record_far_into_the_file_is_reported_with_its_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(store_module, "_PIECE", 2)
    blocks = [f'[[member]]\nemail = "m{n}@example.org"\n' for n in range(7)]
    blocks[5] = '[[member]]\nemail = "not an address"\n'
    text = "\n".join(blocks)
    with pytest.raises(ClublistError, match=rf"{MEMBERS_FILE}:16: email 'not an address'"):
        parse_members(tmp_path / MEMBERS_FILE, text)
