"""members.toml read once: the validated registry kept in var/, keyed by the file's identity.

Parsing and validating a 50,000-member registry takes seconds of tomllib; every CLI command
and every daemon reload needs it.  After a full parse the records are written with
:mod:`marshal` to ``var/members.cache``, one column per field, together with the identity of
the file they came from (inode, size, modification and change time in nanoseconds).  A
reader whose ``stat`` of members.toml gives the same identity takes the registry from the
cache; any write to the file (an editor, ``clublist``, ``git checkout``) changes its change
time, which no one can set back, so a stale cache is never used.  A change made by clublist
writes the cache anew from the columns it already has, without parsing the file again.  The
cache is only ever an optimisation: a missing, unreadable or foreign one means a full parse,
and it is written atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from clublist.club.model import Member
from clublist.club.registry import SLOTS, Registry

CACHE_FILE = "members.cache"
# Bumped when the meaning of a field changes without its name changing.
_FORMAT = 3
_LISTS = SLOTS.index("lists")

Identity = tuple[int, int, int, int]


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read_registry(cache_dir: Path, source: Identity) -> Registry | None:
    """The cached registry of the members.toml whose identity is *source*, or None."""
    try:
        data = (cache_dir / CACHE_FILE).read_bytes()
        header, columns = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if (
        header != (_FORMAT, SLOTS, source)
        or not isinstance(columns, list)
        or len(columns) != len(SLOTS)
        or not all(isinstance(column, list) for column in columns)
        or len({len(column) for column in columns}) != 1
    ):
        return None
    return Registry.from_columns(columns)


def read(cache_dir: Path, source: Identity) -> list[Member] | None:
    """The cached records of the members.toml whose identity is *source*, or None."""
    registry = read_registry(cache_dir, source)
    return None if registry is None else list(registry.members)


def write(cache_dir: Path, source: Identity, members: Registry | Sequence[Member]) -> None:
    """Keep *members* as the registry of the file with identity *source* (best effort).

    marshal keeps shared objects shared, so what the records share here (one interned string
    per list name, one tuple per combination of lists, a key that is the email) they share
    again when read.
    """
    registry = members if isinstance(members, Registry) else Registry(members)
    columns = list(registry.columns())
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    for names in set(columns[_LISTS]):
        shared[names] = tuple(sys.intern(name) for name in names)
    columns[_LISTS] = list(map(shared.__getitem__, columns[_LISTS]))
    with contextlib.suppress(OSError, ValueError):  # ValueError: a field marshal cannot keep
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(marshal.dumps(((_FORMAT, SLOTS, source), columns)))
            os.replace(tmp, cache_dir / CACHE_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
