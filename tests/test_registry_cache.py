"""The parsed registry kept in var/: used while members.toml is the same file, never after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clublist.actions import Actor
from clublist.actions.members import MemberChanges, member_add, member_remove, member_set
from clublist.club import cache
from clublist.club.store import MEMBERS_FILE, Store, parse_members

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
