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

Most fields of most members hold their default (no aliases, delivery enabled, a key that
is the email): such a column is kept as the rows that differ, which makes the cache a
third of the objects to write and to read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import operator
import os
import sys
from collections.abc import Sequence
from itertools import compress
from pathlib import Path
from typing import Any

from clublist.club.model import Member
from clublist.club.registry import SLOTS, Registry

CACHE_FILE = "members.cache"
# Bumped when the meaning of a field changes without its name changing.
_FORMAT = 4
_LISTS = SLOTS.index("lists")
_EMAIL = SLOTS.index("email")
# What a column holds unless a row says otherwise: a field's default, the email for the key.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Member) if f.default is not dataclasses.MISSING}

Identity = tuple[int, int, int, int]


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read_registry(cache_dir: Path, source: Identity) -> Registry | None:
    """The cached registry of the members.toml whose identity is *source*, or None."""
    try:
        data = (cache_dir / CACHE_FILE).read_bytes()
        header, stored = marshal.loads(data)
        if header != (_FORMAT, SLOTS, source) or not isinstance(stored, list) or len(stored) != len(SLOTS):
            return None
        columns = _unpack(stored)
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError):
        return None
    return Registry.from_columns(columns)


def _unpack(stored: list[Any]) -> list[list[Any]]:
    """Columns in full from what :func:`_pack` kept; raises on anything it did not write."""
    count = len(stored[_EMAIL])
    columns: list[list[Any]] = []
    for name, column in zip(SLOTS, stored, strict=True):
        if isinstance(column, tuple):
            rows, values = column
            full = list(columns[_EMAIL]) if name == "_key" else [_DEFAULTS[name]] * count
            for row, value in zip(rows, values, strict=True):
                full[row] = value
            column = full
        if not isinstance(column, list) or len(column) != count:
            raise ValueError("not a column of the cache")
        columns.append(column)
    return columns


def _pack(columns: list[list[Any]]) -> list[Any]:
    """Each column, or the rows where it differs from its default and their values if few do."""
    emails = columns[_EMAIL]
    count = len(emails)
    stored: list[Any] = []
    for name, column in zip(SLOTS, columns, strict=True):
        # == and list.count compare at C speed: the look row by row is only for the few that differ.
        if name == "_key":
            base: list[Any] = emails
            differ = 0 if column == emails else sum(map(operator.ne, column, emails))
        elif name in _DEFAULTS:
            base = [_DEFAULTS[name]] * count
            differ = count - column.count(_DEFAULTS[name])
        else:
            differ = count
        if differ * 4 >= count:
            stored.append(column)
        elif differ == 0:
            stored.append(((), ()))
        else:
            rows = list(compress(range(count), map(operator.ne, column, base)))
            stored.append((rows, list(map(column.__getitem__, rows))))
    return stored


def write(cache_dir: Path, source: Identity, members: Registry | Sequence[Member]) -> None:
    """Keep *members* as the registry of the file with identity *source* (best effort).

    marshal keeps shared objects shared, so what the records share here (one interned string
    per list name, one tuple per combination of lists, a key that is the email) they share
    again when read.
    """
    import tempfile  # only writers need it: readers start faster without

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
                handle.write(marshal.dumps(((_FORMAT, SLOTS, source), _pack(columns))))
            os.replace(tmp, cache_dir / CACHE_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
