"""members.toml read once: the validated registry kept in var/, keyed by the file's identity.

Parsing and validating a 50,000-member registry takes seconds of tomllib; every CLI command
and every daemon reload needs it.  After a full parse the records are written with
:mod:`marshal` to ``var/members.cache`` together with the identity of the file they came
from (inode, size, modification and change time in nanoseconds).  A reader whose
``stat`` of members.toml gives the same identity takes the records from the cache; any
write to the file (an editor, ``clublist``, ``git checkout``) changes its change time,
which no one can set back, so a stale cache is never used.  The cache is only ever an
optimisation: a missing, unreadable or foreign one means a full parse, and it is written
atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import os
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path

from clublist.club.model import Member

CACHE_FILE = "members.cache"
_FIELDS = tuple(f.name for f in dataclasses.fields(Member))
# The records' slots, each a column of the cache: the fields and the comparison key.
_SLOTS = (*_FIELDS, "_key")
_SETTERS = tuple(getattr(Member, name).__set__ for name in _SLOTS)
# Bumped when the meaning of a field changes without its name changing.
_FORMAT = 3

Identity = tuple[int, int, int, int]


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read(cache_dir: Path, source: Identity) -> list[Member] | None:
    """The cached records of the members.toml whose identity is *source*, or None."""
    try:
        data = (cache_dir / CACHE_FILE).read_bytes()
        header, columns = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if header != (_FORMAT, _SLOTS, source) or len({len(column) for column in columns}) != 1:
        return None
    count = len(columns[0])
    # The records were validated when the cache was written: fill their slots column by
    # column, at C speed (a slot's descriptor sets it past the frozen dataclass's guard).
    members: list[Member] = list(map(object.__new__, repeat(Member, count)))
    for setter, column in zip(_SETTERS, columns, strict=True):
        deque(map(setter, members, column), maxlen=0)
    return members


def write(cache_dir: Path, source: Identity, members: Sequence[Member]) -> None:
    """Keep *members* as the records of the file with identity *source* (best effort).

    marshal keeps shared objects shared, so what the records share here (one interned string
    per list name, one tuple per combination of lists, a key that is the email) they share
    again when read.
    """
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    for member in members:
        if member.lists not in shared:
            shared[member.lists] = tuple(sys.intern(name) for name in member.lists)
    columns = [
        [shared[m.lists] for m in members] if name == "lists" else [getattr(m, name) for m in members]
        for name in _FIELDS
    ]
    columns.append([m.key for m in members])
    with contextlib.suppress(OSError, ValueError):  # ValueError: a field marshal cannot keep
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(marshal.dumps(((_FORMAT, _SLOTS, source), columns)))
            os.replace(tmp, cache_dir / CACHE_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
